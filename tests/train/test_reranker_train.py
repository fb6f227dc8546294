"""`mmrag train-reranker` end to end on a SciFact slice: a fixed number of steps, the same metrics
from the same command and seed, progress on stderr, and the validation table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mmrag.cli import main
from mmrag.errors import ConfigError
from mmrag.rerank.cross_encoder import CrossEncoderReranker
from mmrag.train.reranker import RerankTrainConfig, distill_loss, keep_layers, train_reranker

pytestmark = pytest.mark.integration
TINY = RerankTrainConfig(
    steps=3, batch_groups=2, negatives=2, depth=8, titles=4, max_length=48, queries=6, val_queries=6, docs=40
)


def test_two_runs_give_the_same_checkpoint_metrics(tmp_path: Path, data_dir: Path) -> None:
    a = train_reranker(data_dir, tmp_path / "a", TINY, cache=tmp_path / "cache")
    b = train_reranker(data_dir, tmp_path / "b", TINY, cache=tmp_path / "cache")
    assert a.fit.steps == b.fit.steps == 3  # fixed steps, not a time budget
    assert (a.fit.loss_first10, a.fit.loss_last10) == (b.fit.loss_first10, b.fit.loss_last10)
    assert a.val.to_dict() == b.val.to_dict()
    # the same weights, byte for byte: the mined pools do not follow the stores' BM25 rounding noise
    weights = "model.safetensors"
    assert (tmp_path / "a" / weights).read_bytes() == (tmp_path / "b" / weights).read_bytes()
    saved = json.loads((tmp_path / "a" / "mmrag_rerank.json").read_text())
    assert saved["val"] == json.loads(json.dumps(a.val.to_dict())) and saved["train"]["steps"] == 3


def test_cli_shows_progress_and_prints_the_validation_table(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train-reranker", "--out", str(tmp_path / "rr"), "--data", str(data_dir), "--steps", "2"]
    argv += [
        "--docs",
        "30",
        "--limit-queries",
        "4",
        "--limit-val",
        "4",
        "--titles",
        "3",
        "--max-length",
        "48",
        "--layers",
        "4",
        "--train-precision",
        "bf16",
    ]
    argv += ["--batch-groups", "2", "--negatives", "2", "--depth", "8", "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    for bar in ("index corpus", "mine negatives", "train reranker", "validate"):
        assert bar in err, f"no {bar!r} progress bar on stderr"
    assert "nDCG@10, val fold" in out and "rerank alone" in out and "fused (w=" in out
    assert "fused, cross-fitted" in out  # 4 val queries: two halves of two
    assert f"mmrag model-set --reranker {tmp_path / 'rr'}" in out
    train = json.loads((tmp_path / "rr" / "mmrag_rerank.json").read_text())["train"]
    assert train["train_precision"] == "bf16"  # recorded with the run; the weights stay fp32:
    saved = CrossEncoderReranker(tmp_path / "rr", precision="fp32")  # loads as the shallower model
    assert saved.model.config.num_hidden_layers == 4 and len(saved.model.bert.encoder.layer) == 4


def test_keep_layers_cuts_the_base_and_checks_the_count() -> None:
    rr = CrossEncoderReranker(None, max_length=32, precision="fp32")
    full = rr.score("what is bm25", ["bm25 ranks documents by term frequency"])
    with pytest.raises(ConfigError, match="layers must be >= 1"):
        RerankTrainConfig(layers=0)
    with pytest.raises(ConfigError, match="between 1 and 6"):
        keep_layers(rr.model, 7)
    keep_layers(rr.model, 2)
    assert rr.model.config.num_hidden_layers == 2 and len(rr.model.bert.encoder.layer) == 2
    cut = rr.score("what is bm25", ["bm25 ranks documents by term frequency"])
    assert cut.shape == full.shape and cut[0] != full[0]  # the top four layers no longer run


def test_distill_loss_is_zero_only_when_the_orderings_agree_in_softmax() -> None:
    teacher = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert float(distill_loss(teacher + 5.0, teacher)) == pytest.approx(0.0, abs=1e-6)  # shift-free
    assert float(distill_loss(teacher.flip(-1), teacher)) > 0.5
    assert float(distill_loss(teacher * 0.5, teacher)) > 0.0  # a flatter softmax is not the same


def test_a_shallower_student_learns_from_a_trained_teacher(tmp_path: Path, data_dir: Path) -> None:
    train_reranker(data_dir, tmp_path / "teacher", TINY, cache=tmp_path / "cache")
    with pytest.raises(ConfigError, match="trained reranker"):
        train_reranker(data_dir, tmp_path / "x", replace(TINY, teacher="minilm"), cache=tmp_path / "cache")
    # one step each: the same start, so the first loss differs by the KL term alone
    cfg = replace(TINY, model=str(tmp_path / "teacher"), layers=5, teacher=str(tmp_path / "teacher"), steps=1)
    student = train_reranker(data_dir, tmp_path / "student", cfg, cache=tmp_path / "cache")
    plain = train_reranker(data_dir, tmp_path / "plain", replace(cfg, distill=0.0), cache=tmp_path / "cache")
    assert student.fit.loss_first10 > plain.fit.loss_first10
    saved = json.loads((tmp_path / "student" / "mmrag_rerank.json").read_text())
    assert saved["train"]["teacher"] == str(tmp_path / "teacher") and saved["train"]["layers"] == 5
    assert CrossEncoderReranker(tmp_path / "student", precision="fp32").model.config.num_hidden_layers == 5


def test_a_soup_is_the_average_of_its_members_each_run_alone(tmp_path: Path, data_dir: Path) -> None:
    cache = tmp_path / "cache"
    runs = [train_reranker(data_dir, tmp_path / f"s{s}", replace(TINY, seed=s), cache=cache) for s in (3, 4)]
    soup = train_reranker(data_dir, tmp_path / "soup", replace(TINY, seed=3, soup=2), cache=cache)
    # each member is the plain run of its seed: same loss, same figures on the val fold
    assert [m.seed for m in soup.members] == [3, 4]
    for member, run in zip(soup.members, runs, strict=True):
        assert member.fit.loss_last10 == run.fit.loss_last10 and member.val.to_dict() == run.val.to_dict()
    assert soup.fit.groups_seen == 2 * runs[0].fit.groups_seen
    models = [CrossEncoderReranker(tmp_path / name, precision="fp32").model for name in ("s3", "s4", "soup")]
    states = [m.state_dict() for m in models]
    trained = [k for k, v in states[0].items() if v.is_floating_point() and not torch.equal(v, states[1][k])]
    assert trained, "the two seeds trained to the same weights: nothing to average"
    for k in trained:
        torch.testing.assert_close(states[2][k], (states[0][k] + states[1][k]) / 2)
    saved = json.loads((tmp_path / "soup" / "mmrag_rerank.json").read_text())
    assert saved["train"]["soup"] == 2 and [m["seed"] for m in saved["soup"]] == [3, 4]
    assert "a soup of 2 members" in soup.to_text() and "  seed 4: rerank alone" in soup.to_text()
    with pytest.raises(ConfigError, match="soup must be >= 1"):
        RerankTrainConfig(soup=0)
