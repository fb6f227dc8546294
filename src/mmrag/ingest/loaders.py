"""Turn one file into :class:`~mmrag.types.Chunk` records: the dispatch to one loader per format.

The loaders themselves live in :mod:`mmrag.ingest.formats` (one module per format); this module
keeps the names callers import: the extension sets, :data:`LOADER_VERSION`, :func:`load_document`
(bytes already read and hashed by the ingest reader), :func:`load_file` (reads the file itself),
:func:`iter_files` and :func:`caption_for`. Every loader raises
:class:`~mmrag.errors.LoaderError` with a short reason for anything it cannot read, so the
ingest runner can log a skip and move on instead of crashing on one bad file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mmrag.errors import ConfigError, LoaderError
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.formats import LOADERS, html, image, markdown, pdf, text
from mmrag.ingest.formats.common import Loaded, LoadOptions, RawFile
from mmrag.ingest.formats.image import caption_for
from mmrag.types import Chunk, content_hash

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOADER_VERSION",
    "SUPPORTED_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "LoadOptions",
    "Loaded",
    "RawFile",
    "caption_for",
    "iter_files",
    "load_document",
    "load_file",
]

TEXT_EXTENSIONS: frozenset[str] = text.EXTENSIONS | markdown.EXTENSIONS | html.EXTENSIONS | pdf.EXTENSIONS
IMAGE_EXTENSIONS: frozenset[str] = image.EXTENSIONS
SUPPORTED_EXTENSIONS: frozenset[str] = TEXT_EXTENSIONS | IMAGE_EXTENSIONS
# Bumped whenever a loader's output changes, so that the ingest ledger re-ingests old files.
LOADER_VERSION = 2


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
    digest: str | None = None,
) -> Loaded:
    """Parse already-read file bytes into chunks.

    Args:
        path: The file the bytes came from (its extension picks the loader).
        data: The file's bytes.
        opts: Chunking, OCR and image limits.
        captions: Image captions keyed by file name, as for :func:`load_file`.
        source: The chunks' ``source`` (default: the resolved path).
        digest: ``content_hash(data)`` when the caller already computed it (the ingest reader
            hashes every file for its ledger), so that no file is hashed twice.

    Raises:
        LoaderError: As :func:`load_file`.
    """
    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix)
    if loader is None:
        raise LoaderError(_unsupported(path))
    if not data:
        raise LoaderError("empty file")
    raw = RawFile(path, source or str(path.resolve()), data, digest or content_hash(data))
    return loader(raw, opts, captions)
