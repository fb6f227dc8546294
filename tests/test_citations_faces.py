"""Citations on the faces that need no server: CLI text / JSON reports, LangChain metadata."""

from __future__ import annotations

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
