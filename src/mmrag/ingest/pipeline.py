"""The ingest runner: reader → mapper → writer over batches, timing each stage.

* reader: walks the folders; worker threads check each file (size, symlinks, permissions), hash
  it, ask the ledger whether it changed, and parse it only if so (parsing overlaps with encoding);
  bad files become skips with a reason, never crashes;
* mapper: embeds the new chunks (text and image batches) with the dual encoder;
* writer: upserts into the store, deletes the stale chunks of changed files, and commits each file
  to the :class:`~mmrag.ingest.ledger.Ledger` once all its chunks are stored (write-ahead intent
  first; see the ledger module for why a crash at any point is safe).

Re-ingesting an unchanged folder reads and hashes every file but parses, embeds and writes none.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.encoders.base import DualEncoder, vector_spec
from mmrag.errors import ConfigError, TenancyError
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.files import FileResult, ledger_source, process_file, split_ledger_source
from mmrag.ingest.ledger import Ledger, LedgerEntry, default_ledger_path
from mmrag.ingest.loaders import LoadOptions, iter_files
from mmrag.store import QdrantStore
from mmrag.types import Chunk, IngestSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """Knobs of one ingest run.

    Attributes:
        batch_size: Chunks per encoder batch; images are written as soon as this many are pending.
        text_window: Text chunks gathered before they are embedded and written together: the
            encoder sorts them by length, so its batches of similar lengths pad little, as when
            one call embeds a whole corpus.
        workers: Threads checking and parsing files ahead of the encoder.
        max_file_mb: Files larger than this are skipped with a reason.
        chunking: Text chunk size and overlap (words, or tokens when ``max_tokens`` is set).
        optimize: Build the HNSW index after the run (Qdrant Edge).
        prune: Delete the chunks of ledger files under the ingested folders that no longer exist.
        ocr: OCR scanned PDF pages and document images when tesseract is installed.
        pdf_images: Store images embedded in PDF pages as image chunks.
        max_image_pixels: Images (and PDF pages rendered for OCR) above this many pixels are
            skipped as possible decompression bombs.
        tenant: Owner of the ingested chunks (payload key ``tenant``; see :mod:`mmrag.tenancy`).
    """

    batch_size: int = 32
    text_window: int = 256
    workers: int = 2
    max_file_mb: float = 200.0
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    optimize: bool = True
    prune: bool = False
    ocr: bool = True
    pdf_images: bool = True
    max_image_pixels: int = 64_000_000
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 1 or self.text_window < 1:
            raise ConfigError("batch_size, text_window and workers must be >= 1")
        if self.max_file_mb <= 0:
            raise ConfigError("max_file_mb must be > 0")
        if self.max_image_pixels < 1:
            raise ConfigError("max_image_pixels must be >= 1")

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            chunking=self.chunking,
            ocr=self.ocr,
            pdf_images=self.pdf_images,
            max_image_pixels=self.max_image_pixels,
        )


def read_captions(path: Path) -> dict[str, list[str]]:
    """Captions from a JSONL file of ``{"image": name, "captions": [...]}`` (or ``"caption"``) rows."""
    out: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read captions file {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            caps = row.get("captions") or [row["caption"]]
            out[Path(str(row["image"])).name] = [str(c) for c in caps]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}:{n}: expected {{'image': ..., 'captions': [...]}} ({exc})") from exc
    return out


@dataclass(slots=True)
class _Open:
    """A file whose chunks are on their way to the store."""

    digest: str
    params: str
    ids: list[str]
    stale: list[str]
    remaining: int
    begun: bool = False


class IngestRunner:
    """Ingest files into a store with one encoder, keeping a ledger of what each file wrote.

    Args:
        encoder: The dual encoder (its vector is created in the store if new).
        store: Destination store.
        options: Batch sizes, workers, limits.
        progress: Show a tqdm progress bar on stderr.
        ledger: The ledger to use; by default the store's (see
            :func:`~mmrag.ingest.ledger.default_ledger_path`), opened and closed by :meth:`run`.

    Example:
        >>> runner = IngestRunner(load_encoder("lite"), QdrantStore.open(".mmrag"))  # doctest: +SKIP
        >>> runner.run(["../shared/data/ingest_demo"]).to_dict()["written"]          # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: DualEncoder,
        store: QdrantStore,
        options: IngestOptions | None = None,
        *,
        progress: bool = True,
        ledger: Ledger | None = None,
    ) -> None:
        if not isinstance(encoder, DualEncoder):
            raise ConfigError("encoder must implement DualEncoder (encode_text, encode_image, id, dim)")
        self.encoder = encoder
        self.store = store
        self.options = options or IngestOptions()
        self.progress = progress
        self._ledger = ledger

    # -- reader -----------------------------------------------------------------------------
    @staticmethod
    def _files(roots: Iterable[str | Path], limit: int | None) -> list[tuple[Path, Path]]:
        files: list[tuple[Path, Path]] = []
        for root in roots:
            path = Path(root)
            if not path.exists():
                raise ConfigError(f"{path} does not exist; pass a folder or a file to ingest")
            files.extend((f, path) for f in iter_files(path))
        return files[:limit] if limit is not None else files

    def _read(
        self,
        files: Sequence[tuple[Path, Path]],
        captions: Mapping[str, Sequence[str]] | None,
        known: Mapping[str, LedgerEntry],
        vector: str,
        tenant: str | None = None,
    ) -> Iterator[FileResult]:
        """One result per file, in order: skipped, unchanged, or parsed into chunks."""
        return self._scan(files, captions, known, vector, tenant, parse=True)

    def _scan(
        self,
        files: Sequence[tuple[Path, Path]],
        captions: Mapping[str, Sequence[str]] | None,
        known: Mapping[str, LedgerEntry],
        vector: str,
        tenant: str | None,
        *,
        parse: bool,
    ) -> Iterator[FileResult]:
        # Executor.map would submit every file at once and hold all parsed chunks in memory;
        # a bounded window of futures keeps file order and memory flat in the number of files.
        # It spans a whole batch, so the next batch is parsed while the encoder runs this one
        # (with only a few files ahead, the encoder waited for most of every batch's files).
        opts = self.options.load_options()
        max_bytes = int(self.options.max_file_mb * 1e6)
        window = self.options.batch_size + 4 * self.options.workers

        def submit(pool: ThreadPoolExecutor, item: tuple[Path, Path]) -> Future[FileResult]:
            path, root = item
            return pool.submit(
                process_file,
                path,
                root,
                opts=opts,
                max_bytes=max_bytes,
                captions=captions,
                known=known,
                vector=vector,
                tenant=tenant,
                parse=parse,
            )

        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="mmrag-read") as pool:
            todo = iter(files)
            inflight: deque[Future[FileResult]] = deque(submit(pool, f) for f in islice(todo, window))
            while inflight:
                result = inflight.popleft().result()
                for nxt in islice(todo, 1):
                    inflight.append(submit(pool, nxt))
                yield result

    def _new_state(
        self, ledger: Ledger, vector: str, summary: IngestSummary, timings: dict[str, float]
    ) -> _RunState:
        """The mapper and writer (the Ray engine's takes vectors computed by its workers)."""
        return _RunState(self, ledger, vector, summary, timings)

    # -- run --------------------------------------------------------------------------------
    def run(
        self,
        roots: Iterable[str | Path],
        *,
        captions: Mapping[str, Sequence[str]] | None = None,
        limit: int | None = None,
        files: Sequence[Path] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> IngestSummary:
        """Ingest every supported file under ``roots`` (or exactly ``files``)."""
        root_paths = [Path(r) for r in roots]
        if self.options.prune and (limit is not None or files is not None):
            raise ConfigError("--prune needs whole folders: it cannot be combined with --limit/--files-from")
        ledger = self._ledger or Ledger(default_ledger_path(self.store))
        try:
            return self._run(ledger, root_paths, captions, limit, files, on_progress)
        finally:
            if self._ledger is None:
                ledger.close()

    def _run(
        self,
        ledger: Ledger,
        roots: list[Path],
        captions: Mapping[str, Sequence[str]] | None,
        limit: int | None,
        files: Sequence[Path] | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> IngestSummary:
        t_start = time.perf_counter()
        summary = IngestSummary()
        timings = {"read": 0.0, "parse": 0.0, "embed_text": 0.0, "embed_image": 0.0, "write": 0.0}
        timings["ledger"] = 0.0
        tenant = self.options.tenant
        if tenant is None and self.store.tenancy:
            raise TenancyError(f"store {self.store.location} is multi-tenant: ingest with a tenant")
        vector = self.store.ensure_vector(vector_spec(self.encoder))
        summary.vector = vector
        t = time.perf_counter()
        summary.recovered = ledger.recover(self.store)
        timings["recover"] = time.perf_counter() - t
        known = ledger.entries()
        if files is not None:
            # Files named one by one are checked against the folder they were listed from, if any;
            # with no folder, naming a file is the choice (its own real folder is its root).
            todo = [(Path(f), roots[0] if roots else Path(os.path.realpath(f)).parent) for f in files]
        else:
            todo = self._files(roots, limit)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="file", desc="ingest", dynamic_ncols=True)
        state = self._new_state(ledger, vector, summary, timings)
        seen: set[str] = set()

        t_read = time.perf_counter()
        for res in self._read(todo, captions, known, vector, tenant):
            timings["read"] += time.perf_counter() - t_read
            timings["parse"] += res.seconds
            summary.files_seen += 1
            if res.status == "skip" and res.skip is not None:
                log.warning("skipped %s: %s", res.path, res.skip.reason)
                summary.skipped.append(res.skip)
                if res.source in known:
                    seen.add(res.source)  # the file exists; its previous version stays stored
            elif res.source in seen:
                pass  # the same file reached twice (a folder and a file in it, or a symlink)
            elif res.status == "unchanged":
                seen.add(res.source)
                summary.files_unchanged += 1
                summary.already_stored += ledger.count_chunks(res.source)
            else:
                seen.add(res.source)
                summary.files_loaded += 1
                state.add(res, known.get(res.source))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(chunks=summary.embedded, refresh=False)
            if on_progress is not None:
                on_progress(summary.files_seen, len(todo))
            t_read = time.perf_counter()
        state.flush(force=True)
        if bar is not None:
            bar.close()
        if self.options.prune:
            t = time.perf_counter()
            summary.pruned = self._prune(ledger, roots, seen, known, vector, tenant)
            timings["prune"] = time.perf_counter() - t
        if self.options.optimize and (summary.written or summary.deleted):
            t = time.perf_counter()
            self.store.optimize()
            timings["optimize"] = time.perf_counter() - t
        summary.timings = timings
        summary.seconds = time.perf_counter() - t_start
        return summary

    def _prune(
        self,
        ledger: Ledger,
        roots: list[Path],
        seen: set[str],
        known: Mapping[str, LedgerEntry],
        vector: str,
        tenant: str | None = None,
    ) -> int:
        prefixes = [str(r.resolve()) for r in roots]
        gone = []
        for key in known:
            path, owner = split_ledger_source(key)
            if key in seen or owner != tenant:  # another tenant's copy of a file is not ours to prune
                continue
            if any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in prefixes):
                gone.append(key)
        for source in gone:
            ids = ledger.chunk_ids(source)
            ledger.begin([(source, vector, [])])
            self.store.delete(ids)
            ledger.forget([source])
            log.info("pruned %s (%d chunks): the file no longer exists", source, len(ids))
        return len(gone)


