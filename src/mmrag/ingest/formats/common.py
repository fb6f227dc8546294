"""What every format loader shares: the records in and out, text decoding, chunk building.

A loader is a function ``(RawFile, LoadOptions, captions) -> Loaded``; it raises
:class:`~mmrag.errors.LoaderError` with a short reason for anything it cannot read, so the
ingest runner can log a skip and move on instead of crashing on one bad file.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrag.errors import LoaderError
from mmrag.ingest import ocr
from mmrag.ingest.chunking import ChunkingOptions, split_text
from mmrag.types import Chunk, chunk_id

log = logging.getLogger(__name__)

Captions = Mapping[str, Sequence[str]]

_UNICODE_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# U+0080-U+009F never occur in real text; they betray UTF-8 that was decoded as Latin-1 and
# re-encoded (mojibake such as "â\x80\x93" for an en dash).
_C1_CONTROLS = re.compile(r"[\x80-\x9f]")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How files become chunks.

    Attributes:
        chunking: Text chunk size and overlap.
        ocr: OCR PDF pages without a text layer and document-like images (needs tesseract).
        pdf_images: Store images embedded in PDF pages as image chunks.
        max_image_pixels: Larger images are skipped as possible decompression bombs.

    Example:
        >>> LoadOptions(ocr=False).chunking.words
        160
    """

    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    ocr: bool = True
    pdf_images: bool = True
    max_image_pixels: int = 64_000_000

    def ocr_available(self) -> bool:
        return self.ocr and ocr.available()


@dataclass(frozen=True, slots=True)
class RawFile:
    """One file as read from disk: its bytes and their SHA-256, computed once by whoever read them.

    Attributes:
        path: The file as named (its name finds the image's caption and sidecar).
        source: The chunks' ``source`` (the resolved path, unless the caller names another).
        data: The file's bytes.
        digest: Hex SHA-256 of ``data`` (:func:`mmrag.types.content_hash`): the ledger's file
            hash, the chunks' ``file_hash`` and part of image chunk ids.

    Example:
        >>> RawFile(Path("a.txt"), "/docs/a.txt", b"hi", content_hash(b"hi"))  # doctest: +SKIP
    """

    path: Path
    source: str
    data: bytes
    digest: str


@dataclass(slots=True)
class Loaded:
    """One file's chunks, plus decoded images keyed by chunk id (figures extracted from PDFs
    and already-checked photos) so that the encoder does not decode them again."""

    chunks: list[Chunk]
    images: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[RawFile, LoadOptions, "Captions | None"], Loaded]


# --------------------------------------------------------------------------- text decoding


def decode_text(data: bytes) -> str:
    """Decode file bytes as text: UTF-8 (BOM or not), else a detected encoding.

    Raises:
        LoaderError: Binary content, or bytes no encoding explains.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LoaderError("not valid UTF-16 text despite its byte-order mark") from exc
    if b"\x00" in data:
        raise LoaderError("binary content (NUL bytes); not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _detect_and_decode(data)
    return _repair_mojibake(text)


def _detect_and_decode(data: bytes) -> str:
    try:
        charset_normalizer: Any = importlib.import_module("charset_normalizer")
    except ImportError:
        # charset-normalizer is a core dependency, but a trimmed environment can lack it; strict
        # cp1252 still rescues the commonest non-UTF-8 case (Windows-encoded Western text).
        log.debug("charset_normalizer not importable; trying cp1252 only")
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise LoaderError("not valid UTF-8 text and no encoding detected") from exc
    best = charset_normalizer.from_bytes(data).best()
    if best is None:
        raise LoaderError("not valid UTF-8 text and no encoding detected")
    return str(best)


def _repair_mojibake(text: str) -> str:
    """Undo UTF-8 that was decoded as Latin-1 and saved again, line by line where it applies."""
    if not _C1_CONTROLS.search(text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass  # mixed content: fall back to repairing only the damaged lines
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _C1_CONTROLS.search(line):
            try:
                lines[i] = line.encode("latin-1").decode("utf-8")
            except UnicodeError:
                continue  # not this kind of mojibake; the chunker drops stray control characters
    return "\n".join(lines)


def looks_binary(data: bytes) -> bool:
    """NUL bytes near the start of a file without a UTF-16 / UTF-8 byte-order mark."""
    return b"\x00" in data[:8192] and not data.startswith(_UNICODE_BOMS)


# --------------------------------------------------------------------------- chunk building


def text_chunks(
    source: str,
    sections: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    fmt: str,
    file_hash: str,
    opts: ChunkingOptions,
    id_position: Callable[[int, int, Mapping[str, Any]], str | int] | None = None,
) -> list[Chunk]:
    """Chunk each ``(text, extra metadata)`` section; positions run on across sections.

    Raises:
        LoaderError: If no section holds any text.
    """
    chunks: list[Chunk] = []
    for text, extra in sections:
        for local, piece in enumerate(split_text(text, opts)):
            position = len(chunks)
            key = id_position(position, local, extra) if id_position else position
            meta: dict[str, Any] = {"format": fmt, "position": position, "file_hash": file_hash, **extra}
            chunks.append(
                Chunk(
                    id=chunk_id(source, piece, key),
                    modality="text",
                    source=source,
                    text=piece,
                    image=None,
                    metadata=meta,
                )
            )
    if not chunks:
        raise LoaderError(f"no text found in {fmt} file")
    return chunks


def chunks_from_pieces(
    source: str, pieces: Sequence[tuple[str, Mapping[str, Any]]], *, fmt: str, file_hash: str
) -> list[Chunk]:
    """One chunk per ``(text, metadata)`` piece a structure-aware chunker already cut.

    Raises:
        LoaderError: If there are no pieces.
    """
    chunks = [
        Chunk(
            id=chunk_id(source, text, position),
            modality="text",
            source=source,
            text=text,
            image=None,
            metadata={"format": fmt, "position": position, "file_hash": file_hash, **meta},
        )
        for position, (text, meta) in enumerate(pieces)
    ]
    if not chunks:
        raise LoaderError(f"no text found in {fmt} file")
    return chunks
