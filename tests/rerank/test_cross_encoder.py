"""CrossEncoderReranker on real MiniLM weights (offline, untrained head) and on tiny random configs.

The head is untrained here, so these tests check mechanics (batching, truncation, caching, pool,
fusion, loading) and never the quality of the scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmrag.errors import ConfigError, EncoderError
from mmrag.rerank import CrossEncoderReranker, ScoreFusion, attention, learn_weight
from mmrag.rerank.cross_encoder import word_prefix
from mmrag.types import Chunk, Hit

QUERY = "how do cats sleep"
DOCS = [
    "Cats sleep twelve to sixteen hours a day, mostly in short naps.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "Quantum computers use qubits. " * 60,  # longer than max_length
    "A kitten naps.",
]


@pytest.fixture(scope="module")
def rr() -> Iterator[CrossEncoderReranker]:
    yield CrossEncoderReranker(None, max_length=64, batch_size=2, precision="fp32")


def _hits(texts: list[str | None], first: list[float]) -> list[Hit]:
    hits = []
    for i, (t, s) in enumerate(zip(texts, first, strict=True)):
        mod = "text" if t and i % 2 == 0 else "image"
        chunk = Chunk(str(i), mod, f"s{i}", t, None if mod == "text" else f"i{i}.jpg")  # type: ignore[arg-type]
        hits.append(Hit(chunk, s, None, None, None, i + 1, i + 1))
    return hits


def test_pairs_match_the_tokenizers_own_pair_encoding(rr: CrossEncoderReranker) -> None:
    for doc in DOCS[:2]:
        ((ids, types),) = rr.encode_pairs([QUERY], [doc])
        enc = rr.tokenizer(QUERY, doc)
        assert ids == enc["input_ids"] and types == enc["token_type_ids"]
    ((ids, _),) = rr.encode_pairs([QUERY], [DOCS[2]])
    assert len(ids) == 64 and ids[-1] == rr.tokenizer.sep_token_id  # truncated to max_length


def test_bucketed_batches_score_like_single_pairs(rr: CrossEncoderReranker) -> None:
    together = rr.score(QUERY, DOCS)
    alone = np.array([rr.score(QUERY, [d])[0] for d in DOCS])
    assert together.shape == (4,) and np.allclose(together, alone, atol=1e-5)
    assert np.allclose(rr.score(QUERY, DOCS[::-1]), together[::-1], atol=1e-5)
    # direct model call on the tokenizer's padded batch agrees too
    import torch

    enc = rr.tokenizer([QUERY] * 2, DOCS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        direct = rr.model(**enc).logits.reshape(-1).numpy()
    assert np.allclose(direct, together[:2], atol=1e-5)


def test_scoring_passes_take_a_forward_lane_shared_with_the_encoder(
    rr: CrossEncoderReranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each forward pass holds one of the process's lanes (mmrag.encoders.lanes.FORWARDS), so the
    reranker's and the encoder's passes together never outnumber the cores."""
    from mmrag.encoders.lanes import FORWARDS

    held: list[int] = []
    forward = rr._logits  # one forward pass, traced or eager

    def spy(*args: Any, **kwargs: Any) -> Any:
        held.append(FORWARDS.held)
        return forward(*args, **kwargs)

    monkeypatch.setattr(rr, "_logits", spy)
    rr.score(QUERY, DOCS)
    assert held == [1, 1] and FORWARDS.held == 0  # 4 pairs in batches of 2: two passes


def test_tokenization_is_cached(rr: CrossEncoderReranker, monkeypatch: pytest.MonkeyPatch) -> None:
    rr.score(QUERY, DOCS)
    calls: list[list[str]] = []
    real = rr._encode

    def counting(texts: list[str]) -> list[list[int]]:
        if texts:  # (an empty call is a no-op: no prefix fell short)
            calls.append(texts)
        return real(texts)

    monkeypatch.setattr(rr, "_encode", counting)
    rr.score(QUERY, DOCS)
    assert calls == []
    rr.score(QUERY, ["a new text"])
    assert calls == [["a new text"]]


