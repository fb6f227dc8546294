"""The closed loop on a real (tiny) store built from Flickr8k dev images: mine, train, re-embed, decide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmrag.encoders import load_encoder
from mmrag.errors import ConfigError
from mmrag.ingest import IngestRunner, read_captions
from mmrag.store import QdrantStore
from mmrag.train.closed_loop import closed_loop, mine_negatives
from mmrag.train.trainer import HardNegatives, TrainConfig

pytestmark = pytest.mark.integration


class _FakeStore:
    """Only ``search`` is used by the mining step; a fixed result keeps the test about the bookkeeping."""

    def __init__(self, rows: list[list[str]]) -> None:
        self.rows = rows

    def search(self, vector: str, queries: np.ndarray, limit: int, *, modality: str | None = None) -> list:  # type: ignore[type-arg]
        from mmrag.types import Chunk

        assert modality == "image"
        return [
            [
                (Chunk(id=str(j), modality="image", source=p, text=None, image=p), 1.0)
                for j, p in enumerate(row[:limit])
            ]
            for row in self.rows[: len(queries)]
        ]


def test_mining_drops_known_positives_and_pads() -> None:
    own = [str(Path(p).resolve()) for p in ("a.jpg", "b.jpg")]
    rows = [[own[0], own[1], "/x/c.jpg"], ["/x/c.jpg"]]
    paths, index, stats = mine_negatives(_FakeStore(rows), "v", np.zeros((2, 4), np.float32), own, k=2)  # type: ignore[arg-type]
    assert [paths[i] for i in index[0]] == [own[1], "/x/c.jpg"]  # own image dropped, the next two kept
    assert index[1].tolist() == [paths.index("/x/c.jpg"), -1]  # fewer hits: padded with -1
    assert stats["positives_dropped"] == 1 and stats["unique_images"] == 2
    with pytest.raises(ConfigError):
        mine_negatives(_FakeStore(rows), "v", np.zeros((2, 4), np.float32), own, k=0)  # type: ignore[arg-type]


def test_hard_negative_validation() -> None:
    with pytest.raises(ConfigError):
        HardNegatives(np.zeros((2, 3), np.float32), np.array([[0, 5]]))
    with pytest.raises(ConfigError):
        HardNegatives(np.zeros((2, 3), np.float32), np.array([0, 1]))


def test_closed_loop_adds_a_vector_and_decides_by_the_numbers(tmp_path: Path, data_dir: Path) -> None:
    root = data_dir / "flickr8k"
    names = (root / "splits" / "dev.txt").read_text().split()[:16]
    store_dir = tmp_path / "store"
    with QdrantStore.open(str(store_dir)) as store:
        IngestRunner(load_encoder("lite"), store).run(
            [root / "images"],
            files=[root / "images" / n for n in names],
            captions=read_captions(root / "captions.jsonl"),
        )
        before = store.count()
        old_default = store.default_vector
        cfg = TrainConfig(epochs=3, patience=3, batch_size=16)
        report = closed_loop(
            store,
            root,
            tmp_path / "ckpt",
            cfg,
            mine_k=3,
            limit=16,
            cache_dir=tmp_path / "cache",
            progress=False,
        )
        loop = report.closed_loop.to_dict()
        assert loop["old_vector"] == old_default and loop["new_vector"] != old_default
        assert set(store.vectors) == {loop["old_vector"], loop["new_vector"]}
        assert store.count() == before  # re-embedding adds a vector, never points
        assert loop["reembed"]["reembedded"] == before
        assert loop["old"]["queries"] == loop["new"]["queries"] == 16 * 5
        new_wins = (loop["new"]["t2i_recall@10"], loop["new"]["rsum"]) > (
            loop["old"]["t2i_recall@10"],
            loop["old"]["rsum"],
        )
        assert loop["switched"] == new_wins
        assert store.default_vector == (loop["new_vector"] if new_wins else old_default)
        assert loop["mining"]["captions"] == 16 * 5 and loop["mining"]["unique_images"] > 0
        ids = [r.id for r in store.iter_records()]
        assert store.existing_ids(ids, loop["new_vector"]) == set(ids)
    saved = json.loads((tmp_path / "ckpt" / "closed_loop.json").read_text())
    assert saved["switched"] == loop["switched"]
    assert load_encoder(str(tmp_path / "ckpt")).aligned


def test_closed_loop_keeps_the_ledger_in_step(tmp_path: Path, data_dir: Path) -> None:
    """Through the CLI: ingest (with its ledger), close the loop; `mmrag verify` finds ledger == store."""
    import subprocess
    import sys

    root = data_dir / "flickr8k"
    names = tmp_path / "names.txt"
    names.write_text("\n".join((root / "splits" / "dev.txt").read_text().split()[:10]))
    store = tmp_path / "store"
    run = [sys.executable, "-m", "mmrag.cli"]
    common = ["--store", str(store), "--quiet"]
    subprocess.run(
        [*run, "ingest", str(root / "images"), "--files-from", str(names), "--captions",
         str(root / "captions.jsonl"), *common],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    out = subprocess.run(
        [*run, "train", "--from-store", "--dataset", str(root), "--out", str(tmp_path / "ckpt"),
         "--limit", "10", "--epochs", "2", "--mine-k", "2", "--cache", str(tmp_path / "cache"),
         "--json", *common],
        check=True, capture_output=True, timeout=600, text=True,
    )  # fmt: skip
    loop = json.loads(out.stdout)["closed_loop"]
    assert loop["reembed"]["reembedded"] == 10 and loop["reembed"]["incomplete_sources"] == []
    verify = subprocess.run([*run, "verify", "--json", *common], capture_output=True, timeout=600, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] is True


def test_switch_rule_and_min_gain() -> None:
    from mmrag.train.closed_loop import _better

    old = {"t2i_recall@10": 0.587, "rsum": 122.5}
    assert _better({"t2i_recall@10": 0.589, "rsum": 123.0}, old)[0]
    assert not _better({"t2i_recall@10": 0.589, "rsum": 123.0}, old, min_gain=0.005)[0]
    assert "by more than 0.0050" in _better({"t2i_recall@10": 0.589, "rsum": 123.0}, old, min_gain=0.005)[1]
    assert _better({"t2i_recall@10": 0.587, "rsum": 123.0}, old)[0]  # tie on R@10: rsum decides
    assert not _better({"t2i_recall@10": 0.586, "rsum": 130.0}, old)[0]
