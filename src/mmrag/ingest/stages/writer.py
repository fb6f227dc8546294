"""The writer stage: ledger intent → store upsert → stale delete → ledger commit, per batch.

Files arrive parsed; their chunks wait in two queues (text, images) and are written
``text_window`` text chunks or ``batch_size`` images at a time (decoded images are kept few). A
file whose chunks land in several writes is committed to the ledger once its last one is
written and the store has flushed it; its stale chunks (from the version the ledger knew) are
deleted just before. The store flushes every :data:`FLUSH_POINTS` points or
:data:`FLUSH_SECONDS` (an Edge flush costs ~8 ms however little it writes: after every 32-image
batch it was a third of the writer's time), so the commits of the files in between wait for it.
The write-ahead intent comes first, so a crash at any point, flushed or not, is undone by the
ledger's recovery (see :mod:`mmrag.ingest.ledger`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mmrag.ingest.ledger_base import IngestLedger, LedgerEntry
from mmrag.ingest.stages.context import FileResult, RunContext, chunk_ledger_key, timed
from mmrag.ingest.stages.embedder import VectorSource
from mmrag.store import QdrantStore
from mmrag.store.payload import INGEST_WRITER
from mmrag.types import Chunk, IngestSummary

log = logging.getLogger(__name__)

FLUSH_POINTS = 256  # points written between two store flushes (and the ledger commits they allow)
FLUSH_SECONDS = 2.0  # ... or seconds, so that a slow trickle of files is committed too


@dataclass(slots=True)
class _Open:
    """A file whose chunks are on their way to the store."""

    digest: str
    params: str
    ids: list[str]
    stale: list[str]
    remaining: int
    begun: bool = False


class Writer:
    """Writes parsed files to the store and commits each to the ledger once all its chunks are in.

    Args:
        store: Destination store.
        ledger: The run's ledger.
        ctx: The run's context (vector, batch sizes).
        summary: The run's summary: counts and the ``write`` / ``ledger`` timings grow here.
        vectors: Where the vectors of the chunks to store come from.

    Example:
        >>> writer = Writer(store, ledger, ctx, summary, EncodeOnWrite(embedder, summary))  # doctest: +SKIP
        >>> writer.add(parsed, ledger.entries().get(parsed.source))                        # doctest: +SKIP
        >>> writer.flush(force=True)                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        store: QdrantStore,
        ledger: IngestLedger,
        ctx: RunContext,
        summary: IngestSummary,
        vectors: VectorSource,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.ctx = ctx
        self.summary = summary
        self.timings = summary.timings
        self.vectors = vectors
        self.open: dict[str, _Open] = {}
        self.pending: list[Chunk] = []  # text chunks
        self.pending_images: list[Chunk] = []
        self.written: list[str] = []  # files fully written, committed at the next store flush
        self.unflushed = 0  # points written since the last flush
        self.flushed_at = time.monotonic()

    def add(self, res: FileResult, entry: LedgerEntry | None) -> None:
        """Queue a parsed file (``entry``: what the ledger knew of it at the start of the run)."""
        chunks = list({c.id: c for c in res.chunks}.values())
        ids = [c.id for c in chunks]
        same = entry is not None and (entry.hash, entry.params) == (res.digest, res.params)
        stale: list[str] = []
        if entry is not None and not same:
            new = set(ids)
            stale = [i for i in self.ledger.chunk_ids(res.source) if i not in new]
            self.summary.files_changed += 1
        elif entry is None:
            self.summary.files_new += 1
        self.open[res.source] = _Open(res.digest, res.params, ids, stale, len(chunks))
        for c in chunks:
            self.summary.chunks[c.modality] = self.summary.chunks.get(c.modality, 0) + 1
        self.pending.extend(c for c in chunks if c.modality != "image")
        self.pending_images.extend(c for c in chunks if c.modality == "image")
        self.vectors.hold(res)
        self.flush(force=False)

    def flush(self, force: bool) -> None:
        """Write ``batch_size`` pending images or ``text_window`` pending text chunks at a time;
        ``force``: write everything."""
        sizes = ((self.pending_images, self.ctx.batch_size), (self.pending, self.ctx.text_window))
        for pending, size in sizes:
            while pending and (force or len(pending) >= size):
                batch = pending[:size]
                del pending[:size]
                self._write(batch)
        if force:
            self._commit()

    def _write(self, batch: list[Chunk]) -> None:
        store, vector, summary = self.store, self.ctx.vector, self.summary
        sources = list(dict.fromkeys(chunk_ledger_key(c) for c in batch))
        with timed(self.timings, "ledger"):
            starting = [s for s in sources if not self.open[s].begun]
            self.ledger.begin([(s, vector, self.open[s].ids) for s in starting])
            for s in starting:
                self.open[s].begun = True

        with timed(self.timings, "write"):
            present, with_vector = store.presence([c.id for c in batch], vector)
        todo = [c for c in batch if c.id not in with_vector]
        summary.already_stored += len(batch) - len(todo)
        if todo:
            vecs = self.vectors.vectors(todo)
            with timed(self.timings, "write"):
                summary.written += store.upsert_chunks(
                    todo,
                    vecs,
                    vector,
                    present={c.id for c in todo if c.id in present},
                    writer=INGEST_WRITER,
                    flush=False,
                )
            self.unflushed += len(todo)
        self.vectors.release(batch)
        for c in batch:
            self.open[chunk_ledger_key(c)].remaining -= 1
        done = [s for s in sources if self.open[s].remaining == 0]
        self.written += done
        stale = [i for s in done for i in self.open[s].stale]
        if stale:
            with timed(self.timings, "write"):
                store.delete(stale)  # flushes every write so far: commit them all now
                summary.deleted += len(stale)
            self.unflushed = 0
        if stale or self.unflushed >= FLUSH_POINTS or time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
            self._commit()

    def _commit(self) -> None:
        """Flush the store, then commit the files whose chunks are all written (in that order:
        a committed file's chunks must survive a crash)."""
        if self.unflushed:
            with timed(self.timings, "write"):
                self.store.flush()
        self.unflushed, self.flushed_at = 0, time.monotonic()
        if not self.written:
            return
        vector, done = self.ctx.vector, self.written
        with timed(self.timings, "ledger"):
            self.ledger.commit(
                [(s, self.open[s].digest, self.open[s].params, vector, self.open[s].ids) for s in done]
            )
            for s in done:
                del self.open[s]
        self.written = []

    def forget(self, sources: Sequence[str]) -> None:
        """Delete the chunks of files that no longer exist, and their ledger entries (intent first)."""
        for source in sources:
            ids = self.ledger.chunk_ids(source)
            self.ledger.begin([(source, self.ctx.vector, [])])
            self.store.delete(ids)
            self.ledger.forget([source])
            log.info("pruned %s (%d chunks): the file no longer exists", source, len(ids))
