"""Reranker training data and reports without a store: mining from a plain first-stage callable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mmrag.eval.datasets import BeirDataset
from mmrag.train.groups import Group, mine_groups
from mmrag.train.reranker import Calibration, FitStats, RerankTrainConfig, RerankTrainReport

CORPUS = {
    "d1": ("Aspirin lowers the risk of stroke", "Aspirin abstract."),
    "d2": ("Ibuprofen and kidney function in adults", "Ibuprofen abstract."),
    "d3": ("Statins lower cholesterol in older patients", "Statin abstract."),
    "d4": ("Short title", "No title group."),
    "d5": ("Vitamin D and bone density in children", "Vitamin abstract."),
}


def _ds() -> BeirDataset:
    queries = {"q1": "does aspirin prevent stroke", "q2": "statins and cholesterol"}
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    return BeirDataset(Path("toy"), CORPUS, queries, qrels)


def test_mine_groups_takes_the_first_stage_as_a_callable() -> None:
    calls: list[tuple[int, int]] = []

    def first_stage(texts: list[str], k: int) -> list[list[str]]:
        calls.append((len(texts), k))
        return [list(CORPUS)[:k] for _ in texts]

    ds = _ds()
    groups = mine_groups(ds, ["q1", "q2"], first_stage, negatives=2, depth=3, titles=10, seed=0)
    assert calls == [(2, 6), (4, 3)]  # queries look 2 * depth deep; the 4 titles of >= 4 words, depth
    assert all(isinstance(g, Group) and len(g.passages) == 3 for g in groups)
    by_query = {g.query: g for g in groups}
    assert by_query["does aspirin prevent stroke"].passages[0] == ds.doc_text("d1")
    assert ds.doc_text("d1") not in by_query["does aspirin prevent stroke"].passages[1:]
    title = by_query[CORPUS["d2"][0]]
    assert title.passages[0] == CORPUS["d2"][1] and CORPUS["d2"][1] not in title.passages[1:]
    again = mine_groups(ds, ["q1", "q2"], first_stage, negatives=2, depth=3, titles=10, seed=0)
    assert again == groups  # seeded
    assert mine_groups(ds, ["q1"], lambda t, k: [[] for _ in t], negatives=1, depth=3, titles=0) == []
    # Held-out docs (the validation queries' answers) never become a title group's positive.
    held = mine_groups(ds, [], first_stage, negatives=2, depth=3, titles=10, seed=0, exclude={"d2"})
    assert all(g.passages[0] != CORPUS["d2"][1] for g in held) and held


def test_rerank_report_json_is_the_checkpoint_config(tmp_path: Path) -> None:
    unseen = {"first_stage_ndcg@10": 0.45, "rerank_only_ndcg@10": 0.4, "fused_ndcg@10": 0.5}
    cal = Calibration(0.4, {0.0: 0.5, 0.4: 0.6, 1.0: 0.55}, 0.5, 0.55, 0.6, 30, 20, unseen, 12, 0.58)
    fit = FitStats(5, 10, 40, 3.2, 1.1, 0.9)
    report = RerankTrainReport(tmp_path, "minilm", 112, "hybrid", RerankTrainConfig(), fit, 44, 100, cal)
    d = report.to_dict()
    assert list(d) == [
        "kind", "base", "max_length", "fusion_weights", "fusion_default", "first_stage", "train", "val",
    ]  # fmt: skip
    assert d["fusion_weights"] == {"text": 0.4} and d["train"]["steps"] == 5 and d["train"]["groups"] == 44
    assert list(d["val"]) == [
        "weight", "curve", "first_stage_ndcg@10", "rerank_only_ndcg@10", "fused_ndcg@10",
        "fused_crossfit_ndcg@10", "queries", "pool", "unseen",
    ]  # fmt: skip
    assert d["val"]["unseen"] == {**unseen, "queries": 12}
    json.dumps(d)
    # the validation table: every stage on the whole fold and on the queries it cannot have memorised
    assert report.to_text().splitlines() == [
        f"checkpoint: {tmp_path} (5 steps, 44 groups mined, 3.2 s)",
        "loss 1.100 -> 0.900",
        "validation (pool 20; unseen = no relevant doc is a training positive):",
        "nDCG@10, val fold           all 30   unseen 12",
        "first stage (hybrid)        0.5000      0.4500",
        "rerank alone                0.5500      0.4000",
        "fused (w=0.40)              0.6000      0.5000",
        "fused, cross-fitted         0.5800           -",
        f"use it: mmrag model-set --reranker {tmp_path}   (then plain `mmrag search QUERY`)",
    ]


def test_rerank_and_mining_import_no_store_or_retriever() -> None:
    code = (
        "import sys, mmrag.rerank, mmrag.train.groups; "
        "bad = [m for m in ('mmrag.store', 'mmrag.retriever') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