def test_the_rust_tokenizer_gives_the_wrappers_ids_and_a_slow_tokenizer_still_works(
    rr: CrossEncoderReranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [QUERY, *DOCS, "Ünïcödé café — naïve façade", "x" * 3000, "   "]
    wrapper = rr.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=rr.max_length)
    assert rr._rust_tokenizer() is not None
    assert rr._encode(texts) == [list(x) for x in wrapper["input_ids"]]
    assert rr._rust_tokenizer() is not rr.tokenizer.backend_tokenizer  # a copy: the wrapper sets its own

    monkeypatch.setattr(rr.tokenizer, "truncation_side", "left")  # a tokenizer that keeps the end
    left = rr.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=rr.max_length)
    monkeypatch.setattr(rr, "_rust", None)
    rr._cache.clear()
    assert rr._doc_ids(texts) == [list(x) for x in left["input_ids"]]  # no word prefix either
    assert left["input_ids"] != wrapper["input_ids"]
    monkeypatch.setattr(rr.tokenizer, "truncation_side", "right")
    rr._cache.clear()

    class Slow:  # no Rust backend: the wrapper is called
        def __call__(self, *a: Any, **k: Any) -> Any:
            return real(*a, **k)

    real = rr.tokenizer
    monkeypatch.setattr(rr, "tokenizer", Slow())
    monkeypatch.setattr(rr, "_rust", None)
    assert rr._rust_tokenizer() is None
    assert rr._encode(texts) == [list(x) for x in wrapper["input_ids"]]


def test_long_texts_tokenize_from_a_word_prefix_with_the_same_ids(
    rr: CrossEncoderReranker, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert word_prefix("alpha beta gamma", 100) == "alpha beta gamma"
    assert word_prefix("alpha beta gamma", 8) == "alpha"  # "alpha be|ta": the cut word is dropped
    assert word_prefix("alpha beta gamma", 10) == "alpha beta"  # the cut falls on a space
    assert word_prefix("x" * 50, 10) == "x" * 50  # nowhere to cut: the whole text
    lines = (data_dir / "scifact" / "corpus.jsonl").read_text().splitlines()[:300]
    texts = [" ".join(filter(None, (d.get("title"), d.get("text")))) for d in map(json.loads, lines)]
    texts.append("word " * 3 + "y" * 2000)  # the prefix cannot fill max_length: the whole text
    calls: list[list[int]] = []  # the lengths of the texts each tokenizer call got
    real = rr._encode

    def counting(ts: list[str]) -> list[list[int]]:
        calls.append([len(t) for t in ts])
        return real(ts)

    monkeypatch.setattr(rr, "_encode", counting)
    for max_length in (16, 64, 112):
        monkeypatch.setattr(rr, "max_length", max_length)
        rr._cache.clear()
        calls.clear()
        whole = rr.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)
        assert rr._doc_ids(texts) == [list(x) for x in whole["input_ids"]]
        heads, redone = calls
        assert max(heads) <= 8 * max_length < max(len(t) for t in texts)  # long abstracts were cut
        # those whose prefix fell short went again whole: the made-up one, rarely an abstract
        assert len(texts[-1]) in redone and len(redone) < len(texts) // 20


def test_rerank_scores_only_texts_and_keeps_first_stage(rr: CrossEncoderReranker) -> None:
    texts: list[str | None] = [DOCS[1], None, DOCS[0], "kittens nap", DOCS[3]]
    hits = _hits(texts, [0.9, 0.8, 0.7, 0.6, 0.5])
    before = rr.stats.pairs
    out = rr.rerank(QUERY, hits)
    assert rr.stats.pairs - before == 4  # the image without text is not scored
    assert sorted(h.final_rank for h in out) == [1, 2, 3, 4, 5] and [h.final_rank for h in out] == [
        1,
        2,
        3,
        4,
        5,
    ]
    by_id = {h.chunk.id: h for h in out}
    assert by_id["1"].rerank is None and all(by_id[i].rerank is not None for i in "0234")
    assert [by_id[str(i)].ann_rank for i in range(5)] == [1, 2, 3, 4, 5]
    assert [by_id[str(i)].dense for i in range(5)] == [0.9, 0.8, 0.7, 0.6, 0.5]


def test_fusion_weight_extremes(rr: CrossEncoderReranker) -> None:
    hits = _hits(["a", "b", "c", "d"], [0.9, 0.5, 0.4, 0.1])
    rerank = [0.0, 3.0, 1.0, 2.0]
    first = ScoreFusion({"text": 0.0, "image": 0.0}, default=0.0).combine(hits, rerank)
    assert sorted(range(4), key=lambda i: -first[i]) == [0, 1, 2, 3]
    only = ScoreFusion({}, default=1.0).combine(hits, rerank)
    assert sorted(range(4), key=lambda i: -only[i]) == [1, 3, 2, 0]
    mixed = ScoreFusion({"text": 1.0, "image": 0.0}).combine(hits, rerank)
    assert mixed == pytest.approx([0.0, 0.5, 1 / 3, 0.0])  # images (odd i) keep (1-0)*norm(first)


def test_learn_weight_never_picks_a_harmful_reranker() -> None:
    pools = [_hits(["a", "b", "c"], [0.9, 0.5, 0.1]) for _ in range(3)]

    def top1_is_first(ordered: list[list[Hit]]) -> float:
        return sum(o[0].chunk.id == "0" for o in ordered) / len(ordered)

    bad = [[0.0, 5.0, 9.0]] * 3  # ranks the right answer last
    w, curve = learn_weight(pools, bad, top1_is_first)  # type: ignore[arg-type]
    assert w == 0.0 and curve[0.0] == 1.0 and curve[1.0] == 0.0
    good = [[9.0, 0.0, 0.0]] * 3
    assert learn_weight(pools, good, top1_is_first)[0] == 0.0  # ties: closest to the first stage


