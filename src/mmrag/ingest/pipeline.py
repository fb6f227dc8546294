"""The ingest runner: reader → mapper → writer over batches, timing each stage.

* reader: walks the folder and turns files into chunks on a thread pool (parsing overlaps with
  encoding); unreadable files become skips with a reason, never crashes;
* mapper: embeds new chunks (text and image batches) with the dual encoder;
* writer: upserts into the store. Chunk ids are deterministic, and chunks already stored are
  not embedded again, so re-ingesting an unchanged folder embeds and writes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from mmrag.encoders.base import DualEncoder
from mmrag.errors import ConfigError, LoaderError, TenancyError
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.loaders import SUPPORTED_EXTENSIONS, iter_files, load_file
from mmrag.store import QdrantStore
from mmrag.tenancy import with_tenant
from mmrag.types import Chunk, IngestSummary, SkippedFile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """Knobs of one ingest run.

    Attributes:
        batch_size: Chunks per encoder batch (and per store write).
        workers: Threads parsing files ahead of the encoder.
        max_file_mb: Files larger than this are skipped with a reason.
        chunking: Text chunk size and overlap.
        optimize: Build the HNSW index after the run (Qdrant Edge).
        tenant: Owner of the ingested chunks (payload key ``tenant``; see :mod:`mmrag.tenancy`).
    """

    batch_size: int = 32
    workers: int = 2
    max_file_mb: float = 200.0
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    optimize: bool = True
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 1:
            raise ConfigError("batch_size and workers must be >= 1")
        if self.max_file_mb <= 0:
            raise ConfigError("max_file_mb must be > 0")


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


class IngestRunner:
    """Ingest files into a store with one encoder.

    Args:
        encoder: The dual encoder (its vector is created in the store if new).
        store: Destination store.
        options: Batch sizes, workers, limits.
        progress: Show a tqdm progress bar on stderr.

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
    ) -> None:
        if not isinstance(encoder, DualEncoder):
            raise ConfigError("encoder must implement DualEncoder (encode_text, encode_image, id, dim)")
        self.encoder = encoder
        self.store = store
        self.options = options or IngestOptions()
        self.progress = progress

    # -- reader -----------------------------------------------------------------------------
    def _files(self, roots: Iterable[str | Path], limit: int | None) -> list[Path]:
        files: list[Path] = []
        for root in roots:
            path = Path(root)
            if not path.exists():
                raise ConfigError(f"{path} does not exist; pass a folder or a file to ingest")
            files.extend(iter_files(path))
        if limit is not None:
            files = files[:limit]
        return files

    def _load(self, path: Path, captions: Mapping[str, Sequence[str]] | None) -> list[Chunk] | SkippedFile:
        try:
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                return SkippedFile(str(path), f"unsupported extension {path.suffix or '(none)'!r}")
            size_mb = path.stat().st_size / 1e6
            if size_mb > self.options.max_file_mb:
                return SkippedFile(
                    str(path), f"file is {size_mb:.0f} MB, over the {self.options.max_file_mb:g} MB limit"
                )
            return load_file(path, opts=self.options.chunking, captions=captions)
        except LoaderError as exc:
            return SkippedFile(str(path), str(exc))
        except OSError as exc:
            return SkippedFile(str(path), f"cannot read: {exc.strerror or exc}")

    def _read(
        self, files: list[Path], captions: Mapping[str, Sequence[str]] | None, summary: IngestSummary
    ) -> Iterator[list[Chunk]]:
        # Executor.map would submit every file at once and hold all parsed chunks in memory;
        # a bounded window of futures keeps file order and memory flat in the number of files.
        window = 4 * self.options.workers
        with ThreadPoolExecutor(self.options.workers, thread_name_prefix="mmrag-read") as pool:
            inflight: deque[tuple[Path, Future[list[Chunk] | SkippedFile]]] = deque()
            todo = iter(files)
            for path in islice(todo, window):
                inflight.append((path, pool.submit(self._load, path, captions)))
            while inflight:
                path, future = inflight.popleft()
                result = future.result()
                for nxt in islice(todo, 1):
                    inflight.append((nxt, pool.submit(self._load, nxt, captions)))
                summary.files_seen += 1
                if isinstance(result, SkippedFile):
                    log.warning("skipped %s: %s", path, result.reason)
                    summary.skipped.append(result)
                    continue
                summary.files_loaded += 1
                yield result

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
        t_start = time.perf_counter()
        summary = IngestSummary()
        timings = {"read": 0.0, "embed_text": 0.0, "embed_image": 0.0, "write": 0.0}
        tenant = self.options.tenant
        if tenant is None and self.store.tenancy:
            raise TenancyError(f"store {self.store.location} is multi-tenant: ingest with a tenant")
        vector = self.store.ensure_encoder(self.encoder)
        summary.vector = vector
        todo = list(files) if files is not None else self._files(roots, limit)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="file", desc="ingest", dynamic_ncols=True)
        pending: list[Chunk] = []
        seen_ids: set[str] = set()

        def flush(force: bool) -> None:
            while pending and (force or len(pending) >= self.options.batch_size):
                batch = pending[: self.options.batch_size]
                del pending[: self.options.batch_size]
                self._embed_and_write(batch, vector, summary, timings)

        t_read = time.perf_counter()
        for read in self._read(todo, captions, summary):
            chunks = with_tenant(read, tenant) if tenant is not None else read
            new = [c for c in chunks if c.id not in seen_ids]  # the same chunk twice in one run
            seen_ids.update(c.id for c in new)
            for c in new:
                summary.chunks[c.modality] = summary.chunks.get(c.modality, 0) + 1
            pending.extend(new)
            timings["read"] += time.perf_counter() - t_read
            flush(force=False)
            t_read = time.perf_counter()
            if bar is not None:
                bar.update(1)
            if on_progress is not None:
                on_progress(summary.files_seen, len(todo))
        flush(force=True)
        if bar is not None:
            bar.close()
        if self.options.optimize and summary.written:
            t = time.perf_counter()
            self.store.optimize()
            timings["optimize"] = time.perf_counter() - t
        summary.timings = timings
        summary.seconds = time.perf_counter() - t_start
        return summary

    def _embed_and_write(
        self, batch: list[Chunk], vector: str, summary: IngestSummary, timings: dict[str, float]
    ) -> None:
        stored = self.store.existing_ids([c.id for c in batch], vector)
        summary.already_stored += len(stored)
        todo = [c for c in batch if c.id not in stored]
        if not todo:
            return
        vecs = np.zeros((len(todo), self.encoder.dim), dtype=np.float32)
        text_idx = [i for i, c in enumerate(todo) if c.modality == "text"]
        image_idx = [i for i, c in enumerate(todo) if c.modality == "image"]
        if text_idx:
            t = time.perf_counter()
            vecs[text_idx] = self.encoder.encode_text([todo[i].text or "" for i in text_idx])
            timings["embed_text"] += time.perf_counter() - t
        if image_idx:
            t = time.perf_counter()
            vecs[image_idx] = self.encoder.encode_image([todo[i].image or "" for i in image_idx])
            timings["embed_image"] += time.perf_counter() - t
        summary.embedded += len(todo)
        t = time.perf_counter()
        summary.written += self.store.upsert_chunks(todo, vecs, vector)
        timings["write"] += time.perf_counter() - t
