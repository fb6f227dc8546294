"""Turn one file into :class:`~mmrag.types.Chunk` records, one loader per format.

Every loader reads the file's bytes once, hashes them for the ledger, and raises
:class:`~mmrag.errors.LoaderError` with a short reason for anything it cannot read, so the
ingest runner can log a skip and move on instead of crashing on one bad file.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrag._lazy import require
from mmrag.errors import ConfigError, LoaderError
from mmrag.ingest import ocr
from mmrag.ingest.chunking import ChunkingOptions, split_text
from mmrag.ingest.markdown import chunk_markdown
from mmrag.types import Chunk, chunk_id, content_hash

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOADER_VERSION",
    "SUPPORTED_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "LoadOptions",
    "Loaded",
    "caption_for",
    "iter_files",
    "load_document",
    "load_file",
]

log = logging.getLogger(__name__)

TEXT_EXTENSIONS: frozenset[str] = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".pdf"})
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
SUPPORTED_EXTENSIONS: frozenset[str] = TEXT_EXTENSIONS | IMAGE_EXTENSIONS
# Bumped whenever a loader's output changes, so that the ingest ledger re-ingests old files.
LOADER_VERSION = 2
# Document scans are mostly bright, unsaturated paper; photos rarely are. Only those are OCR'd.
_DOC_BRIGHT_FRACTION = 0.55
_OCR_MIN_WORDS = 5
_CAPTION_CHARS = 400


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How files become chunks.

    Attributes:
        chunking: Text chunk size and overlap.
        ocr: OCR PDF pages without a text layer and document-like images (needs tesseract).
        pdf_images: Store images embedded in PDF pages as image chunks.
        max_image_pixels: Larger images are skipped as possible decompression bombs.
    """

    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    ocr: bool = True
    pdf_images: bool = True
    max_image_pixels: int = 64_000_000

    def ocr_available(self) -> bool:
        return self.ocr and ocr.available()


@dataclass(slots=True)
class Loaded:
    """One file's chunks, plus decoded images keyed by chunk id (figures extracted from PDFs
    and already-checked photos) so that the encoder does not decode them again."""

    chunks: list[Chunk]
    images: dict[str, Any] = field(default_factory=dict)


_CAPTION_SIDECARS = (".txt", ".caption")
_UNICODE_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# U+0080-U+009F never occur in real text; they betray UTF-8 that was decoded as Latin-1 and
# re-encoded (mojibake such as "â\x80\x93" for an en dash).
_C1_CONTROLS = re.compile(r"[\x80-\x9f]")
# Boilerplate that repeats on every page of a site and would crowd out the content; ix:header
# is the hidden block of XBRL facts at the top of every SEC inline-XBRL filing.
_HTML_DROP = ("script", "style", "noscript", "template", "nav", "header", "footer", "ix:header")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_HTML_BLOCKS = (
    "address", "article", "aside", "blockquote", "caption", "dd", "div", "dl", "dt", "figcaption",
    "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "main", "ol", "p", "pre", "section",
    "table", "tbody", "tfoot", "thead", "tr", "ul",
)  # fmt: skip


def iter_files(root: Path) -> Iterator[Path]:
    """Yield the files under ``root`` in sorted order, skipping hidden files and folders.

    Args:
        root: A folder (walked recursively) or a single file (yielded as is).

    Yields:
        File paths; a name starting with ``"."`` hides the file or the whole folder below it.

    Raises:
        ConfigError: If ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        raise ConfigError(f"{root} is neither a file nor a folder; check the path to ingest")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into .git, .venv and the like.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        found.extend(base / f for f in filenames if not f.startswith(".") and (base / f).is_file())
    yield from sorted(found)


def load_file(
    path: Path,
    *,
    opts: ChunkingOptions | LoadOptions,
    captions: Mapping[str, Sequence[str]] | None = None,
) -> list[Chunk]:
    """Load one file as chunks, choosing the loader by its lower-cased extension.

    Args:
        path: The file to load.
        opts: How text is cut into chunks (or the full :class:`LoadOptions`).
        captions: Optional image captions keyed by file name (``"1000268201_693b08cb0e.jpg"``);
            without an entry, a sidecar ``<stem>.txt`` or ``<stem>.caption`` is used if present.

    Returns:
        At least one chunk; ids are deterministic, so loading the same file twice gives the same ids.

    Raises:
        LoaderError: If the file is empty, unsupported or cannot be decoded / parsed.
        MissingExtraError: If a PDF is loaded without the ``pdf`` extra (pypdfium2).

    Example:
        >>> chunks = load_file(Path("notes.md"), opts=ChunkingOptions())  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise LoaderError(_unsupported(path)) from exc
        raise LoaderError(f"cannot read file: {exc.strerror or exc}") from exc
    load_opts = opts if isinstance(opts, LoadOptions) else LoadOptions(chunking=opts)
    return load_document(path, data, opts=load_opts, captions=captions).chunks