def test_bf16_tracks_fp32_and_auto_follows_the_cpu(rr: CrossEncoderReranker) -> None:
    import torch

    from mmrag.rerank.cross_encoder import bf16_is_fast, resolve_precision

    fp32 = rr.score(QUERY, DOCS)
    half = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="bf16")
    assert half.id.endswith("#bf16") and rr.id == rr.source
    bf16 = half.score(QUERY, DOCS)
    assert bf16.dtype == np.float32
    # bf16 keeps 8 mantissa bits: logits agree to ~1%, far closer than int8 (below).
    assert np.max(np.abs(bf16 - fp32)) <= 0.02 * (1 + np.max(np.abs(fp32)))
    # bf16 runs mmrag's CPU attention (padded batches of 2 here: the mask is applied), as close to
    # fp32 as torch's own sdpa kernel is
    assert half.model.config._attn_implementation == attention.NAME
    # ... traced, one TorchScript call per pass, so the feed-forward stays unfused (rerank/traced.py)
    assert half.traced
    assert not any(type(m).__name__ == "FusedDenseGelu" for m in half.model.modules())
    half.model.set_attn_implementation("sdpa")  # the eager model's own attention, not the trace's
    batch = half.collate(half.encode_pairs([QUERY] * len(DOCS), DOCS))
    with torch.inference_mode():
        sdpa = half.model(**batch).logits.float().reshape(-1).numpy()
    assert np.max(np.abs(bf16 - sdpa)) <= 0.02 * (1 + np.max(np.abs(fp32)))
    assert np.corrcoef(bf16, fp32)[0, 1] > 0.999 and np.argmax(bf16) == np.argmax(fp32)
    assert resolve_precision("auto") == ("bf16" if bf16_is_fast() else "fp32")
    with pytest.raises(ConfigError, match="precision"):
        CrossEncoderReranker(None, precision="fp8")


def test_bf16_runs_traced_follows_new_weights_and_falls_back_to_eager_fused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from mmrag.encoders.fused import fused_kernel_runs

    half = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="bf16")
    traced = half.score(QUERY, DOCS)
    assert half.traced
    # the same logits as the eager model (the trace is checked against it on a padded probe)
    batch = half.collate(half.encode_pairs([QUERY] * len(DOCS), DOCS))
    with torch.inference_mode():
        eager = half.model(**batch).logits.float().reshape(-1).numpy()
    assert np.max(np.abs(traced - eager)) <= 1e-2
    # weights changed in place: scored with the new ones (traced again)
    with torch.no_grad():
        half.model.classifier.bias += 1.0
    moved = half.score(QUERY, DOCS)
    assert half.traced
    assert np.allclose(moved, traced + 1.0, atol=0.05)

    # fp32 runs traced too, with the eager model's logits; a model to be trained in place is not traced
    fp32 = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="fp32")
    eager32 = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="fp32", trace=False)
    assert np.allclose(fp32.score(QUERY, DOCS), eager32.score(QUERY, DOCS), atol=1e-5)
    assert fp32.traced and not eager32.traced

    # a model that cannot be traced runs eagerly, with its feed-forward fused, and one warning
    def refuse(*_: Any, **__: Any) -> Any:
        raise RuntimeError("no tracing here")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    other = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="bf16")
    with caplog.at_level("WARNING", logger="mmrag.rerank.traced"):
        fallback = other.score(QUERY, DOCS)
        other.score(QUERY, DOCS[:2])
    assert not other.traced
    warned = [r.getMessage() for r in caplog.records if "runs eagerly" in r.getMessage()]
    why = "cannot trace it (no tracing here); it runs eagerly (slower beside busy threads)"
    assert warned == [f"reranker {other.source}: {why}"]
    fused = sum(type(m).__name__ == "FusedDenseGelu" for m in other.model.modules())
    assert fused == (other.model.config.num_hidden_layers if fused_kernel_runs() else 0)
    assert np.max(np.abs(fallback - traced)) <= 0.02 * (1 + np.max(np.abs(traced)))


def test_int8_tracks_fp32() -> None:
    fp32 = CrossEncoderReranker(None, max_length=64, precision="fp32").score(QUERY, DOCS)
    q = CrossEncoderReranker(None, max_length=64, int8=True)
    assert q.id.endswith("#int8")
    int8 = q.score(QUERY, DOCS)
    assert np.corrcoef(fp32, int8)[0, 1] > 0.9


