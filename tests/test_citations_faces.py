"""Citations on the faces that need no server: CLI text / JSON reports, LangChain metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.retriever.report import SearchReport
from mmrag.types import Chunk, Citation, Hit

PDF = Chunk(
    "a",
    "text",
    "/d/a.pdf",
    "pdf text",
    None,
    {"page": 3},
    Citation(3, (72.0, 500.0, 540.0, 620.5), ((72.0, 500.0, 540.0, 620.5),), (612.0, 792.0)),
)
MD = Chunk(
    "b",
    "text",
    "/d/b.md",
    "md text",
    None,
    {"headings": ["Intro", "Setup"]},
    Citation(headings=("Intro", "Setup")),
)
TXT = Chunk("c", "text", "/d/c.txt", "plain", None, {})


def _hits() -> list[Hit]:
    return [Hit(c, 0.9 - i / 10, None, None, None, i + 1, i + 1) for i, c in enumerate((PDF, MD, TXT))]


def test_search_report_shows_citations() -> None:
    r = SearchReport(
        query="q",
        image=None,
        encoder="e",
        aligned=True,
        hybrid=False,
        fusion=None,
        reranker=None,
        hits=_hits(),
    )
    lines = r.to_text().splitlines()
    assert lines[0].endswith("[text] /d/a.pdf p. 3, bbox (72.0, 500.0, 540.0, 620.5)")
    assert lines[2].endswith("[text] /d/b.md Intro › Setup")
    assert lines[4].endswith("[text] /d/c.txt")
    hits = r.to_dict()["hits"]
    assert hits[0]["citation"] == {
        "page": 3,
        "bbox": [72.0, 500.0, 540.0, 620.5],
        "boxes": [[72.0, 500.0, 540.0, 620.5]],
        "page_size": [612.0, 792.0],
        "headings": [],
    }
    assert hits[1]["citation"]["headings"] == ["Intro", "Setup"] and hits[2]["citation"] is None


def test_langchain_documents_carry_the_citation() -> None:
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    from mmrag.langchain import hit_to_document

    pdf, md, txt = (hit_to_document(h).metadata for h in _hits())
    assert (
        pdf["page"] == 3 and pdf["bbox"] == [72.0, 500.0, 540.0, 620.5] and pdf["page_size"] == [612.0, 792.0]
    )
    assert pdf["boxes"] == [[72.0, 500.0, 540.0, 620.5]] and pdf["headings"] == []
    assert md["headings"] == ["Intro", "Setup"] and md["bbox"] is None and md["page"] is None
    assert txt["bbox"] is None and txt["boxes"] == [] and txt["headings"] == []  # the keys are always there


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_ingested_citations_reach_langchain_on_both_backends(backend: str, tmp_path: Path) -> None:
    """Real ingest (a generated PDF and a Markdown file) into Edge and qdrant-client ``:memory:``;
    LangChain documents cite the PDF's page and line boxes and the Markdown heading path."""
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    from mmrag.ingest import IngestRunner
    from mmrag.langchain import MmragRetriever
    from mmrag.retriever import Retriever
    from mmrag.store import QdrantStore
    from tests.fakes import HashEncoder
    from tests.pdf_maker import make_pdf

    pdf, md = tmp_path / "paper.pdf", tmp_path / "guide.md"
    pdf.write_bytes(make_pdf([([(72, 300, "bounding boxes cite pages"), (72, 280, "line by line")], [])]))
    md.write_text("# Guide\n\n## Setup\n\nInstall the tool before anything else.\n")
    enc = HashEncoder()
    with QdrantStore.open(str(tmp_path / "store") if backend == "edge" else ":memory:") as store:
        IngestRunner(enc, store, progress=False).run([pdf, md])
        lc = MmragRetriever(retriever=Retriever(enc, store, pool=5), k=1)
        (doc,) = lc.invoke("bounding boxes cite pages")
        m = doc.metadata
        assert m["source"] == str(pdf.resolve()) and m["page"] == 1 and len(m["boxes"]) == 2
        assert m["bbox"][0] == pytest.approx(72, abs=1) and m["page_size"] == [300.0, 400.0]
        (doc,) = lc.invoke("install the tool")
        assert doc.metadata["headings"] == ["Guide", "Setup"] and doc.metadata["bbox"] is None
