"""The API's hits carry their citation: page and boxes for a PDF, the heading path for Markdown."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import AppFactory, serve
from tests.pdf_maker import make_pdf


def test_search_hits_carry_citations(make_app: AppFactory, client_for: Any) -> None:
    pdf = make_pdf([([(72, 300, "citations point at the page"), (72, 280, "and the box on it")], [])])
    md = b"# Guide\n\n## Setup\n\nInstall the heading path tool first.\n"
    app = make_app()
    with serve(app) as url, client_for(url) as c:
        files = [
            ("files", ("paper.pdf", pdf, "application/pdf")),
            ("files", ("guide.md", md, "text/markdown")),
        ]
        r = c.post("/ingest", files=files)
        assert r.status_code == 200 and r.json()["written"] == 3, r.text  # the md: two sections
        hits = c.post("/search", data={"query": "citations page box", "k": "1"}).json()["hits"]
        cite = hits[0]["citation"]
        assert hits[0]["source"].endswith("paper.pdf")
        assert cite["page"] == 1 and cite["page_size"] == [300.0, 400.0] and len(cite["boxes"]) == 2
        x0, y0, _, y1 = cite["bbox"]
        assert abs(x0 - 72) < 1 and y0 < 280 < 300 < y1 and cite["headings"] == []
        hits = c.post("/search", data={"query": "install heading path tool", "k": "1"}).json()["hits"]
        assert hits[0]["source"].endswith("guide.md")
        assert hits[0]["citation"]["headings"] == ["Guide", "Setup"] and hits[0]["citation"]["bbox"] is None
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert "citation" in schema["HitOut"]["properties"] and "CitationOut" in schema