def _ledger_key(chunk: Chunk) -> str:
    """The ledger entry a chunk belongs to: its file, per tenant (see :func:`ledger_source`)."""
    tenant = chunk.metadata.get("tenant")
    return ledger_source(chunk.source, tenant if isinstance(tenant, str) else None)


class _RunState:
    """The mapper and writer: pending chunks, batches, and per-file commit bookkeeping."""

    def __init__(
        self,
        runner: IngestRunner,
        ledger: Ledger,
        vector: str,
        summary: IngestSummary,
        timings: dict[str, float],
    ) -> None:
        self.runner = runner
        self.ledger = ledger
        self.vector = vector
        self.summary = summary
        self.timings = timings
        self.open: dict[str, _Open] = {}
        self.pending: list[Chunk] = []  # text chunks
        self.pending_images: list[Chunk] = []
        self.images: dict[str, Any] = {}

    def add(self, res: FileResult, entry: LedgerEntry | None) -> None:
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
        self.images.update(res.images)
        self.flush(force=False)

    def flush(self, force: bool) -> None:
        """Write ``batch_size`` pending images (decoded, so kept few) or ``text_window`` pending text
        chunks at a time; ``force``: write everything. A file whose chunks land in several writes is
        committed to the ledger when its last one is written."""
        opts = self.runner.options
        for pending, size in ((self.pending_images, opts.batch_size), (self.pending, opts.text_window)):
            while pending and (force or len(pending) >= size):
                batch = pending[:size]
                del pending[:size]
                self._write(batch)

    def _write(self, batch: list[Chunk]) -> None:
        store, t = self.runner.store, time.perf_counter()
        sources = list(dict.fromkeys(_ledger_key(c) for c in batch))
        starting = [s for s in sources if not self.open[s].begun]
        self.ledger.begin([(s, self.vector, self.open[s].ids) for s in starting])
        for s in starting:
            self.open[s].begun = True
        self.timings["ledger"] += time.perf_counter() - t

        t = time.perf_counter()
        present, with_vector = store.presence([c.id for c in batch], self.vector)
        self.timings["write"] += time.perf_counter() - t
        todo = [c for c in batch if c.id not in with_vector]
        self.summary.already_stored += len(batch) - len(todo)
        if todo:
            vecs = self._embed(todo)
            t = time.perf_counter()
            self.summary.written += store.upsert_chunks(
                todo, vecs, self.vector, present={c.id for c in todo if c.id in present}
            )
            self.timings["write"] += time.perf_counter() - t
        for c in batch:
            self.images.pop(c.id, None)
            self.open[_ledger_key(c)].remaining -= 1
        done = [s for s in sources if self.open[s].remaining == 0]
        if not done:
            return
        t = time.perf_counter()
        stale = [i for s in done for i in self.open[s].stale]
        if stale:
            store.delete(stale)
            self.summary.deleted += len(stale)
        self.timings["write"] += time.perf_counter() - t
        t = time.perf_counter()
        self.ledger.commit(
            [(s, self.open[s].digest, self.open[s].params, self.vector, self.open[s].ids) for s in done]
        )
        for s in done:
            del self.open[s]
        self.timings["ledger"] += time.perf_counter() - t

    def _embed(self, todo: list[Chunk]) -> np.ndarray[Any, np.dtype[np.float32]]:
        enc = self.runner.encoder
        vecs = np.zeros((len(todo), enc.dim), dtype=np.float32)
        text_idx = [i for i, c in enumerate(todo) if c.modality == "text"]
        image_idx = [i for i, c in enumerate(todo) if c.modality == "image"]
        if text_idx:
            t = time.perf_counter()
            vecs[text_idx] = enc.encode_text([todo[i].text or "" for i in text_idx])
            self.timings["embed_text"] += time.perf_counter() - t
        if image_idx:
            t = time.perf_counter()
            # Decoded images from the reader (PDF figures, checked photos) save a second decode.
            items = [self._image(todo[i]) for i in image_idx]
            vecs[image_idx] = enc.encode_image(items)
            self.timings["embed_image"] += time.perf_counter() - t
        self.summary.embedded += len(todo)
        return vecs

    def _image(self, chunk: Chunk) -> Any:
        img = self.images.get(chunk.id)
        return img if img is not None else chunk.image or ""
