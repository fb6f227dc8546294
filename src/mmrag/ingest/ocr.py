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


def ocr_words(image: Any, lang: str = "eng") -> tuple[str, list[tuple[str, tuple[int, int, int, int]]]]:
    """Text of a PIL image as :func:`ocr_image` reads it, and its words with their pixel boxes
    ``(left, top, right, bottom)``, from one Tesseract run (its txt and tsv outputs together).

    Raises:
        LoaderError: As :func:`ocr_image`.
    """
    if not available():
        raise LoaderError(unavailable_reason())
    pytesseract: Any = importlib.import_module("pytesseract")
    try:
        text, tsv = pytesseract.run_and_get_multiple_output(
            image.convert("L"), ["txt", "tsv"], lang=lang, timeout=_TIMEOUT_S
        )
    except RuntimeError as exc:  # pytesseract raises RuntimeError on timeout
        raise LoaderError(f"OCR timed out after {_TIMEOUT_S} s") from exc
    except pytesseract.TesseractError as exc:
        raise LoaderError(f"OCR failed: {exc}") from exc
    words: list[tuple[str, tuple[int, int, int, int]]] = []
    for line in str(tsv).splitlines()[1:]:
        # level page block par line word left top width height conf text; level 5 is a word
        cols = line.split("\t")
        if len(cols) == 12 and cols[0] == "5" and cols[11].strip():
            left, top, width, height = (int(v) for v in cols[6:10])
            words.append((cols[11], (left, top, left + width, top + height)))
    return str(text), words
