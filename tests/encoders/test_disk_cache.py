"""The model cache's mechanics (:mod:`mmrag.encoders.disk_cache`): publishing replaces a model's older
entry, repairs a half-deleted one, and sweeps what killed processes left."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mmrag.encoders import disk_cache


def _entry(root: Path, name: str, model: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"m")
    (folder / disk_cache.META_FILE).write_text(json.dumps({"model": model}))
    return folder


def test_publish_replaces_the_older_entry_of_the_same_model(tmp_path: Path) -> None:
    old = _entry(tmp_path, "k1", "tower:/ckpt")
    other = _entry(tmp_path, "k2", "rerank:/ckpt")
    tmp = disk_cache.new_tmp(tmp_path, "k3")
    assert tmp is not None
    (tmp / disk_cache.META_FILE).write_text(json.dumps({"model": "tower:/ckpt"}))
    assert disk_cache.publish(tmp, tmp_path, "k3", "tower:/ckpt") == tmp_path / "k3"
    assert disk_cache.ready(tmp_path, "k3") and not old.exists() and other.exists() and not tmp.exists()


def test_publish_repairs_a_half_deleted_entry_and_yields_to_a_whole_one(tmp_path: Path) -> None:
    broken = tmp_path / "k1"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"left over")  # no meta.json: an interrupted removal
    tmp = disk_cache.new_tmp(tmp_path, "k1")
    assert tmp is not None
    (tmp / disk_cache.META_FILE).write_text(json.dumps({"model": "m"}))
    assert disk_cache.publish(tmp, tmp_path, "k1", "m") == broken
    assert json.loads((broken / disk_cache.META_FILE).read_text()) == {"model": "m"}
    late = disk_cache.new_tmp(tmp_path, "k1")  # another process stored k1 first: its entry stays
    assert late is not None
    (late / disk_cache.META_FILE).write_text(json.dumps({"model": "late"}))
    assert disk_cache.publish(late, tmp_path, "k1", "m") == broken
    assert json.loads((broken / disk_cache.META_FILE).read_text()) == {"model": "m"}


def test_abandoned_temporary_folders_are_swept(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-k9-1-1"
    stale.mkdir()
    old = time.time() - 2 * disk_cache.STALE_TMP_S
    os.utime(stale, (old, old))
    fresh = tmp_path / ".tmp-k8-2-2"  # another process writing right now
    fresh.mkdir()
    assert disk_cache.new_tmp(tmp_path, "k1") is not None
    assert not stale.exists() and fresh.exists()


def test_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(disk_cache.CACHE_ENV, str(tmp_path))
    assert disk_cache.cache_root() == tmp_path
    for off in ("off", "0", "none"):
        monkeypatch.setenv(disk_cache.CACHE_ENV, off)
        assert disk_cache.cache_root() is None
    monkeypatch.setenv(disk_cache.CACHE_ENV, "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert disk_cache.cache_root() == tmp_path / ".cache" / "mmrag" / "query-towers"
