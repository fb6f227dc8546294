"""The store-based image-caption evaluation agrees with an independent exact computation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrag.eval.datasets import ImageCaptionDataset
from mmrag.eval.metrics import success_at_k
from mmrag.eval.runner import evaluate_image_caption
from mmrag.train.trainer import caption_recall
from tests.fakes import HashEncoder


def test_success_at_k() -> None:
    qrels = {"a": {"x": 1, "y": 1}, "b": {"z": 1}}
    assert success_at_k(qrels, {"a": ["q", "y", "x"], "b": ["q", "w"]}, 2) == 0.5
    assert success_at_k(qrels, {"a": ["x"], "b": ["z"]}, 1) == 1.0


def test_image_caption_eval_matches_exact_recall(tmp_path: Path, data_dir: Path) -> None:
    """Several captions per image: image→text must count an image once, at its best caption."""
    src = data_dir / "flickr8k"
    rows = [json.loads(line) for line in (src / "captions.jsonl").read_text().splitlines()[:12]]
    root = tmp_path / "ic"
    (root / "images").mkdir(parents=True)
    for r in rows:
        shutil.copy(src / "images" / r["image"], root / "images" / r["image"])
        r["split"] = "dev"
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = ImageCaptionDataset.load(root, "dev")
    enc = HashEncoder(dim=48)
    report = evaluate_image_caption(enc, ds, progress=False)
    captions = [c for caps in ds.captions for c in caps]
    owners = np.repeat(np.arange(len(ds.images)), [len(c) for c in ds.captions])
    want = caption_recall(enc.encode_text(captions), enc.encode_image(list(ds.images)), owners)
    for key in ("t2i_recall@1", "t2i_recall@5", "i2t_recall@1", "i2t_recall@5"):
        assert report.metrics[key] == pytest.approx(want[key]), key
