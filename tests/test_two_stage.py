"""Two stages by default (issue #14): a store's model set makes the CLI, the API, the app and
LangChain run hybrid + rerank with no flags; a store without a reranker says so in one line and
falls back to the first stage. (The app's default is checked in tests/ui/test_app.py.)

The reranker is the offline MiniLM with a fresh head (``minilm``): its scores carry no meaning, but
every stage runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmrag.cli import main
from mmrag.encoders.base import vector_spec
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.store import QdrantStore
from mmrag.types import RerankerSpec
from tests.fakes import HashEncoder

pytestmark = pytest.mark.integration
RERANKER = RerankerSpec("minilm", max_length=64)
DOCS = {
    "dual.txt": "dense passage retrieval with dual encoders embeds queries and passages",
    "cats.txt": "cats sleep on warm windows all afternoon",
    "qdrant.md": "# Qdrant\n\nqdrant is a vector database with payload indexes and sparse vectors",
    "bm25.txt": "bm25 ranks passages by term frequency and inverse document frequency",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    return root


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[dict[str, Any], str]:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


def test_cli_default_search_runs_the_store_model_set(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = str(tmp_path / "store")
    _run(capsys, ["ingest", str(folder), "--store", store, "--quiet"])

    # No reranker yet: the first stage (hybrid: the store has BM25 vectors), and one line saying why.
    res, err = _run(capsys, ["search", "dense passage retrieval", "--store", store, "--k", "3"])
    assert res["hybrid"] is True and res["reranker"] is None
    assert res["fusion"] == "dbsf"  # the default hybrid fusion (docs/search.md: measured against RRF)
    assert all(h["scores"]["fused"] is not None and h["scores"]["rerank"] is None for h in res["hits"])
    # DBSF scores are normalised branch scores (up to 1 per branch); RRF's are at most 2 / 60.
    assert max(h["scores"]["fused"] for h in res["hits"]) > 2 / 60
    rrf, _ = _run(capsys, ["search", "dense passage retrieval", "--store", store, "--fusion", "rrf"])
    assert rrf["fusion"] == "rrf" and rrf["hits"]
    assert all(0 < h["scores"]["fused"] <= 2 / 60 for h in rrf["hits"])
    assert main(["search", "dense passage retrieval", "--store", store, "--rrf-k", "10"]) == 2
    assert "--rrf-k applies to --fusion rrf only" in capsys.readouterr().err  # not silently ignored
    notes = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "no default reranker" in notes[0] and "mmrag model-set" in notes[0]

    ms, _ = _run(capsys, ["model-set", "--store", store, "--reranker", "minilm", "--max-length", "64"])
    assert ms["model_set"]["reranker"] == RERANKER.to_dict() and ms["model_set"]["hybrid"] is True
    info, _ = _run(capsys, ["info", "--store", store])
    assert info["model_set"]["reranker"]["model"] == "minilm"

    # Now plain `mmrag search` runs both stages; each stage's score is kept on the hits (a hit only one
    # hybrid branch found has no score from the other).
    res, err = _run(capsys, ["search", "dense passage retrieval", "--store", store, "--k", "3"])
    assert res["hybrid"] is True and res["reranker"] and "note:" not in err
    scores = [h["scores"] for h in res["hits"]]
    assert all(s["fused"] is not None and s["rerank"] is not None for s in scores)
    assert all(s["dense"] is not None or s["sparse"] is not None for s in scores)
    assert {"encode", "ann", "sparse", "fuse", "rerank", "total"} <= set(res["timings_ms"])

    off, _ = _run(capsys, ["search", "dense passage retrieval", "--store", store, "--no-rerank"])
    assert off["reranker"] is None and all(h["scores"]["rerank"] is None for h in off["hits"])
    dense, _ = _run(
        capsys, ["search", "dense passage retrieval", "--store", store, "--dense-only", "--no-rerank"]
    )
    assert dense["hybrid"] is False and all(h["scores"]["fused"] is None for h in dense["hits"])

    # What the store records, not this process's override; info says when one is in force.
    monkeypatch.setenv("MMRAG_RERANKER", "cross-encoder/other")
    ms, _ = _run(capsys, ["model-set", "--store", store])
    assert ms["model_set"]["reranker"]["model"] == "minilm"
    _, err = _run(capsys, ["info", "--store", store])
    assert "MMRAG_RERANKER / --reranker = cross-encoder/other overrides" in err
    monkeypatch.delenv("MMRAG_RERANKER")
    ms, _ = _run(capsys, ["model-set", "--store", store, "--fusion-weight", "0"])
    assert ms["model_set"]["reranker"]["fusion_weights"] == {"text": 0.0}

    ms, _ = _run(capsys, ["model-set", "--store", store, "--no-reranker", "--mode", "dense"])
    assert ms["model_set"] == {**ms["model_set"], "reranker": None, "hybrid": False}
    res, _ = _run(capsys, ["search", "cats", "--store", store, "--quiet"])
    assert res["hybrid"] is False and res["reranker"] is None


def test_cli_ingest_records_the_reranker(
    tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    _run(capsys, ["ingest", str(folder), "--store", store, "--quiet", "--reranker", "minilm"])
    with QdrantStore.open(store) as st:
        assert st.meta.model_set().reranker == RerankerSpec("minilm")
    assert main(["model-set", "--store", store, "--reranker", str(tmp_path / "missing")]) == 2
    assert "cannot load cross-encoder" in capsys.readouterr().err  # checked before it is recorded


def _store_with_reranker(path: Path, folder: Path, encoder: HashEncoder) -> str:
    with QdrantStore.open(str(path)) as st:
        IngestRunner(encoder, st, IngestOptions(), progress=False).run([folder])
        st.ensure_vector(vector_spec(encoder))
        st.meta.set_reranker(RERANKER)
    return str(path)


def test_api_default_search_reranks(tmp_path: Path, folder: Path) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from mmrag.api.app import build_app
    from mmrag.api.config import ApiConfig
    from mmrag.config import Settings
    from tests.api.conftest import serve

    enc = HashEncoder()
    store = _store_with_reranker(tmp_path / "store", folder, enc)
    with serve(build_app(Settings(store=store), ApiConfig(), encoder=enc)) as url:
        health = httpx.get(f"{url}/health").json()
        assert health["defaults"] == {"hybrid": True, "rerank": True} and health["reranker"]
        assert health["fusion"] == "dbsf"  # the default hybrid fusion, said where clients can read it
        assert (health["text_batch_precision"], health["text_bf16_traced"], health["text_packed"]) == (
            "fp32", False, False,
        )  # fmt: skip
        hits = httpx.post(f"{url}/search", data={"query": "bm25 ranking", "k": "3"}).json()["hits"]
        assert hits and all(
            h["scores"]["rerank"] is not None and h["scores"]["fused"] is not None for h in hits
        )
        # a bf16 reranker ran its passes as one TorchScript call each (docs/speed.md); fp32 runs eager
        after = httpx.get(f"{url}/health").json()
        assert after["reranker_traced"] is after["reranker"].endswith("#bf16")
        off = httpx.post(f"{url}/search", data={"query": "bm25", "mode": "dense", "rerank": "false"}).json()
        assert all(h["scores"]["rerank"] is None and h["scores"]["fused"] is None for h in off["hits"])
        bad = httpx.post(f"{url}/search", data={"query": "bm25", "mode": "dense", "hybrid": "true"})
        assert bad.status_code == 400 and "contradicts" in bad.json()["error"]


def test_langchain_from_store_runs_both_stages(tmp_path: Path, folder: Path) -> None:
    pytest.importorskip("langchain_core")
    from mmrag.langchain import MmragRetriever

    enc = HashEncoder()
    store = _store_with_reranker(tmp_path / "store", folder, enc)
    lc = MmragRetriever.from_store(store, encoder=enc, k=2)
    try:
        docs = lc.invoke("bm25 ranking")
        assert len(docs) == 2 and all(d.metadata["rerank"] is not None for d in docs)
        assert all(d.metadata["fused"] is not None for d in docs)
        first_only = MmragRetriever(retriever=lc.retriever, k=2, rerank=False).invoke("bm25 ranking")
        assert all(d.metadata["rerank"] is None for d in first_only)
    finally:
        lc.close()
