"""Training reports: the JSON keeps its keys and order, the text is what `mmrag train` prints."""

from __future__ import annotations

from dataclasses import replace

from mmrag.train.reports import ClosedLoopReport, HeadsReport, LoopOutcome, TrainingReport

M = {
    "t2i_recall@1": 0.1, "i2t_recall@1": 0.2, "t2i_recall@5": 0.3,
    "i2t_recall@5": 0.4, "t2i_recall@10": 0.5, "i2t_recall@10": 0.6, "rsum": 210.0,
}  # fmt: skip
HEADS = HeadsReport(
    {"loss": "triplet"}, {"images": 4, "captions": 20}, {"images": 2, "captions": 10},
    M, {"epoch": 2, **M, "t2i_recall@10": 0.75}, 2, 3, 4.5, [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}],
)  # fmt: skip
HEAD_KEYS = [
    "config",
    "train",
    "dev",
    "dev_before",
    "dev_best",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "history",
]


def test_training_report_dict_and_text() -> None:
    cache = {"hits": 1, "misses": 3, "seconds": 0.5}
    report = TrainingReport(HEADS, None, "/ck", "lite", "/data/f", None, 0, cache, 9.9)
    d = report.to_dict()
    tail = ["checkpoint", "base", "dataset", "text_dataset", "text_triplets", "feature_cache", "wall_seconds"]
    assert list(d) == HEAD_KEYS + tail
    assert HEADS.summary() == {
        k: d[k] for k in ("config", "dev_before", "dev_best", "best_epoch", "train_seconds")
    }
    lines = report.to_text().splitlines()
    assert lines[0] == "checkpoint: /ck (best epoch 2 of 3)"
    assert lines[1] == "features: {'hits': 1, 'misses': 3, 'seconds': 0.5} ; training 4.5 s; wall 9.9 s"
    assert lines[4] == "   t2i_recall@10: 0.5000 -> 0.7500"
    assert len(lines) == 9 and lines[-1] == "use it: mmrag ingest PATH --model /ck"
    staged = replace(report, stage1=HEADS).to_dict()
    assert list(staged) == [*HEAD_KEYS, "stage1", *tail] and "config" not in staged["stage1"]


def test_closed_loop_report_dict_and_text() -> None:
    store_metrics = {**M, "queries": 10, "images_in_store": 2, "seconds": 0.1}
    loop = LoopOutcome(
        "/s", "v-old", "v-new", store_metrics, {**store_metrics, "t2i_recall@1": 0.4}, True, "new wins",
        "v-new", {"captions": 10, "weight": 1.0}, {"points": 12}, "note",
    )  # fmt: skip
    report = ClosedLoopReport(HEADS, "/ck", "lite", "/data/f", loop, 3.0)
    d = report.to_dict()
    assert list(d) == [*HEAD_KEYS, "checkpoint", "base", "dataset", "closed_loop", "wall_seconds"]
    assert d["closed_loop"]["switched"] is True and list(d["closed_loop"])[-1] == "transductive_note"
    assert report.to_text().splitlines() == [
        "checkpoint: /ck",
        "mined: {'captions': 10, 'weight': 1.0}",
        "re-embedded: {'points': 12}",
        "old vector v-old vs new vector v-new (10 dev captions over 2 stored images):",
        "    t2i_recall@1: 0.1000 -> 0.4000",
        "    t2i_recall@5: 0.3000 -> 0.3000",
        "   t2i_recall@10: 0.5000 -> 0.5000",
        "switched the default vector: new wins",
    ]
