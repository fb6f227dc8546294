"""The ingest runner: composes the stages of :mod:`mmrag.ingest.stages` over one run.

* reader: walks the folders; worker threads check each file (size, symlinks, permissions), hash
  it once, ask the ledger whether it changed, and hand it to the parser only if so (parsing
  overlaps with encoding); bad files become skips with a reason, never crashes;
* parser: the file's bytes become chunks (one loader per format);
* embedder: embeds the new chunks (text and image batches) with the dual encoder;
* writer: upserts into the store, deletes the stale chunks of changed files, and commits each file
  to the :class:`~mmrag.ingest.ledger.Ledger` once all its chunks are stored (write-ahead intent
  first; see the ledger module for why a crash at any point is safe).

Where parsing and embedding run is the :class:`Distributor`'s choice: threads here by default
(:class:`LocalThreads`), Ray workers with :mod:`mmrag.ingest.ray_engine`. The driver always keeps
the reader's checks, the writer and the ledger. Re-ingesting an unchanged folder reads and hashes
every file but parses, embeds and writes none.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mmrag.encoders.base import DualEncoder, vector_spec
from mmrag.errors import ConfigError, TenancyError
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.ledger_base import IngestLedger
from mmrag.ingest.loaders import LoadOptions
from mmrag.ingest.stages import (
    Embedder,
    EncodeOnWrite,
    FileResult,
    Parser,
    Reader,
    RunContext,
    VectorSource,
    Writer,
    read_ahead,
)
from mmrag.ingest.stages.context import TIMING_KEYS, timed
from mmrag.ingest.stages.reader import Todo
from mmrag.ingest.store_ledger import open_ledger
from mmrag.store import QdrantStore
from mmrag.types import IngestSummary

log = logging.getLogger(__name__)

Prepare = Callable[[FileResult], FileResult]


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
        on_unreadable: A file the ledger knows that now fails to load (or is skipped): ``"keep"``
            its stored chunks (reported as kept stale, with the reason) or ``"remove"`` them.
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
    on_unreadable: str = "keep"

    def __post_init__(self) -> None:
        if self.on_unreadable not in ("keep", "remove"):
            raise ConfigError(f"on_unreadable must be 'keep' or 'remove', not {self.on_unreadable!r}")
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

    def context(
        self, encoder: DualEncoder, vector: str, captions: Mapping[str, Sequence[str]] | None
    ) -> RunContext:
        """The frozen context of one run with these options."""
        return RunContext(
            load=self.load_options(),
            max_bytes=int(self.max_file_mb * 1e6),
            captions=captions,
            vector=vector,
            encoder_id=encoder.id,
            dim=encoder.dim,
            tenant=self.tenant,
            batch_size=self.batch_size,
            text_window=self.text_window,
            workers=self.workers,
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


class Distributor(Protocol):
    """Where a run's parsing and embedding happen; the driver keeps the checks, writer and ledger.

    Example:
        >>> IngestRunner(encoder, store, distributor=RayDistributor(factory)).run(["docs"])  # doctest: +SKIP
    """

    def results(
        self, ctx: RunContext, reader: Reader, todo: Todo, prepare: Prepare | None = None
    ) -> Iterator[FileResult]:
        """One result per file of ``todo`` (in any order): skipped, unchanged, or parsed (then
        passed through ``prepare``, the vector source's, where it was parsed)."""
        ...

    def vector_source(self, ctx: RunContext, encoder: DualEncoder, summary: IngestSummary) -> VectorSource:
        """Where the writer gets the vectors of the chunks it stores."""
        ...


class LocalThreads:
    """The default distributor: read and parse on threads (``workers``) ahead of the writer, which
    embeds on this thread what the store lacks.

    Example:
        >>> IngestRunner(encoder, store, distributor=LocalThreads())  # the default  # doctest: +SKIP
    """

    def results(
        self, ctx: RunContext, reader: Reader, todo: Todo, prepare: Prepare | None = None
    ) -> Iterator[FileResult]:
        parser = Parser(ctx)

        def read_and_parse(item: tuple[Path, Path]) -> FileResult:
            res = parser.parse(reader.read(*item))
            return prepare(res) if prepare is not None else res

        # The window spans a whole batch, so the next batch is parsed while the encoder runs this
        # one (with only a few files ahead, the encoder waited for most of every batch's files).
        return read_ahead(read_and_parse, todo, workers=ctx.workers, window=ctx.read_ahead)

    def vector_source(self, ctx: RunContext, encoder: DualEncoder, summary: IngestSummary) -> VectorSource:
        return EncodeOnWrite(Embedder(encoder, ctx), summary)


class IngestRunner:
    """Ingest files into a store with one encoder, keeping a ledger of what each file wrote.

    Args:
        encoder: The dual encoder (its vector is created in the store if new).
        store: Destination store.
        options: Batch sizes, workers, limits.
        progress: Show a tqdm progress bar on stderr.
        ledger: The ledger to use; by default the store's (see
            :func:`~mmrag.ingest.store_ledger.open_ledger`: the SQLite file beside an Edge store,
            the store-side ledger of a server store), opened and closed by :meth:`run`.
        distributor: Where parsing and embedding run (default :class:`LocalThreads`; the Ray
            engine passes its own, see :class:`~mmrag.ingest.ray_engine.RayIngestRunner`).

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
        ledger: IngestLedger | None = None,
        distributor: Distributor | None = None,
    ) -> None:
        if not isinstance(encoder, DualEncoder):
            raise ConfigError("encoder must implement DualEncoder (encode_text, encode_image, id, dim)")
        self.encoder = encoder
        self.store = store
        self.options = options or IngestOptions()
        self.progress = progress
        self.distributor: Distributor = distributor or LocalThreads()
        self._ledger = ledger

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
        ledger = self._ledger or open_ledger(self.store)
        try:
            return self._run(ledger, root_paths, captions, limit, files, on_progress)
        finally:
            if self._ledger is None:
                ledger.close()

    def _run(
        self,
        ledger: IngestLedger,
        roots: list[Path],
        captions: Mapping[str, Sequence[str]] | None,
        limit: int | None,
        files: Sequence[Path] | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> IngestSummary:
        t_start = time.perf_counter()
        summary = IngestSummary(timings=dict.fromkeys(TIMING_KEYS, 0.0))
        timings = summary.timings
        if self.options.tenant is None and self.store.tenancy:
            raise TenancyError(f"store {self.store.location} is multi-tenant: ingest with a tenant")
        summary.vector = self.store.ensure_vector(vector_spec(self.encoder))
        with timed(timings, "recover"):
            summary.recovered = ledger.recover(self.store)
        known = ledger.entries()
        todo = Reader.walk(roots, limit, files)
        ctx = self.options.context(self.encoder, summary.vector, captions)
        reader = Reader(ctx, known)
        source = self.distributor.vector_source(ctx, self.encoder, summary)
        writer = Writer(self.store, ledger, ctx, summary, source)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="file", desc="ingest", dynamic_ncols=True)
        seen: set[str] = set()

        t_read = time.perf_counter()
        for res in self.distributor.results(ctx, reader, todo, source.prepare):
            timings["read"] += time.perf_counter() - t_read
            timings["parse"] += res.seconds
            summary.files_seen += 1
            if res.status == "skip" and res.skip is not None:
                log.warning("skipped %s: %s", res.path, res.skip.reason)
                summary.skipped.append(res.skip)
                if res.source in known and res.source not in seen:
                    seen.add(res.source)  # the file exists: its stored version is kept or removed
                    if self.options.on_unreadable == "remove":
                        writer.forget([res.source])
                        summary.removed_unreadable.append(res.skip)
                    else:
                        summary.kept_stale.append(res.skip)
            elif res.source in seen:
                pass  # the same file reached twice (a folder and a file in it, or a symlink)
            elif res.status == "unchanged":
                seen.add(res.source)
                summary.files_unchanged += 1
                summary.already_stored += ledger.count_chunks(res.source)
            else:
                seen.add(res.source)
                summary.files_loaded += 1
                writer.add(res, known.get(res.source))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(chunks=summary.embedded, refresh=False)
            if on_progress is not None:
                on_progress(summary.files_seen, len(todo))
            t_read = time.perf_counter()
        writer.flush(force=True)
        if bar is not None:
            bar.close()
        if self.options.prune:
            with timed(timings, "prune"):
                gone = reader.gone(roots, seen)
                writer.forget(gone)
                summary.pruned = len(gone)
        if self.options.optimize and (summary.written or summary.deleted):
            if self.progress:  # HNSW building on a big store runs for minutes after the bar ends
                print("ingest: building the store's index (optimize)…", file=sys.stderr, flush=True)
            with timed(timings, "optimize"):
                self.store.optimize()
        summary.seconds = time.perf_counter() - t_start
        return summary
