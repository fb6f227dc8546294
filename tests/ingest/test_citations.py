"""Citations made at ingest: PDF page boxes (text layer, figures, OCR), HTML / Markdown heading paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.ingest import ocr
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.formats.spans import ink, line_boxes, locate
from mmrag.ingest.loaders import load_file
from mmrag.types import Chunk, Citation
from tests.pdf_maker import make_pdf

OPTS = ChunkingOptions()
pdfium = pytest.importorskip("pypdfium2", reason="the pdf extra is not installed")


def _pdf(tmp_path: Path) -> Path:
    path = tmp_path / "cite.pdf"
    page1 = ([(72, 300, "Hello citation world"), (72, 280, "second line here")], [(150, 100, 120, 96)])
    page2 = ([(40, 350, "Page two text")], [])
    path.write_bytes(make_pdf([page1, page2]))
    return path


def test_pdf_text_and_figure_boxes_are_where_they_were_drawn(tmp_path: Path) -> None:
    text1, text2, figure = load_file(_pdf(tmp_path), opts=OPTS)
    c1 = text1.citation
    assert text1.text == "Hello citation world second line here" and c1 is not None
    assert c1.page == 1 and c1.page_size == (300.0, 400.0)
    assert len(c1.boxes) == 2  # one box per line, in reading order
    first, second = c1.boxes
    # Helvetica 12 at baseline 300 / 280 from x = 72: the loose boxes hold the baseline and the caps.
    assert first[0] == pytest.approx(72, abs=1) and first[1] < 300 < first[3] <= 313
    assert second[0] == pytest.approx(72, abs=1) and second[1] < 280 < second[3] <= 293
    assert first[2] > second[2] > 72 + 60  # "Hello citation world" is the longer line
    assert c1.bbox == (first[0], second[1], max(first[2], second[2]), first[3])
    assert text2.citation is not None and text2.citation.page == 2
    assert text2.citation.bbox is not None and text2.citation.bbox[0] == pytest.approx(40, abs=1)
    assert figure.modality == "image" and figure.citation == Citation(
        page=1,
        bbox=(150.0, 100.0, 270.0, 196.0),
        boxes=((150.0, 100.0, 270.0, 196.0),),
        page_size=(300.0, 400.0),
    )
    assert list(figure.metadata["bbox"]) == list(figure.citation.bbox or ())


def _alnum(text: str) -> str:
    return "".join(ch for ch in ink(text) if ch.isalnum())


def test_real_pdf_boxes_hold_the_chunks_text(data_dir: Path) -> None:
    """On real papers, the text pdfium finds inside each chunk's first and last line box is text
    of that chunk: the boxes point at the right place on the right page."""
    checked = missed = 0
    for name in ("layoutparser-paper-2p.pdf", "dpr-paper-karpukhin2020.pdf"):
        path = data_dir / "ingest_demo" / "pdf" / name
        chunks = load_file(path, opts=OPTS)
        doc = pdfium.PdfDocument(str(path))
        try:
            for c in chunks:
                cite = c.citation
                assert cite is not None and cite.page == c.metadata["page"], c.id
                assert cite.bbox is not None and cite.boxes, f"{name}: a chunk without boxes"
                if c.modality != "text":
                    continue
                textpage = doc[cite.page - 1].get_textpage()
                for x0, y0, x1, y1 in (cite.boxes[0], cite.boxes[-1]):
                    # the box's middle band, inset: no neighbouring line or glyph leaks in (nor
                    # the low punctuation: letters and digits only)
                    if x1 - x0 >= y1 - y0:
                        mid = (y0 + y1) / 2
                        band = {"left": x0 + 2, "bottom": mid - 1, "right": x1 - 2, "top": mid + 1}
                    else:  # vertical text (the arXiv stamp in the margin)
                        mid = (x0 + x1) / 2
                        band = {"left": mid - 1, "bottom": y0 + 2, "right": mid + 1, "top": y1 - 2}
                    found = _alnum(textpage.get_text_bounded(**band))
                    if len(found) > 3:  # a formula's last glyph may hold no letter at all
                        checked += 1
                        missed += found not in _alnum(c.text or "")
        finally:
            doc.close()
    # Formulas are the exception: sub- and superscripts are read in another order in a band.
    assert checked > 160 and missed <= 0.03 * checked, (checked, missed)


def test_ocr_scan_carries_the_word_boxes(data_dir: Path) -> None:
    if not ocr.available():
        pytest.skip(ocr.unavailable_reason())
    chunks = load_file(data_dir / "ingest_demo" / "pdf" / "scanned-table-no-text-layer.pdf", opts=OPTS)
    text = next(c for c in chunks if c.modality == "text")
    scan = next(c for c in chunks if c.modality == "image")
    assert text.metadata.get("ocr") is True
    assert text.citation is not None and text.citation.page == 1 and len(text.citation.boxes) >= 2
    # The OCR'd words lie on the scanned image drawn on the page.
    (tx0, ty0, tx1, ty1), (sx0, sy0, sx1, sy1) = text.citation.bbox, scan.citation.bbox  # type: ignore[misc]
    assert sx0 - 2 <= tx0 < tx1 <= sx1 + 2 and sy0 - 2 <= ty0 < ty1 <= sy1 + 2


def _html(tmp_path: Path) -> Path:
    def words(tag: str) -> str:  # a section's own words: a chunk's first word names its section
        return " ".join(f"{tag}{i}" for i in range(60))

    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>T</title></head><body>"
        "<nav><h1>Site menu</h1></nav>"
        f"<p>Before any heading. {words('before')}</p>"
        f"<h1>Intro</h1><p>{words('intro')}</p>"
        f"<h2>Setup</h2><p>{words('setup')}</p>"
        f"<h2>Usage <em>basics</em></h2><p>{words('usage')}</p>"
        f"<h3>Details</h3><p>{words('details')}</p>"
        f"<h1>Results</h1><p>Results text, also about Setup. {words('results')}</p>"
        "</body></html>"
    )
    return path


EXPECTED_PATHS = {
    "before": None,  # before the first heading: nothing to cite
    "intro": ("Intro",),
    "setup": ("Intro", "Setup"),
    "usage": ("Intro", "Usage basics"),  # a sibling replaces, inline markup kept
    "details": ("Intro", "Usage basics", "Details"),
    "results": ("Results",),  # a new top level resets the path
}


def test_html_chunks_carry_the_heading_path_where_they_start(tmp_path: Path) -> None:
    chunks = load_file(_html(tmp_path), opts=ChunkingOptions(words=25, overlap=5))
    assert len(chunks) > 12
    for c in chunks:
        first = (c.text or "").split()[0].lower().rstrip(".,0123456789")
        path = c.citation.headings if c.citation else None
        assert path == EXPECTED_PATHS[first], (c.text, path)
    assert "Site" not in str([c.citation for c in chunks])  # the dropped <nav> has no say
    assert all("\ue000" not in (c.text or "") for c in chunks)  # the heading marks never reach the text


def test_markdown_chunks_cite_their_heading_path(data_dir: Path) -> None:
    chunks = load_file(data_dir / "ingest_demo" / "markdown" / "itm-flickr8k-project-README.md", opts=OPTS)
    for c in chunks:
        assert c.citation is not None and list(c.citation.headings) == c.metadata["headings"]
    assert any(len(c.citation.headings) >= 3 for c in chunks if c.citation)


def test_locate_and_line_boxes() -> None:
    hay = ink("alpha beta\n gamma delta epsilon")
    assert locate(hay, [ink("beta gamma"), ink("delta epsilon"), ink("zeta")]) == [(5, 14), (14, 26), None]
    # Same line merges; a jump back left (next line or column) starts a new box.
    boxes = line_boxes([(0, 0, 5, 10), (5, 1, 9, 10), (0, -12, 4, -2), (0, 0, 0, 0), (100, -12, 104, -2)])
    assert boxes == [(0, 0, 9, 10), (0, -12, 104, -2)]


def test_citation_json_round_trip_and_text() -> None:
    c = Citation(page=3, bbox=(1.0, 2.0, 3.0, 4.0), boxes=((1.0, 2.0, 3.0, 4.0),), page_size=(612.0, 792.0))
    assert Citation.from_dict(c.to_dict()) == c
    assert c.to_text() == "p. 3, bbox (1.0, 2.0, 3.0, 4.0)"
    assert Citation(headings=("Intro", "Setup")).to_text() == "Intro › Setup"
    broken = Citation.from_dict(
        {"page": "x", "bbox": [1, 2], "boxes": [[1, 2, 3, 4], "no"], "page_size": None}
    )
    assert broken == Citation(boxes=((1.0, 2.0, 3.0, 4.0),))
    # the citation is not part of the id, and defaults to None
    chunk = Chunk("i", "text", "s", "t", None)
    assert chunk.citation is None
