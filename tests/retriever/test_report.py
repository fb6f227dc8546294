"""Reports that render themselves: SearchReport (mmrag search), StoreInfo (mmrag info), ingest, verify."""

from __future__ import annotations

from mmrag.ingest.ledger import VerifyReport
from mmrag.retriever.report import SearchReport
from mmrag.store.info import StoreInfo
from mmrag.types import Chunk, Hit, IngestSummary, SkippedFile


def _hit(rank: int, was: int, **scores: float | None) -> Hit:
    c = Chunk(f"id{rank}", "text", "/d/a.pdf", "line one\nline two", None, {"page": 3})
    s: dict[str, float | None] = {"dense": None, "sparse": None, "fused": None, "rerank": None} | scores
    return Hit(c, s["dense"], s["sparse"], s["fused"], s["rerank"], ann_rank=was, final_rank=rank, vector="v")


def test_search_report_json_and_text() -> None:
    hits = [_hit(1, 2, dense=0.5, rerank=3.25), _hit(2, 1, dense=0.75)]
    r = SearchReport(
        query="q", image=None, encoder="lite", aligned=False, hybrid=False, fusion=None,
        reranker="ce", hits=hits, timings={"encode": 0.001234, "total": 0.002},
    )  # fmt: skip
    d = r.to_dict()
    assert list(d) == [
        "query",
        "image",
        "encoder",
        "aligned",
        "hybrid",
        "fusion",
        "reranker",
        "hits",
        "timings_ms",
    ]
    assert d["timings_ms"] == {"encode": 1.23, "total": 2.0} and d["hits"][0]["scores"]["rerank"] == 3.25
    assert r.to_text().splitlines() == [
        " 1. (was 2) dense 0.500 rerank 3.250 [text] /d/a.pdf p.3",
        "    line one line two",
        " 2. (was 1) dense 0.750 [text] /d/a.pdf p.3",
        "    line one line two",
    ]
    img = SearchReport(
        query=None, image="x.jpg", encoder="lite", aligned=False, hybrid=False, fusion=None,
        reranker=None, hits=[],
    )  # fmt: skip
    assert img.to_text().splitlines()[0].startswith("note: this encoder's image/text heads are untrained")
    assert img.to_text().endswith("no results (is the store empty? run `mmrag ingest PATH`)")


def test_store_info_keeps_every_stats_key() -> None:
    stats = {
        "location": "/s", "points": 3, "by_modality": {"text": 2, "image": 1}, "sources": 2,
        "vectors": {"v": {"dim": 4, "spec": "lite", "aligned": False}}, "default_vector": "v",
        "tenancy": False, "indexed_vectors": 0, "new_key": 1,
    }  # fmt: skip
    info = StoreInfo.from_stats(stats)
    assert info.to_dict() == stats and list(info.to_dict()) == list(stats)
    assert info.to_text().splitlines() == [
        "store: /s",
        "points: 3 {'text': 2, 'image': 1}",
        "sources: 2",
        "default vector: v",
        "  vector v: dim 4, model lite, aligned False",
    ]


def test_ingest_and_verify_text() -> None:
    s = IngestSummary(files_seen=2, files_loaded=1, embedded=1, written=1, vector="v", seconds=1.26)
    s.skipped.append(SkippedFile("b.jpg", "corrupt"))
    assert s.to_text("/st", 7).splitlines() == [
        "files: 2 seen, 1 loaded, 1 skipped",
        "chunks: 0 text, 0 image (0 already stored)",
        "embedded 1, written 1 into /st (vector v); 7 points in store; 1.3 s",
        "files: 0 new, 0 changed, 0 unchanged; 0 stale chunks deleted, 0 files pruned",
        "  skipped b.jpg: corrupt",
    ]
    bad = VerifyReport(ok=False, missing_in_store=["a", "b"], repaired={"pending": 1})
    assert bad.to_text().splitlines()[2:] == [
        "missing in store: 2; missing in ledger: 0",
        "missing vectors: {}; untracked vectors: {}",
        "MISMATCH (run `mmrag verify --repair`)",
        "repaired: {'pending': 1}",
    ]
    assert VerifyReport().to_text().endswith("OK: ledger == store")