def _tiny(tmp_path: Path, labels: int = 1) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from mmrag.encoders.lite import minilm_path

    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,  # a random model with visible signal, so a few steps can fit
    )
    out = tmp_path / f"tiny{labels}"
    BertForSequenceClassification(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(out)
    return out


def test_loads_any_hf_cross_encoder_folder(tmp_path: Path) -> None:
    r = CrossEncoderReranker(_tiny(tmp_path), max_length=32, threads=1)
    assert r.score(QUERY, DOCS).shape == (4,) and not r.untrained
    with pytest.raises(EncoderError, match="outputs"):
        CrossEncoderReranker(_tiny(tmp_path, labels=3))
    with pytest.raises(EncoderError, match="cannot load"):
        CrossEncoderReranker(tmp_path / "missing")


def test_listwise_training_lowers_the_loss(tmp_path: Path) -> None:
    import torch

    from mmrag.train.reranker import Group, RerankTrainConfig, fit, listwise_loss

    uniform = listwise_loss(torch.zeros(2, 4))
    assert float(uniform) == pytest.approx(np.log(4))
    assert float(listwise_loss(torch.tensor([[10.0, 0.0, 0.0]]))) < 1e-3
    r = CrossEncoderReranker(_tiny(tmp_path), max_length=32)
    groups = [Group(QUERY, (DOCS[0], DOCS[1], DOCS[2])), Group("stock market", (DOCS[1], DOCS[0], DOCS[3]))]
    cfg = RerankTrainConfig(
        batch_groups=2, steps=None, epochs=20, lr=1e-3, head_lr=1e-2, freeze_layers=0, warmup=0.0
    )
    stats = fit(r, groups, cfg)
    assert stats.steps == 20 and stats.loss_last10 < 0.5 * stats.loss_first10


def test_bf16_training_learns_repeats_and_keeps_fp32_weights(tmp_path: Path) -> None:
    import torch

    from mmrag.train.reranker import Group, RerankTrainConfig, fit

    with pytest.raises(ConfigError, match="train precision"):
        RerankTrainConfig(train_precision="fp16")
    groups = [Group(QUERY, (DOCS[0], DOCS[1], DOCS[2])), Group("stock market", (DOCS[1], DOCS[0], DOCS[3]))]
    cfg = RerankTrainConfig(
        batch_groups=2, steps=None, epochs=20, lr=1e-3, head_lr=1e-2, freeze_layers=0, warmup=0.0,
        train_precision="bf16",
    )  # fmt: skip
    runs = []
    for _ in range(2):
        r = CrossEncoderReranker(_tiny(tmp_path), max_length=32, precision="fp32")
        stats = fit(r, groups, cfg)
        runs.append(r.model.state_dict())
        assert stats.loss_last10 < 0.5 * stats.loss_first10
    floats = [k for k, v in runs[0].items() if v.is_floating_point()]
    assert floats and all(runs[0][k].dtype == torch.float32 for k in floats)  # autocast, not a bf16 model
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])  # same seed, same model


def test_a_pool_is_split_over_the_lanes(rr: CrossEncoderReranker, monkeypatch: pytest.MonkeyPatch) -> None:
    """With lanes for it, a pool's pairs run as parts on as many threads at once (a lone search
    with MMRAG_THREADS=1 uses every core), each pair scored as one pass scores it; an error in any
    part is the call's."""
    import threading

    docs = [f"{d} (variant {n})" for n in range(3) for d in DOCS]  # 12 different texts
    monkeypatch.setattr(rr, "_lanes_for_split", lambda: 1)
    alone = rr.score(QUERY, docs)
    seen: set[int] = set()
    real = type(rr)._logits
    fail = [False]

    def spy(self: CrossEncoderReranker, batch: Any) -> Any:
        seen.add(threading.get_ident())
        if fail[0] and threading.get_ident() != threading.main_thread().ident:
            raise RuntimeError("a side part failed")
        return real(self, batch)

    monkeypatch.setattr(type(rr), "_logits", spy)
    monkeypatch.setattr(rr, "_lanes_for_split", lambda: 2)
    split = rr.score(QUERY, docs)
    assert len(seen) == 2 and np.allclose(split, alone, atol=1e-5)
    assert np.array_equal(rr.score(QUERY, docs), split)  # the same split every time: the same scores
    seen.clear()
    monkeypatch.setattr(rr, "_lanes_for_split", lambda: 8)
    assert np.allclose(rr.score(QUERY, docs), alone, atol=1e-5) and len(seen) >= 2  # 3 parts of 4 pairs
    seen.clear()
    rr.score(QUERY, docs[:7])  # too few pairs to split
    assert len(seen) == 1
    fail[0] = True
    with pytest.raises(RuntimeError, match="side part"):
        rr.score(QUERY, docs)
