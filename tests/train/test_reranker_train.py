"""`mmrag train-reranker` end to end on a SciFact slice: a fixed number of steps, the same metrics
from the same command and seed, progress on stderr, and the validation table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrag.cli import main
from mmrag.train.reranker import RerankTrainConfig, train_reranker

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
    ]
    argv += ["--batch-groups", "2", "--negatives", "2", "--depth", "8", "--cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    for bar in ("index corpus", "mine negatives", "train reranker", "validate"):
        assert bar in err, f"no {bar!r} progress bar on stderr"
    assert "nDCG@10, val fold" in out and "rerank alone" in out and "fused (w=" in out
    assert "fused, cross-fitted" in out  # 4 val queries: two halves of two
    assert f"mmrag model-set --reranker {tmp_path / 'rr'}" in out
