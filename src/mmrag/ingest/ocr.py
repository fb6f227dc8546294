"""OCR through the Tesseract binary (Debian ``tesseract-ocr``) and pytesseract.

OCR is optional: without the binary or the ``ocr`` extra, :func:`available` is False and the
loaders skip scanned pages with a reason saying what to install.
"""

from __future__ import annotations

import functools
import importlib
import logging
import shutil
from typing import Any

from mmrag.errors import LoaderError

log = logging.getLogger(__name__)

INSTALL_HINT = "install OCR: apt-get install tesseract-ocr && pip install 'mmrag[ocr]'"
# Tesseract reads ~300 dpi best; pages are rendered at this scale (72 dpi PDF units).
PDF_RENDER_SCALE = 300 / 72
_TIMEOUT_S = 60


@functools.cache
def available() -> bool:
    """Whether OCR can run here (the tesseract binary and pytesseract are both present)."""
    if shutil.which("tesseract") is None:
        return False
    try:
        importlib.import_module("pytesseract")
    except ImportError:
        return False
    return True


def unavailable_reason() -> str:
    return f"needs OCR, which is not available here ({INSTALL_HINT})"


def ocr_image(image: Any, lang: str = "eng") -> str:
    """Text of a PIL image (empty if none is found).

    Raises:
        LoaderError: If OCR is unavailable, times out, or tesseract fails on the image.
    """
    if not available():
        raise LoaderError(unavailable_reason())
    pytesseract: Any = importlib.import_module("pytesseract")
    try:
        text = pytesseract.image_to_string(image.convert("L"), lang=lang, timeout=_TIMEOUT_S)
    except RuntimeError as exc:  # pytesseract raises RuntimeError on timeout
        raise LoaderError(f"OCR timed out after {_TIMEOUT_S} s") from exc
    except pytesseract.TesseractError as exc:
        raise LoaderError(f"OCR failed: {exc}") from exc
    return str(text)
