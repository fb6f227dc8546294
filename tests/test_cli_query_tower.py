"""`mmrag search` on the stored text tower: a new process answers a text query without importing torch,
open_clip or transformers, with the full encoder's results (integration)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmrag.cli import main

pytestmark = pytest.mark.integration

QUERY = "how do I install the package"


def test_text_search_runs_on_the_stored_tower_without_torch(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "towers"
    monkeypatch.setenv("MMRAG_QUERY_CACHE", str(cache))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("itm-flickr8k-project-README.md", "unstructured-README.md"):
        shutil.copy(data_dir / "ingest_demo" / "markdown" / name, docs)
    store = str(tmp_path / "store")
    assert main(["ingest", str(docs), "--store", store, "--quiet"]) == 0
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] != []  # ingest stored it
    capsys.readouterr()

    search = ["search", QUERY, "--store", store, "--k", "5", "--no-rerank", "--json", "--quiet"]
    monkeypatch.setenv("MMRAG_QUERY_CACHE", "off")  # the full encoder, as before the cache
    assert main(search) == 0
    ref = json.loads(capsys.readouterr().out)

    monkeypatch.setenv("MMRAG_QUERY_CACHE", str(cache))
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mmrag.cli", *search],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")
    }
    assert "onnxruntime" in imported and "tokenizers" in imported
    assert not {"torch", "open_clip", "transformers", "torchvision"} & imported
    got = json.loads(run.stdout)
    assert got["encoder"] == ref["encoder"]
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in ref["hits"]]
    for a, b in zip(got["hits"], ref["hits"], strict=True):
        assert a["scores"]["dense"] == pytest.approx(b["scores"]["dense"], abs=1e-4)
        assert a["scores"]["fused"] == pytest.approx(b["scores"]["fused"], abs=1e-3)
