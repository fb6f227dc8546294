"""PDF (``.pdf``, pypdfium2): text per page, embedded figures as image chunks, OCR for scans.

* Pages with a text layer give text chunks tagged with their page number.
* Images drawn on a page (pypdfium2 page objects) become image chunks, decoded here and handed
  to the encoder in memory; their caption is the page text just below (else above) the figure.
  Icons and rules (small images) and a page-sized scan behind a text layer are not figures.
* Pages without a text layer are rendered at 300 dpi and OCR'd (Tesseract) when available;
  otherwise they are skipped, and a PDF with no text at all fails with a reason naming what to
  install.
* Every chunk carries a :class:`~mmrag.types.Citation`: its page, the page size and its boxes in
  PDF page coordinates (a text chunk's line boxes from pdfium's character boxes, or from the OCR
  word boxes of a scan; a figure's own box).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mmrag._lazy import require
from mmrag.errors import LoaderError
from mmrag.ingest import ocr
from mmrag.ingest.formats.common import Captions, Loaded, LoadOptions, RawFile, text_chunks
from mmrag.ingest.formats.spans import MAX_BOXES, Box, ink, ink_tagged, line_boxes, locate, union
from mmrag.types import Chunk, Citation, chunk_id

EXTENSIONS = frozenset({".pdf"})

# pdfium is not thread-safe: one document at a time across the reader's worker threads.
PDFIUM_LOCK = threading.Lock()
_CAPTION_BAND = 72.0  # points (1 inch) above/below a figure searched for its caption
_CAPTION_CHARS = 400
_MIN_FIGURE_PX = 64
_MIN_FIGURE_AREA = 0.01  # of the page
_SCAN_AREA = 0.85  # an image covering this much of a page with text is the scan behind it


@dataclass(slots=True)
class PdfPage:
    """One page as read: its text, figures, and the ink of its text with each ink character's box."""

    number: int
    text: str
    ocr: bool = False
    figures: list[tuple[Any, str, tuple[float, float, float, float]]] = field(default_factory=list)
    size: tuple[float, float] = (0.0, 0.0)
    glyphs: str = ""
    glyph_boxes: list[Box] = field(default_factory=list)


def _glyphs(textpage: Any) -> tuple[str, list[Box]]:
    """The page's ink (see :mod:`.spans`) and each ink character's loose box (the font's full
    height, so a line's boxes line up into one highlight)."""
    raw = require("pypdfium2.raw", "pdf")
    chars = ((chr(raw.FPDFText_GetUnicode(textpage, i)), i) for i in range(textpage.count_chars()))
    text, indices = ink_tagged(chars)
    # pdfium's own call with one reused rect: the wrapper's per-call overhead dominates otherwise.
    rect = raw.FS_RECTF()
    boxes: dict[int, Box] = {}
    for i in indices:
        if i not in boxes:
            ok = raw.FPDFText_GetLooseCharBox(textpage, i, rect)
            # a glyph without a box gets an empty one, which line merging skips
            boxes[i] = (rect.left, rect.bottom, rect.right, rect.top) if ok else (0.0, 0.0, 0.0, 0.0)
    return text, [boxes[i] for i in indices]


def _caption(textpage: Any, bounds: tuple[float, float, float, float], width: float, height: float) -> str:
    # The figure's own column (a little wider): in two-column layouts the other column's text
    # at the same height is not about the figure.
    left, bottom, right, top = bounds
    x0, x1 = max(0.0, left - 18), min(width, right + 18)
    below = textpage.get_text_bounded(left=x0, bottom=max(0.0, bottom - _CAPTION_BAND), right=x1, top=bottom)
    text = " ".join(str(below).split())
    if not text:
        above = textpage.get_text_bounded(left=x0, bottom=top, right=x1, top=min(height, top + _CAPTION_BAND))
        text = " ".join(str(above).split())
    return text[:_CAPTION_CHARS]


def _figures(
    page: Any, textpage: Any, has_text: bool, max_pixels: int
) -> list[tuple[Any, str, tuple[float, float, float, float]]]:
    raw = require("pypdfium2.raw", "pdf")
    width, height = page.get_size()
    page_area = max(1.0, width * height)
    out: list[tuple[Any, str, tuple[float, float, float, float]]] = []
    for obj in page.get_objects(filter=(raw.FPDF_PAGEOBJ_IMAGE,), max_depth=3):
        bounds = tuple(float(v) for v in obj.get_bounds())
        area = max(0.0, bounds[2] - bounds[0]) * max(0.0, bounds[3] - bounds[1]) / page_area
        if area < _MIN_FIGURE_AREA or (has_text and area >= _SCAN_AREA):
            continue
        try:
            px_w, px_h = obj.get_px_size()
        except Exception:  # noqa: BLE001  pdfium raises bare errors for broken image streams
            continue
        if min(px_w, px_h) < _MIN_FIGURE_PX or px_w * px_h > max_pixels:
            continue
        try:
            image = obj.get_bitmap(render=False).to_pil().convert("RGB")
        except Exception:  # noqa: BLE001  one undecodable figure must not lose the page text
            continue
        out.append((image, _caption(textpage, bounds, width, height), bounds))  # type: ignore[arg-type]
    return out


