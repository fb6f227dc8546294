"""The cited region of a PDF hit as an image: its page rendered, cropped to the citation's box with a
margin, the chunk's line boxes highlighted. No Streamlit here, so it is testable on its own.

Citation boxes are in PDF page coordinates (points, origin bottom-left, the unrotated page); the page
is rendered unrotated so those coordinates map straight onto pixels, and the crop is turned the way
the page's ``/Rotate`` shows it to a reader.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

from mmrag._lazy import require
from mmrag.ingest.formats.pdf import PDFIUM_LOCK
from mmrag.types import Chunk, Citation

__all__ = ["DEFAULT_MARGIN", "DEFAULT_SCALE", "cited_region"]

log = logging.getLogger(__name__)

DEFAULT_SCALE = 1.5  # 108 dpi: readable on screen, cheap to render
DEFAULT_MARGIN = 18.0  # points around the cited box, so the reader sees some context
_HIGHLIGHT = (255, 214, 10, 90)  # translucent yellow, like a highlighter
_OUTLINE = (209, 73, 91, 255)


def cited_region(chunk: Chunk, *, scale: float = DEFAULT_SCALE, margin: float = DEFAULT_MARGIN) -> Any | None:
    """The cited region of ``chunk`` (a PIL image), or ``None`` when there is none to show: not a
    PDF, no page box in its citation, the file gone, or the box off the page. A text chunk's line
    boxes are highlighted; a figure is outlined only.

    Example:
        >>> img = cited_region(hit.chunk)  # doctest: +SKIP
        >>> img.size  # doctest: +SKIP
        (742, 180)
    """
    cite = chunk.citation
    if cite is None or cite.page is None or cite.bbox is None or not chunk.source.lower().endswith(".pdf"):
        return None
    path = Path(chunk.source)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    # A figure is outlined, not painted over: its colours are what the reader came to see.
    return _render(str(path), mtime, cite, scale, margin, chunk.modality == "text")


@functools.lru_cache(maxsize=64)
def _render(path: str, mtime: int, cite: Citation, scale: float, margin: float, fill: bool) -> Any | None:
    # ``mtime`` is part of the cache key only: a re-saved file is rendered again.
    pdfium = require("pypdfium2", "pdf")
    image_draw = require("PIL.ImageDraw", "core")
    assert cite.page is not None and cite.bbox is not None  # checked by the caller
    with PDFIUM_LOCK:  # pdfium is not thread-safe; Streamlit serves sessions on threads
        try:
            doc = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            log.warning("cannot open %s to show its cited region: %s", path, exc)
            return None
        try:
            if not 1 <= cite.page <= len(doc):
                return None
            page = doc[cite.page - 1]
            rotation = page.get_rotation()
            left, _bottom, _right, top = page.get_cropbox()
            # Undo the page's own rotation: the render then shares the citation's coordinates.
            image = page.render(scale=scale, rotation=(360 - rotation) % 360).to_pil().convert("RGB")
            page.close()
        finally:
            doc.close()

    def px(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return (
            (box[0] - left) * scale,
            (top - box[3]) * scale,
            (box[2] - left) * scale,
            (top - box[1]) * scale,
        )

    x0, y0, x1, y1 = px(cite.bbox)
    crop = (
        max(0, int(x0 - margin * scale)),
        max(0, int(y0 - margin * scale)),
        min(image.width, int(x1 + margin * scale) + 1),
        min(image.height, int(y1 + margin * scale) + 1),
    )
    if crop[2] - crop[0] < 2 or crop[3] - crop[1] < 2:
        return None  # the box lies off the page (some PDFs draw figures outside it)
    overlay = image.convert("RGBA")
    layer = require("PIL.Image", "core").new("RGBA", overlay.size, (0, 0, 0, 0))
    draw = image_draw.Draw(layer)
    for box in cite.boxes if fill else ():
        draw.rectangle(px(box), fill=_HIGHLIGHT)
    draw.rectangle((x0 - 2, y0 - 2, x1 + 2, y1 + 2), outline=_OUTLINE, width=2)
    overlay.alpha_composite(layer)
    region = overlay.convert("RGB").crop(crop)
    return region.rotate(-rotation, expand=True) if rotation else region
