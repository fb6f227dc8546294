"""Joint text tuning: SciFact-style triplets built from a small real slice, and the joint training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrag.encoders import load_encoder
from mmrag.errors import ConfigError
from mmrag.train.features import FeatureCache, tower_key
from mmrag.train.text import TextTriplets, scifact_text_data
from mmrag.train.trainer import Pairs, TrainConfig, train_heads


def _tiny_scifact(data_dir: Path, out: Path) -> tuple[Path, Path]:
    """A BEIR folder + triplets file made of 6 train-fold and 3 val-fold rows of the real SciFact data."""
    rows = [json.loads(line) for line in (data_dir / "triplets" / "scifact_train_triplets.jsonl").open()]
    picked = [r for r in rows if r["fold"] == "train"][:6] + [r for r in rows if r["fold"] == "val"][:3]
    need = {r["positive_id"] for r in picked} | {n for r in picked for n in r["bm25_hard_negative_ids"]}
    beir = out / "scifact"
    (beir / "qrels").mkdir(parents=True)
    with (data_dir / "scifact" / "corpus.jsonl").open() as src, (beir / "corpus.jsonl").open("w") as dst:
        for line in src:
            if json.loads(line)["_id"] in need:
                dst.write(line)
    qids = {r["query_id"] for r in picked}
    with (data_dir / "scifact" / "queries.jsonl").open() as src, (beir / "queries.jsonl").open("w") as dst:
        for line in src:
            if json.loads(line)["_id"] in qids:
                dst.write(line)
    (beir / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{r['query_id']}\t{r['positive_id']}\t1\n" for r in picked)
    )
    trip = out / "triplets.jsonl"
    trip.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return beir, trip


def test_scifact_text_data_holds_out_the_val_fold(tmp_path: Path, data_dir: Path) -> None:
    beir, trip = _tiny_scifact(data_dir, tmp_path)
    enc = load_encoder("lite")
    cache = FeatureCache(tmp_path / "cache", progress=False)
    tt, dev = scifact_text_data(enc, cache, tower_key(enc), beir, trip)
    rows = [json.loads(line) for line in trip.open()]
    val_q = {r["query_id"] for r in rows if r["fold"] == "val"}
    assert set(dev.query_ids) == val_q
    assert len(tt.anchor) == 6 * 5  # each train positive with its 5 BM25 negatives
    assert dev.docs.shape[1] == tt.queries.shape[1] == 384
    # the untrained lite text head is MiniLM: the cached-feature nDCG is a real, non-trivial score
    assert 0.0 < dev.ndcg(enc.model.text.proj) <= 1.0
    mask = tt.positives_mask(np.arange(5))
    assert mask.shape == (5, 5) and bool(mask.diagonal().all())  # same query, same positive: masked
    with pytest.raises(ConfigError):  # a locked text head cannot be tuned on text
        pairs = Pairs(np.zeros((4, 1280), np.float32), np.zeros((4, 384), np.float32), np.arange(4))
        train_heads(enc, pairs, pairs, TrainConfig(epochs=1), text_triplets=tt, progress=False)


def test_joint_run_reports_both_sides(tmp_path: Path) -> None:
    enc = load_encoder("lite")
    rng = np.random.default_rng(0)
    img_dim = enc.model.visual.head.proj.in_features
    pairs = Pairs(
        rng.normal(size=(32, img_dim)).astype(np.float32),
        rng.normal(size=(64, 384)).astype(np.float32),
        np.repeat(np.arange(32), 2),
    )
    docs = rng.normal(size=(20, 384)).astype(np.float32)
    queries = (docs[:8] + rng.normal(scale=0.5, size=(8, 384))).astype(np.float32)
    tt = TextTriplets(
        queries, docs, np.arange(8), np.arange(8), np.arange(8, 16), tuple(frozenset({i}) for i in range(20))
    )
    from mmrag.train.text import TextDev

    dev = TextDev(queries, docs, [str(i) for i in range(8)], [str(i) for i in range(20)],
                  {str(i): {str(i): 1} for i in range(8)})  # fmt: skip
    before = torch.clone(enc.model.text.proj.weight.detach())
    cfg = TrainConfig(epochs=2, patience=2, batch_size=8, lock_text=False)
    report = train_heads(enc, pairs, pairs, cfg, text_triplets=tt, text_dev=dev, progress=False)
    assert all("text_ndcg@10" in h for h in report.history)
    assert "text_ndcg@10" in report.dev_before
    assert not torch.equal(before, enc.model.text.proj.weight.detach())  # the text head did train
