"""`mmrag search --hybrid/--rerank/--pool/--fusion --json` on real files with the real `lite` encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmrag.cli import main
from tests.rerank.test_cross_encoder import _tiny
from tests.test_cli import _json

pytestmark = pytest.mark.integration


def test_search_hybrid_and_rerank_flags(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for p in sorted((data_dir / "ingest_demo" / "markdown").iterdir())[:3]:
        shutil.copy(p, docs)
    store = str(tmp_path / "store")
    _json(capsys, ["ingest", str(docs), "--store", store])

    base = ["search", "installation instructions", "--store", store, "--k", "8"]
    hyb = _json(capsys, [*base, "--hybrid", "--fusion", "dbsf", "--pool", "10"])
    hits = hyb["hits"]
    assert isinstance(hits, list) and hyb["hybrid"] is True and hyb["fusion"] == "dbsf"
    assert all(h["scores"]["fused"] is not None and h["scores"]["rerank"] is None for h in hits)
    assert any(h["scores"]["sparse"] is not None for h in hits)
    assert set(hyb["timings_ms"]) == {"encode", "ann", "sparse", "fuse", "total"}  # type: ignore[arg-type]

    tiny = _tiny(tmp_path)
    rr = _json(capsys, [*base, "--hybrid", "--rerank", "--reranker", str(tiny), "--pool", "5", "--int8"])
    hits = rr["hits"]
    assert isinstance(hits, list) and len(hits) == 8 and str(rr["reranker"]).endswith("#int8")
    reranked = [h for h in hits if h["scores"]["rerank"] is not None]
    assert len(reranked) == 5 and all(h["ann_rank"] <= 5 for h in reranked)  # never more than --pool
    assert sorted(h["final_rank"] for h in hits) == list(range(1, 9))
    assert [h["ann_rank"] for h in hits[5:]] == [6, 7, 8]  # beyond the pool the first stage's order stays
    assert "rerank" in rr["timings_ms"]  # type: ignore[operator]

    assert main([*base, "--rerank", "--quiet"]) == 2
    assert "--reranker" in capsys.readouterr().err
    text = main([*base, "--hybrid", "--quiet"])
    assert text == 0 and "bm25" in capsys.readouterr().out
