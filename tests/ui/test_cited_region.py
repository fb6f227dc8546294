"""The UI's cited region: the PDF page rendered, cropped to the citation's box, lines highlighted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.loaders import load_file
from mmrag.types import Citation
from mmrag.ui.citations import DEFAULT_MARGIN, DEFAULT_SCALE, cited_region
from tests.pdf_maker import make_pdf


def test_cited_region_crops_the_box_with_a_margin_and_highlights_it(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(
        make_pdf([([(72, 300, "Hello citation world"), (72, 280, "second line here")], [(150, 60, 120, 96)])])
    )
    text, figure = load_file(path, opts=ChunkingOptions())
    assert text.citation is not None and text.citation.bbox is not None
    img = cited_region(text)
    assert img is not None
    x0, y0, x1, y1 = text.citation.bbox
    # the box plus the margin on each side, at the render scale (the page is large enough here)
    assert abs(img.width - (x1 - x0 + 2 * DEFAULT_MARGIN) * DEFAULT_SCALE) <= 3
    assert abs(img.height - (y1 - y0 + 2 * DEFAULT_MARGIN) * DEFAULT_SCALE) <= 3
    px = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    yellowish = ((px[:, 0] > 200) & (px[:, 1] > 180) & (px[:, 2] < 190)).sum()
    dark = (px.sum(axis=1) < 200).sum()  # the glyphs
    assert yellowish > 0.2 * len(px) and dark > 50
    # the figure's own crop shows the image (its blue and red squares)
    fig = cited_region(figure)
    assert fig is not None
    fpx = np.asarray(fig.convert("RGB")).reshape(-1, 3).astype(int)
    assert ((fpx[:, 2] > 150) & (fpx[:, 0] < 80)).sum() > 1000 and (
        (fpx[:, 0] > 180) & (fpx[:, 2] < 80)
    ).sum() > 1000


def test_no_region_where_there_is_nothing_to_show(tmp_path: Path) -> None:
    path = tmp_path / "doc.pdf"
    path.write_bytes(make_pdf([([(72, 300, "Hello")], [])]))
    (chunk,) = load_file(path, opts=ChunkingOptions())
    assert cited_region(replace(chunk, citation=None)) is None
    assert cited_region(replace(chunk, citation=Citation(page=1))) is None  # no box
    off_page = Citation(page=1, bbox=(900.0, 900.0, 950.0, 950.0))
    assert cited_region(replace(chunk, citation=off_page)) is None
    assert cited_region(replace(chunk, citation=replace(chunk.citation, page=7))) is None  # no such page
    assert cited_region(replace(chunk, source=str(tmp_path / "gone.pdf"))) is None
    md = tmp_path / "a.md"
    md.write_text("# A\n\ntext\n")
    assert cited_region(load_file(md, opts=ChunkingOptions())[0]) is None  # not a PDF
