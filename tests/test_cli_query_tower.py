"""`mmrag search` on the stored text tower and reranker: a new process answers a text query, both stages,
without importing torch, open_clip or transformers, with the full models' results (integration)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmrag.cli import main

pytestmark = pytest.mark.integration

QUERY = "how do I install the package"


def _fresh_process(argv: list[str]) -> tuple[dict[str, Any], set[str]]:
    """``mmrag`` in a new process: its JSON answer and every module it imported."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mmrag.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")
    }
    answer: dict[str, Any] = json.loads(run.stdout)
    return answer, imported


def test_text_search_runs_on_the_stored_tower_and_reranker_without_torch(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "towers"
    monkeypatch.setenv("MMRAG_QUERY_CACHE", str(cache))
    monkeypatch.setenv("MMRAG_RERANK_PRECISION", "fp32")  # the full reranker as the stored one runs
    monkeypatch.setenv("MMRAG_TEXT_PRECISION", "fp32")  # and the full text tower (bf16 hardware: bf16)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("itm-flickr8k-project-README.md", "unstructured-README.md"):
        shutil.copy(data_dir / "ingest_demo" / "markdown" / name, docs)
    store = str(tmp_path / "store")
    # records the offline MiniLM cross-encoder as the store's default: plain searches run both stages
    assert main(["ingest", str(docs), "--store", store, "--reranker", "minilm", "--quiet"]) == 0
    stored = sorted(p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith("."))
    assert len(stored) == 2 and stored[1] == "rerank"  # the text tower and the reranker
    capsys.readouterr()

    for extra in (["--no-rerank"], []):
        search = ["search", QUERY, "--store", store, "--k", "5", "--json", "--quiet", *extra]
        monkeypatch.setenv("MMRAG_QUERY_CACHE", "off")  # the full models, as before the cache
        assert main(search) == 0
        ref = json.loads(capsys.readouterr().out)
        monkeypatch.setenv("MMRAG_QUERY_CACHE", str(cache))
        got, imported = _fresh_process(search)
        assert "onnxruntime" in imported and "tokenizers" in imported
        assert not {"torch", "open_clip", "transformers", "torchvision"} & imported
        assert (got["encoder"], got["reranker"]) == (ref["encoder"], ref["reranker"])
        assert (got["reranker"] is None) == bool(extra)
        assert [h["id"] for h in got["hits"]] == [h["id"] for h in ref["hits"]]
        for a, b in zip(got["hits"], ref["hits"], strict=True):
            assert a["scores"]["dense"] == pytest.approx(b["scores"]["dense"], abs=1e-4)
            assert a["scores"]["fused"] == pytest.approx(b["scores"]["fused"], abs=1e-3)
            assert a["scores"]["rerank"] == pytest.approx(b["scores"]["rerank"], abs=1e-3)
