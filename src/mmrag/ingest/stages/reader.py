"""The reader stage: walk the folders; check, read and hash each file; ask the ledger if it changed.

Runs on worker threads (:func:`read_ahead`). Every way a file can be bad ends in a skip record
with a short reason, never an exception out of the run. Each file's bytes are hashed here once;
the digest travels on to the parser (chunk ``file_hash``, image chunk ids) and to the ledger.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import TypeVar

from mmrag.errors import ConfigError
from mmrag.ingest.ledger_base import LedgerEntry
from mmrag.ingest.loaders import (
    IMAGE_EXTENSIONS,
    LOADER_VERSION,
    SUPPORTED_EXTENSIONS,
    LoadOptions,
    RawFile,
    caption_for,
    iter_files,
)
from mmrag.ingest.stages.context import FileResult, RunContext, ledger_source, skipped, split_ledger_source
from mmrag.types import content_hash

T = TypeVar("T")
R = TypeVar("R")
Todo = list[tuple[Path, Path]]  # (file, the root it was found under)


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


class Reader:
    """Checks, reads and hashes files, and tells unchanged ones from those to parse.

    Args:
        ctx: The run's context (limits, load options for the fingerprint, vector, tenant).
        known: The ledger's entries at the start of the run, by ledger key (empty on remote
            workers, where the driver already made the unchanged test).

    Example:
        >>> reader = Reader(ctx, ledger.entries())                              # doctest: +SKIP
        >>> reader.read(Path("docs/a.md"), Path("docs")).status                # doctest: +SKIP
        'load'
    """

    def __init__(self, ctx: RunContext, known: Mapping[str, LedgerEntry]) -> None:
        self.ctx = ctx
        self.known = known

    @staticmethod
    def walk(roots: Sequence[Path], limit: int | None, files: Sequence[Path] | None) -> Todo:
        """The files of a run with the root each is checked against (symlinks may not leave it).

        Raises:
            ConfigError: A root that does not exist.
        """
        if files is not None:
            # Files named one by one are checked against the folder they were listed from, if any;
            # with no folder, naming a file is the choice (its own real folder is its root).
            return [(Path(f), roots[0] if roots else Path(os.path.realpath(f)).parent) for f in files]
        todo: Todo = []
        for path in roots:
            if not path.exists():
                raise ConfigError(f"{path} does not exist; pass a folder or a file to ingest")
            todo.extend((f, path) for f in iter_files(path))
        return todo[:limit] if limit is not None else todo

    def read(self, path: Path, root: Path) -> FileResult:
        """Check, read and hash one file; ``"load"`` results carry the bytes for the parser."""
        t0 = time.perf_counter()
        res = self._read(path, root)
        return replace(res, seconds=time.perf_counter() - t0)

    def _read(self, path: Path, root: Path) -> FileResult:
        ctx = self.ctx
        source = str(path.resolve())
        key = ledger_source(source, ctx.tenant)
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_EXTENSIONS:
            return skipped(path, key, f"unsupported extension {suffix or '(none)'!r}")
        target = _outside(path, root)
        if target is not None:
            return skipped(path, key, f"resolves outside the ingest root {root} (a symlink to {target})")
        try:
            st = path.stat()
        except OSError as exc:  # a dangling symlink, or a file removed since the walk
            return skipped(path, key, f"cannot stat: {exc.strerror or exc}")
        limit = ctx.max_bytes
        if st.st_size > limit:
            return skipped(path, key, f"file is {st.st_size / 1e6:.1f} MB, over the {limit / 1e6:g} MB limit")
        if st.st_size == 0:
            return skipped(path, key, "empty file")
        try:
            with path.open("rb") as fh:
                # Read at most one byte past the limit: the file may have grown since stat().
                data = fh.read(limit + 1)
        except OSError as exc:
            return skipped(path, key, f"cannot read file: {exc.strerror or exc}")
        if len(data) > limit:
            return skipped(path, key, f"file grew past the {limit / 1e6:g} MB limit while reading")
        digest = content_hash(data)
        caption = caption_for(path, ctx.captions)[0] if suffix in IMAGE_EXTENSIONS else None
        params = params_fingerprint(ctx.load, caption)
        entry = self.known.get(key)
        if (
            entry is not None
            and (entry.hash, entry.params) == (digest, params)
            and ctx.vector in entry.vectors
        ):
            return FileResult(path, key, "unchanged", digest, params)
        return FileResult(path, key, "load", digest, params, RawFile(path, source, data, digest))

    def gone(self, roots: Sequence[Path], seen: set[str]) -> list[str]:
        """Ledger keys of this tenant's files under ``roots`` that the run did not see (for prune)."""
        prefixes = [str(r.resolve()) for r in roots]
        out = []
        for key in self.known:
            path, owner = split_ledger_source(key)
            if key in seen or owner != self.ctx.tenant:  # another tenant's copy is not ours to prune
                continue
            if any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes):
                out.append(key)
        return out


def read_ahead(fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` threads, results in order, at most ``window`` ahead.

    Executor.map would submit every item at once and hold all results (parsed chunks) in memory;
    a bounded window of futures keeps the order and memory flat in the number of files.
    """
    with ThreadPoolExecutor(workers, thread_name_prefix="mmrag-read") as pool:
        todo = iter(items)
        inflight: deque[Future[R]] = deque(pool.submit(fn, x) for x in islice(todo, window))
        while inflight:
            result = inflight.popleft().result()
            for nxt in islice(todo, 1):
                inflight.append(pool.submit(fn, nxt))
            yield result
