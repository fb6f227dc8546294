"""The reader's per-file work: safety checks, hashing, the ledger's unchanged test, parsing.

Runs on the reader's worker threads. Every way a file can be bad ends in a
:class:`~mmrag.types.SkippedFile` with a short reason, never an exception out of the run.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmrag.errors import LoaderError
from mmrag.ingest.ledger import LedgerEntry
from mmrag.ingest.loaders import (
    IMAGE_EXTENSIONS,
    LOADER_VERSION,
    SUPPORTED_EXTENSIONS,
    LoadOptions,
    caption_for,
    load_document,
)
from mmrag.types import Chunk, SkippedFile

Status = Literal["load", "unchanged", "skip"]


@dataclass(slots=True)
class FileResult:
    """What the reader learned about one file."""

    path: Path
    source: str
    status: Status
    digest: str = ""
    params: str = ""
    chunks: list[Chunk] = field(default_factory=list)
    images: dict[str, Any] = field(default_factory=dict)  # chunk id -> decoded PIL image
    skip: SkippedFile | None = None
    seconds: float = 0.0


def params_fingerprint(opts: LoadOptions, caption: str | None) -> str:
    """Everything besides the file's bytes that changes its chunks (so, their ids or payload)."""
    c = opts.chunking
    parts = [
        f"loader={LOADER_VERSION}",
        f"words={c.words}",
        f"overlap={c.overlap}",
        f"tokens={c.max_tokens}",
        f"tokenizer={c.tokenizer_id}",
        f"ocr={opts.ocr_available()}",
        f"pdf_images={opts.pdf_images}",
    ]
    if caption is not None:
        parts.append("caption=" + hashlib.sha256(caption.encode()).hexdigest()[:16])
    return ";".join(parts)


def _outside(path: Path, root: Path) -> str | None:
    """The target of a symlink (file or folder on the way) that leaves ``root``, else None."""
    real = Path(os.path.realpath(path))
    real_root = Path(os.path.realpath(root)) if root.is_dir() else Path(os.path.realpath(root.parent))
    if real == real_root or real_root in real.parents:
        return None
    return str(real)


_TENANT_SEP = "\x00tenant="


def ledger_source(source: str, tenant: str | None) -> str:
    """The ledger key of a file: its path, plus the tenant when ingested for one (the same file may
    be stored once per tenant, each copy with its own chunk ids and ledger entry)."""
    return source if tenant is None else f"{source}{_TENANT_SEP}{tenant}"


def split_ledger_source(key: str) -> tuple[str, str | None]:
    """``(path, tenant)`` of a ledger key made by :func:`ledger_source`."""
    path, sep, tenant = key.partition(_TENANT_SEP)
    return path, (tenant if sep else None)


def process_file(
    path: Path,
    root: Path,
    *,
    opts: LoadOptions,
    max_bytes: int,
    captions: Mapping[str, Sequence[str]] | None,
    known: Mapping[str, LedgerEntry],
    vector: str,
    tenant: str | None = None,
    parse: bool = True,
) -> FileResult:
    """Check, hash and (unless unchanged) parse one file; with ``tenant``, the chunks are the tenant's
    copies (:func:`mmrag.tenancy.with_tenant`) and the ledger key names the tenant.

    With ``parse=False`` a file that needs parsing comes back as status ``"load"`` with no chunks:
    the Ray engine's driver decides this way which files to send to its parsing workers.
    """
    t0 = time.perf_counter()
    res = _process(path, root, opts, max_bytes, captions, known, vector, tenant, parse)
    if tenant is not None and res.chunks:
        from mmrag.tenancy import with_tenant

        owned = with_tenant(res.chunks, tenant)
        res.images = {
            n.id: res.images[o.id] for o, n in zip(res.chunks, owned, strict=True) if o.id in res.images
        }
        res.chunks = owned
    res.seconds = time.perf_counter() - t0
    return res


def _skip(path: Path, source: str, reason: str) -> FileResult:
    return FileResult(path, source, "skip", skip=SkippedFile(str(path), reason))


def _process(
    path: Path,
    root: Path,
    opts: LoadOptions,
    max_bytes: int,
    captions: Mapping[str, Sequence[str]] | None,
    known: Mapping[str, LedgerEntry],
    vector: str,
    tenant: str | None = None,
    parse: bool = True,
) -> FileResult:
    source = str(path.resolve())
    key = ledger_source(source, tenant)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        return _skip(path, key, f"unsupported extension {suffix or '(none)'!r}")
    target = _outside(path, root)
    if target is not None:
        return _skip(path, key, f"resolves outside the ingest root {root} (a symlink to {target})")
    try:
        st = path.stat()
    except OSError as exc:  # a dangling symlink, or a file removed since the walk
        return _skip(path, key, f"cannot stat: {exc.strerror or exc}")
    if st.st_size > max_bytes:
        return _skip(path, key, f"file is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit")
    if st.st_size == 0:
        return _skip(path, key, "empty file")
    try:
        with path.open("rb") as fh:
            # Read at most one byte past the limit: the file may have grown since stat().
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        return _skip(path, key, f"cannot read file: {exc.strerror or exc}")
    if len(data) > max_bytes:
        return _skip(path, key, f"file grew past the {max_bytes / 1e6:g} MB limit while reading")
    digest = hashlib.sha256(data).hexdigest()
    caption = caption_for(path, captions)[0] if suffix in IMAGE_EXTENSIONS else None
    params = params_fingerprint(opts, caption)
    entry = known.get(key)
    if entry is not None and (entry.hash, entry.params) == (digest, params) and vector in entry.vectors:
        return FileResult(path, key, "unchanged", digest, params)
    if not parse:
        return FileResult(path, key, "load", digest, params)
    try:
        doc = load_document(path, data, opts=opts, captions=captions, source=source)
    except LoaderError as exc:
        return _skip(path, key, str(exc))
    except (MemoryError, RecursionError) as exc:  # pathological input; keep going
        return _skip(path, key, f"loader ran out of resources: {type(exc).__name__}")
    return FileResult(path, key, "load", digest, params, doc.chunks, doc.images)