def read_pdf(data: bytes, *, figures: bool, use_ocr: bool, max_pixels: int) -> list[PdfPage]:
    """Pages of a PDF with their text (from the text layer or OCR) and figures.

    Raises:
        LoaderError: Corrupt, encrypted or text-less PDFs (the reason says which).
    """
    pdfium = require("pypdfium2", "pdf")
    pages: list[PdfPage] = []
    scans: list[tuple[int, float, Any]] = []
    with PDFIUM_LOCK:
        try:
            doc = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise LoaderError("encrypted PDF (password required)") from exc
            raise LoaderError(f"corrupt or unreadable PDF: {exc}") from exc
        try:
            for index in range(len(doc)):
                page = doc[index]
                textpage = page.get_textpage()
                try:
                    text = str(textpage.get_text_bounded())
                    has_text = bool(text.strip())
                    width, height = page.get_size()
                    entry = PdfPage(index + 1, text, size=(float(width), float(height)))
                    if has_text:
                        entry.glyphs, entry.glyph_boxes = _glyphs(textpage)
                    if figures:
                        entry.figures = _figures(page, textpage, has_text, max_pixels)
                    if not has_text and use_ocr and ocr.available():
                        width, height = page.get_size()
                        # Cap the render so a huge page box cannot become a decompression bomb.
                        scale = min(ocr.PDF_RENDER_SCALE, (max_pixels / max(1.0, width * height)) ** 0.5)
                        scans.append((len(pages), scale, page.render(scale=scale, grayscale=True).to_pil()))
                    pages.append(entry)
                finally:
                    textpage.close()
                    page.close()
        except pdfium.PdfiumError as exc:
            raise LoaderError(f"cannot extract PDF text: {exc}") from exc
        finally:
            doc.close()
    # OCR outside the lock: tesseract runs as a subprocess and may take seconds per page.
    for i, scale, image in scans:
        pages[i].text, words = ocr.ocr_words(image)
        pages[i].ocr = True
        # Pixel boxes (top-left origin) back to page points (bottom-left origin).
        height = pages[i].size[1]
        pages[i].glyphs, pages[i].glyph_boxes = ink_tagged(
            (ch, (x0 / scale, height - y1 / scale, x1 / scale, height - y0 / scale))
            for word, (x0, y0, x1, y1) in words
            for ch in word
        )
    if not any(p.text.strip() for p in pages) and not any(p.figures for p in pages):
        if use_ocr and not ocr.available():
            raise LoaderError(f"PDF has no text layer and {ocr.unavailable_reason()}")
        raise LoaderError("PDF has no text layer" + (" and OCR found no text" if use_ocr else ""))
    return pages


def page_metadata(page: PdfPage) -> Mapping[str, Any]:
    return {"page": page.number, "ocr": True} if page.ocr else {"page": page.number}


def load_pdf(file: RawFile, opts: LoadOptions, captions: Captions | None = None) -> Loaded:
    """Text chunks per page, then one image chunk per figure (with its decoded image).

    Raises:
        LoaderError: As :func:`read_pdf`, or a PDF with neither text nor figures.
        MissingExtraError: Without the ``pdf`` extra (pypdfium2).
    """
    source, file_hash = file.source, file.digest
    pages = read_pdf(file.data, figures=opts.pdf_images, use_ocr=opts.ocr, max_pixels=opts.max_image_pixels)
    chunks: list[Chunk] = []
    if any(p.text.strip() for p in pages):
        chunks = text_chunks(
            source,
            [(p.text, page_metadata(p)) for p in pages],
            fmt="pdf",
            file_hash=file_hash,
            opts=opts.chunking,
            id_position=lambda _pos, local, extra: f"p{extra['page']}:{local}",
        )
        chunks = cite_text(chunks, pages)
    images: dict[str, Any] = {}
    for p in pages:
        for k, (image, caption, bounds) in enumerate(p.figures):
            ref = f"{source}#page={p.number}&image={k + 1}"
            cid = chunk_id(source, f"{file_hash}:{ref}", f"p{p.number}:img{k + 1}")
            images[cid] = image
            chunks.append(
                Chunk(
                    id=cid,
                    modality="image",
                    source=source,
                    text=caption or None,
                    image=ref,
                    citation=_citation(p, [bounds]),
                    metadata={
                        "format": "pdf",
                        "position": len(chunks),
                        "file_hash": file_hash,
                        "page": p.number,
                        "figure": k + 1,
                        "bbox": [round(v, 1) for v in bounds],
                        "width": image.width,
                        "height": image.height,
                        "caption_source": "page_text" if caption else None,
                    },
                )
            )
    if not chunks:
        raise LoaderError("no text or figures found in PDF")
    return Loaded(chunks, images)


def cite_text(chunks: Sequence[Chunk], pages: Sequence[PdfPage]) -> list[Chunk]:
    """``chunks`` (text, each tagged with its page) with their citations: the line boxes of the
    characters each one was cut from (just the page where its text cannot be placed)."""
    out = list(chunks)
    by_page: dict[int, list[int]] = {}
    for i, c in enumerate(out):
        by_page.setdefault(int(c.metadata["page"]), []).append(i)
    for page in pages:
        idx = by_page.get(page.number, [])
        spans = locate(page.glyphs, [ink(out[i].text or "") for i in idx])
        for i, span in zip(idx, spans, strict=True):
            boxes = line_boxes(page.glyph_boxes[span[0] : span[1]]) if span else []
            out[i] = replace(out[i], citation=_citation(page, boxes))
    return out


def _citation(page: PdfPage, boxes: Sequence[Box]) -> Citation:
    def r(box: Box) -> Box:  # 0.1 pt is far below a glyph; shorter payloads
        return (round(box[0], 1), round(box[1], 1), round(box[2], 1), round(box[3], 1))

    bbox = union(boxes)
    return Citation(
        page=page.number,
        bbox=r(bbox) if bbox else None,
        boxes=tuple(r(b) for b in boxes[:MAX_BOXES]),
        page_size=(round(page.size[0], 1), round(page.size[1], 1)),
    )
