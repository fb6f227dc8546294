"""Images (``.jpg``, ``.png``, ``.webp``, ...): one image chunk, its caption, OCR for document scans.

The caption comes from the caller's mapping (file name → captions), else a sidecar
``<stem>.txt`` / ``<stem>.caption``, else, for a document-like image (a page scan, a table
screenshot), its OCR text; the scan's words are also stored as text chunks. Photos are never
OCR'd: the heuristic below tells them apart by their colours.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from pathlib import Path
from typing import Any

from mmrag.errors import LoaderError
from mmrag.ingest import ocr
from mmrag.ingest.chunking import split_text
from mmrag.ingest.formats.common import Captions, Loaded, LoadOptions, RawFile, decode_text
from mmrag.types import Chunk, chunk_id

log = logging.getLogger(__name__)

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

_CAPTION_SIDECARS = (".txt", ".caption")
_CAPTION_CHARS = 400
# Document scans are mostly bright, unsaturated paper; photos rarely are. Only those are OCR'd.
_DOC_BRIGHT_FRACTION = 0.55
_OCR_MIN_WORDS = 5
# Side (px) an image is decoded at for embedding: 3x a 224 px tower input (2x the largest, 336 px),
# which keeps the embedding within cosine ~0.998 of a full decode (bench_image_path.py, test_lite.py).
_EMBED_SIDE = 672


def caption_for(path: Path, captions: Captions | None) -> tuple[str | None, str | None]:
    """Return ``(caption, where it came from)`` from the mapping, else a sidecar file."""
    if captions is not None:
        known = [" ".join(c.split()) for c in captions.get(path.name, ())]
        joined = " | ".join(c for c in known if c)
        if joined:
            return joined, "mapping"
    for ext in _CAPTION_SIDECARS:
        sidecar = path.with_suffix(ext)
        if not sidecar.is_file():
            continue
        try:
            text = " ".join(decode_text(sidecar.read_bytes()).split())
        except (OSError, LoaderError) as exc:
            # A broken sidecar should not cost us the image itself.
            log.warning("ignoring unreadable caption file %s: %s", sidecar, exc)
            continue
        if text:
            return text, "sidecar"
    return None, None


def _decode(data: bytes, max_pixels: int, draft: int | None = None) -> tuple[Any, int, int, str | None]:
    """The image as RGB, its size and format, after the checks that keep bad files out.

    With ``draft``, a JPEG is decoded at the smallest 1/2..1/8 scale whose sides are both still
    >= ``draft`` pixels (libjpeg's DCT scaling): the whole file is still read, so a truncated one
    still fails, at a fraction of the cost for a large photo.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow is core; imported late to keep startup light

    bad = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, EOFError, ValueError)
    try:
        with warnings.catch_warnings():
            # Pillow warns about big images on open; the explicit limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            width, height = img.size  # from the header: no pixels decoded yet
            if width * height > max_pixels:
                raise LoaderError(
                    f"image is {width}x{height} = {width * height / 1e6:.0f} Mpx, over the "
                    f"{max_pixels / 1e6:g} Mpx limit (possible decompression bomb)"
                )
            img.verify()  # checks structure (PNG CRCs...) without decoding pixels
        # verify() leaves the image unusable, and truncated JPEGs only fail on a full decode.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if draft:
                    img.draft("RGB", (draft, draft))
                img.load()
                kind = img.format
                decoded = img.convert("RGB")
    except LoaderError:
        raise
    except (*bad, struct.error, Image.DecompressionBombWarning) as exc:
        raise LoaderError(f"corrupt image: {exc}") from exc
    return decoded, width, height, kind


def load_image(file: RawFile, opts: LoadOptions, captions: Captions | None = None) -> Loaded:
    """The image chunk (plus OCR text chunks for a document scan), with the decoded image.

    Raises:
        LoaderError: A corrupt image, or one over ``opts.max_image_pixels``.
    """
    source, file_hash = file.source, file.digest
    # Decoded for the encoder (which resizes to ~224-336 px) at >= _EMBED_SIDE px; only a document
    # scan that goes to OCR is decoded again at full resolution.
    decoded, width, height, kind = _decode(file.data, opts.max_image_pixels, draft=_EMBED_SIDE)
    caption, caption_source = caption_for(file.path, captions)
    ocr_text = ""
    if opts.ocr_available() and _looks_like_document(decoded):
        full = decoded if decoded.size == (width, height) else _decode(file.data, opts.max_image_pixels)[0]
        ocr_text = _ocr_text(full)
    if caption is None and ocr_text:
        caption, caption_source = " ".join(ocr_text.split())[:_CAPTION_CHARS], "ocr"
    meta: dict[str, Any] = {
        "format": "image",
        "position": 0,
        "file_hash": file_hash,
        "width": width,
        "height": height,
        "image_format": kind,
    }
    if caption_source:
        meta["caption_source"] = caption_source
    image_chunk = Chunk(
        id=chunk_id(source, file_hash, 0),
        modality="image",
        source=source,
        text=caption,
        image=source,
        metadata=meta,
    )
    chunks = [image_chunk]
    if ocr_text:
        # The scan's words as searchable text too (positions after the image's 0).
        pieces = split_text(ocr_text, opts.chunking)
        chunks += [
            Chunk(
                id=chunk_id(source, piece, f"ocr:{i}"),
                modality="text",
                source=source,
                text=piece,
                image=None,
                metadata={"format": "image", "position": i + 1, "file_hash": file_hash, "ocr": True},
            )
            for i, piece in enumerate(pieces)
        ]
    return Loaded(chunks, {image_chunk.id: decoded})


def _looks_like_document(image: Any) -> bool:
    """Mostly bright, unsaturated pixels: a page scan or a table, not a photo.

    HSV's value (the brightest channel) and saturation ((max - min) / max), read with numpy from
    the image box-reduced to ~64-127 px: Pillow's HSV conversion took ~0.7 ms on a 224 px photo,
    a parsing thread's largest cost beside the encoder.
    """
    import numpy as np  # numpy is core; kept local like Pillow

    factor = max(1, max(image.size) // 64)
    small = image.reduce(factor) if factor > 1 else image
    r, g, b = (np.asarray(band, dtype=np.int32) for band in small.convert("RGB").split())
    hi, lo = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    bright = float(np.mean(hi >= 200))
    grey = float(np.mean((hi - lo) * 255 < 40 * np.maximum(hi, 1)))  # saturation < 40 of 255
    return bright >= _DOC_BRIGHT_FRACTION and grey >= _DOC_BRIGHT_FRACTION


def _ocr_text(image: Any) -> str:
    """The OCR text of a document image (the caller has checked it looks like one), if long enough."""
    text = ocr.ocr_image(image)
    return text if len(text.split()) >= _OCR_MIN_WORDS else ""