def _unsupported(path: Path) -> str:
    suffix = path.suffix.lower()
    return f"unsupported extension {suffix!r}" if suffix else "file has no extension"


def load_document(
    path: Path,
    data: bytes,
    *,
    opts: LoadOptions,
    captions: Mapping[str, Sequence[str]] | None = None,
    source: str | None = None,
) -> Loaded:
    """Parse already-read file bytes (the ingest reader hashes them first) into chunks.

    Raises:
        LoaderError: As :func:`load_file`.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise LoaderError(_unsupported(path))
    if not data:
        raise LoaderError("empty file")
    source = source or str(path.resolve())
    if suffix in IMAGE_EXTENSIONS:
        return _load_image(path, source, data, captions, opts)
    if suffix == ".pdf":
        return _load_pdf(source, data, opts)
    return Loaded(_TEXT_LOADERS[suffix](source, data, opts.chunking))


# --------------------------------------------------------------------------- text decoding


def _decode_text(data: bytes) -> str:
    """Decode file bytes as text: UTF-8 (BOM or not), else a detected encoding."""
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


def _looks_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192] and not data.startswith(_UNICODE_BOMS)


# --------------------------------------------------------------------------- chunk building


def _text_chunks(
    source: str,
    sections: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    fmt: str,
    file_hash: str,
    opts: ChunkingOptions,
    id_position: Callable[[int, int, Mapping[str, Any]], str | int] | None = None,
) -> list[Chunk]:
    """Chunk each ``(text, extra metadata)`` section; positions run on across sections."""
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


def _load_text(source: str, data: bytes, opts: ChunkingOptions) -> list[Chunk]:
    text = _decode_text(data)
    return _text_chunks(source, [(text, {})], fmt="text", file_hash=content_hash(data), opts=opts)


def _load_markdown(source: str, data: bytes, opts: ChunkingOptions) -> list[Chunk]:
    text = _decode_text(data)
    pieces = chunk_markdown(text, opts)
    return _chunks_from_pieces(source, pieces, fmt="markdown", file_hash=content_hash(data))


def _chunks_from_pieces(
    source: str, pieces: Sequence[tuple[str, Mapping[str, Any]]], *, fmt: str, file_hash: str
) -> list[Chunk]:
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


def _load_html(source: str, data: bytes, opts: ChunkingOptions) -> list[Chunk]:
    if _looks_binary(data):
        raise LoaderError("binary content (NUL bytes); not an HTML file")
    bs4 = require("bs4", "core")
    parser = "lxml" if importlib.util.find_spec("lxml") is not None else "html.parser"
    try:
        with warnings.catch_warnings():
            # XHTML (SEC filings) starts with <?xml ...>; parsing it as HTML is what we want.
            warnings.simplefilter("ignore", bs4.XMLParsedAsHTMLWarning)
            soup = bs4.BeautifulSoup(data, parser)
    except (bs4.ParserRejectedMarkup, ValueError, LookupError) as exc:
        raise LoaderError(f"cannot parse HTML: {exc}") from exc
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text().split()) if title_tag is not None else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    # Hidden elements are not what a reader of the page sees.
    for tag in soup.find_all(style=_HIDDEN_STYLE):
        tag.decompose()
    for tag in soup.find_all(hidden=True):
        tag.decompose()
    root = soup.find("main") or soup.find("body") or soup
    alts: list[str] = []
    for img in root.find_all("img"):
        alt = " ".join(str(img.get("alt") or "").split())
        if alt and alt not in alts:
            alts.append(alt)
    # Blank lines around block elements become paragraph breaks for the chunker; inline
    # elements (<b>, <a>, <span>) stay glued to their sentence.
    for tag in root.find_all(_HTML_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    for tag in root.find_all(["td", "th"]):
        tag.insert_after(" ")
    for tag in root.find_all("br"):
        tag.replace_with("\n")
    text = root.get_text()
    if alts:
        text += "\n\n" + "\n".join(alts)
    extra: dict[str, Any] = {"title": title} if title else {}
    return _text_chunks(source, [(text, extra)], fmt="html", file_hash=content_hash(data), opts=opts)


def _load_pdf(source: str, data: bytes, opts: LoadOptions) -> Loaded:
    from mmrag.ingest.pdf import page_metadata, read_pdf

    pages = read_pdf(data, figures=opts.pdf_images, use_ocr=opts.ocr, max_pixels=opts.max_image_pixels)
    file_hash = content_hash(data)
    chunks: list[Chunk] = []
    if any(p.text.strip() for p in pages):
        chunks = _text_chunks(
            source,
            [(p.text, page_metadata(p)) for p in pages],
            fmt="pdf",
            file_hash=file_hash,
            opts=opts.chunking,
            id_position=lambda _pos, local, extra: f"p{extra['page']}:{local}",
        )
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


# --------------------------------------------------------------------------- images


def caption_for(path: Path, captions: Mapping[str, Sequence[str]] | None) -> tuple[str | None, str | None]:
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
            text = " ".join(_decode_text(sidecar.read_bytes()).split())
        except (OSError, LoaderError) as exc:
            # A broken sidecar should not cost us the image itself.
            log.warning("ignoring unreadable caption file %s: %s", sidecar, exc)
            continue
        if text:
            return text, "sidecar"
    return None, None


def _load_image(
    path: Path,
    source: str,
    data: bytes,
    captions: Mapping[str, Sequence[str]] | None,
    opts: LoadOptions,
) -> Loaded:
    from PIL import Image, UnidentifiedImageError  # Pillow is core; imported late to keep startup light

    bad = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, EOFError, ValueError)
    try:
        with warnings.catch_warnings():
            # Pillow warns about big images on open; the explicit limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            width, height = img.size  # from the header: no pixels decoded yet
            if width * height > opts.max_image_pixels:
                raise LoaderError(
                    f"image is {width}x{height} = {width * height / 1e6:.0f} Mpx, over the "
                    f"{opts.max_image_pixels / 1e6:g} Mpx limit (possible decompression bomb)"
                )
            img.verify()  # checks structure (PNG CRCs...) without decoding pixels
        # verify() leaves the image unusable, and truncated JPEGs only fail on a full decode.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                kind = img.format
                decoded = img.convert("RGB")
    except LoaderError:
        raise
    except (*bad, struct.error, Image.DecompressionBombWarning) as exc:
        raise LoaderError(f"corrupt image: {exc}") from exc
    caption, caption_source = caption_for(path, captions)
    file_hash = content_hash(data)
    ocr_text = _ocr_document_image(decoded) if opts.ocr_available() else ""
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
    """Mostly bright, unsaturated pixels: a page scan or a table, not a photo."""
    small = image.copy()
    small.thumbnail((256, 256))
    hsv = small.convert("HSV")
    hist_v = hsv.getchannel("V").histogram()
    hist_s = hsv.getchannel("S").histogram()
    total = max(1, sum(hist_v))
    bright = sum(hist_v[200:]) / total
    grey = sum(hist_s[:40]) / total
    return bool(bright >= _DOC_BRIGHT_FRACTION and grey >= _DOC_BRIGHT_FRACTION)


def _ocr_document_image(image: Any) -> str:
    if not _looks_like_document(image):
        return ""
    text = ocr.ocr_image(image)
    return text if len(text.split()) >= _OCR_MIN_WORDS else ""


# Images and PDFs are not here: they return decoded images too (see load_document).
_TEXT_LOADERS: dict[str, Callable[[str, bytes, ChunkingOptions], list[Chunk]]] = {
    ".txt": _load_text,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".html": _load_html,
    ".htm": _load_html,
}
