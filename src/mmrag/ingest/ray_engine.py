"""The Ray Data engine for the ingest mapper (optional extra ``ray``): collections beyond one machine.

The driver keeps the ledger and the one writer; Ray Data runs the heavy middle of the pipeline::

    driver    walk, check and hash every file; the ledger's unchanged test (unchanged and
              bad files never leave the driver, so a re-run of an unchanged folder starts no Ray)
       │ files that need work
       ▼
    Ray Data  map_batches(_parse_files)     tasks: load, parse, chunk (the default engine's process_file)
              map_batches(_EncoderWorker)   actor pool: the encoder loads once per actor
       │ streamed back as batches finish (iter_rows)
       ▼
    driver    the default engine's writer: ledger intent → store upsert → ledger commit

Parsing and writing are the default engine's own code, so chunk ids, payloads, ledger entries and
skip reasons are the same; only where parsing and encoding run changes. The store is whatever
:class:`~mmrag.store.QdrantStore` opened: Qdrant Edge in-process, or a Qdrant server/cluster URL.
Workers need mmrag (and the encoder's weights, or the checkpoint path) installed on their node.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from mmrag._lazy import require
from mmrag.encoders.base import DualEncoder
from mmrag.errors import ConfigError, EncoderError, MmragError
from mmrag.ingest.files import FileResult, process_file
from mmrag.ingest.ledger import Ledger, LedgerEntry
from mmrag.ingest.loaders import LoadOptions
from mmrag.ingest.pipeline import IngestOptions, IngestRunner, _RunState
from mmrag.store import QdrantStore
from mmrag.types import Chunk, IngestSummary, SkippedFile

__all__ = ["RayIngestRunner", "RayOptions"]

log = logging.getLogger(__name__)
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
Batch = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True, slots=True)
class RayOptions:
    """Where the Ray Data stages run, and how wide.

    Attributes:
        address: Ray cluster to join (``"auto"``, ``"ray://head:10001"``). None uses the Ray this
            process already started, else ``RAY_ADDRESS``, else starts a local single-node Ray
            for the run.
        workers: Encoder actors; each loads the model once.
        cpus_per_worker: CPUs reserved per encoder actor (Ray sets its torch threads to match).
        gpus_per_worker: GPUs per encoder actor (0: encode on CPU).
        parse_cpus: CPUs reserved per parsing task. Keep it unlike ``cpus_per_worker``: Ray fuses
            two map stages with equal resources, and parsing would then run inside the encoder
            actors instead of beside them.
        parse_tasks: Most parsing tasks at once (None: as many as free CPUs allow).
        files_per_batch: Files per Ray batch, for parsing tasks and encoder calls alike.
    """

    address: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    parse_cpus: float = 0.5
    parse_tasks: int | None = None
    files_per_batch: int = 8

    def __post_init__(self) -> None:
        if self.workers < 1 or self.files_per_batch < 1:
            raise ConfigError("Ray workers and files_per_batch must be >= 1")
        if self.cpus_per_worker <= 0 or self.parse_cpus <= 0 or self.gpus_per_worker < 0:
            raise ConfigError("Ray cpus_per_worker and parse_cpus must be > 0, gpus_per_worker >= 0")
        if self.parse_tasks is not None and self.parse_tasks < 1:
            raise ConfigError("Ray parse_tasks must be >= 1 (or None for no limit)")


@dataclass(slots=True)
class _Embedded(FileResult):
    """A parsed file with its chunks' vectors (one row per chunk, in chunk order)."""

    vectors: FloatArray | None = None
    embed_seconds: dict[str, float] = field(default_factory=dict)


def _dumps(res: FileResult) -> bytes:
    # Ray Data batches are columns; a pickled typed record crosses the stage boundary whole.
    return pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(blob: bytes) -> FileResult:
    res = pickle.loads(blob)
    if not isinstance(res, FileResult):
        raise TypeError(f"expected a FileResult from the Ray stage, got {type(res).__name__}")
    return res


def _parse_files(
    batch: Batch,
    *,
    opts: LoadOptions,
    max_bytes: int,
    captions: Mapping[str, Sequence[str]] | None,
    tenant: str | None,
) -> Batch:
    """Ray task: check, hash and parse each file (no ledger here: the driver already decided)."""
    out = [
        _dumps(
            process_file(
                Path(str(path)),
                Path(str(root)),
                opts=opts,
                max_bytes=max_bytes,
                captions=captions,
                known={},
                vector="",
                tenant=tenant,
            )
        )
        for path, root in zip(batch["path"], batch["root"], strict=True)
    ]
    return {"idx": batch["idx"], "result": np.array(out, dtype=object)}


class _EncoderWorker:
    """Ray actor: embeds the chunks of each batch of parsed files with one encoder per actor."""

    def __init__(
        self, factory: Callable[[], DualEncoder], encoder_id: str, dim: int, sizes: dict[str, int]
    ) -> None:
        enc = factory()
        if (enc.id, enc.dim) != (encoder_id, dim):
            raise EncoderError(
                f"the Ray worker loaded encoder {enc.id!r} (dim {enc.dim}) but the driver's is "
                f"{encoder_id!r} (dim {dim}); give the workers the same model spec and weights"
            )
        self.encoder = enc
        self.sizes = sizes  # chunks per encoder call, per modality (as the default engine's writer)

    def __call__(self, batch: Batch) -> Batch:
        results = [_loads(b) for b in batch["result"]]
        embedded = self._embed_all([r for r in results if r.status == "load"])
        done = [embedded.get(id(r), r) for r in results]
        return {"idx": batch["idx"], "result": np.array([_dumps(r) for r in done], dtype=object)}

    def _embed_all(self, loaded: list[FileResult]) -> dict[int, _Embedded]:
        out: dict[int, _Embedded] = {}
        files: list[_Embedded] = []
        for r in loaded:
            e = _Embedded(**{f.name: getattr(r, f.name) for f in fields(FileResult)})
            # The writer keeps one chunk per id (the last); the vectors must follow the same rule.
            e.chunks = list({c.id: c for c in r.chunks}.values())
            e.vectors = np.zeros((len(e.chunks), self.encoder.dim), dtype=np.float32)
            files.append(e)
            out[id(r)] = e
        for modality in ("text", "image"):
            items = [(e, i, c) for e in files for i, c in enumerate(e.chunks) if c.modality == modality]
            if not items:
                continue
            t = time.perf_counter()
            size = self.sizes[modality]
            for s in range(0, len(items), size):
                part = items[s : s + size]
                vecs = self._encode(modality, part)
                for (e, i, _), v in zip(part, vecs, strict=True):
                    assert e.vectors is not None
                    e.vectors[i] = v
            share = (time.perf_counter() - t) / len(items)
            for e in files:
                n = sum(c.modality == modality for c in e.chunks)
                e.embed_seconds["embed_" + modality] = share * n
        for e in files:
            e.images = {}  # decoded images stay here: the driver needs only the vectors
        return out

    def _encode(self, modality: str, part: list[tuple[_Embedded, int, Chunk]]) -> FloatArray:
        if modality == "text":
            return self.encoder.encode_text([c.text or "" for _, _, c in part])
        # Decoded images from the parser (PDF figures, checked photos) save a second decode.
        decoded = [e.images.get(c.id) for e, _, c in part]
        images = [
            img if img is not None else c.image or "" for img, (_, _, c) in zip(decoded, part, strict=True)
        ]
        return self.encoder.encode_image(images)


class _RayState(_RunState):
    """The default writer, fed with the vectors that came back from the encoder actors."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.vectors: dict[str, FloatArray] = {}

    def add(self, res: FileResult, entry: LedgerEntry | None) -> None:
        if isinstance(res, _Embedded) and res.vectors is not None:
            self.vectors.update(zip((c.id for c in res.chunks), res.vectors, strict=True))
            self.summary.embedded += len(res.chunks)
            for key, seconds in res.embed_seconds.items():
                self.timings[key] = self.timings.get(key, 0.0) + seconds
        super().add(res, entry)

    def _write(self, batch: list[Chunk]) -> None:
        super()._write(batch)
        for c in batch:  # chunks found already stored never reach _embed
            self.vectors.pop(c.id, None)

    def _embed(self, todo: list[Chunk]) -> FloatArray:
        return np.stack([self.vectors[c.id] for c in todo]).astype(np.float32, copy=False)


class RayIngestRunner(IngestRunner):
    """:class:`~mmrag.ingest.IngestRunner` whose parsing and encoding run as Ray Data stages.

    Args:
        encoder: The driver's encoder: its id, dim and tokenizer name the store's vector and the
            chunking; the driver never encodes with it.
        store: Destination store (Qdrant Edge directory, or a Qdrant server/cluster).
        options: Chunks per encoder call and store write (``batch_size`` images, ``text_window``
            text chunks), limits, chunking.
        encoder_factory: Builds the same encoder on each Ray worker (picklable, e.g.
            ``functools.partial(load_encoder, "lite")``).
        ray_options: Cluster address and stage widths.
        progress: Show a tqdm progress bar on stderr.
        ledger: As for :class:`~mmrag.ingest.IngestRunner`.

    Raises:
        MissingExtraError: Ray Data is not installed (``pip install 'mmrag[ray]'``).

    Example:
        >>> factory = functools.partial(load_encoder, "lite", threads=1)          # doctest: +SKIP
        >>> runner = RayIngestRunner(factory(), QdrantStore.open("http://qdrant:6333"),
        ...                          encoder_factory=factory, ray_options=RayOptions(workers=4))
        >>> runner.run(["/mnt/docs"]).to_dict()["written"]                          # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: DualEncoder,
        store: QdrantStore,
        options: IngestOptions | None = None,
        *,
        encoder_factory: Callable[[], DualEncoder],
        ray_options: RayOptions | None = None,
        progress: bool = True,
        ledger: Ledger | None = None,
    ) -> None:
        require("ray.data", "ray")
        super().__init__(encoder, store, options, progress=progress, ledger=ledger)
        if not callable(encoder_factory):
            raise ConfigError("encoder_factory must be a callable that returns the encoder")
        self.encoder_factory = encoder_factory
        self.ray_options = ray_options or RayOptions()

    def _new_state(
        self, ledger: Ledger, vector: str, summary: IngestSummary, timings: dict[str, float]
    ) -> _RunState:
        return _RayState(self, ledger, vector, summary, timings)

    def _read(
        self,
        files: Sequence[tuple[Path, Path]],
        captions: Mapping[str, Sequence[str]] | None,
        known: Mapping[str, LedgerEntry],
        vector: str,
        tenant: str | None = None,
    ) -> Iterator[FileResult]:
        work: list[tuple[Path, Path, FileResult]] = []
        held: dict[str, list[FileResult]] = {}  # the same file reached again while out on Ray
        checks = self._scan(files, captions, known, vector, tenant, parse=False)
        for (path, root), res in zip(files, checks, strict=True):
            if res.status != "load":
                yield res
            elif res.source in held:
                held[res.source].append(res)
            else:
                held[res.source] = []
                work.append((path, root, res))
        if not work:
            return
        for idx, res in self._ray_map(work, captions, tenant):
            yield res
            for again in held.pop(work[idx][2].source, []):
                # As the default engine would see it: a second skip, or a copy the runner drops.
                if res.skip is not None:
                    again = FileResult(
                        again.path, again.source, "skip", skip=SkippedFile(str(again.path), res.skip.reason)
                    )
                yield again

    def _ray_map(
        self,
        work: list[tuple[Path, Path, FileResult]],
        captions: Mapping[str, Sequence[str]] | None,
        tenant: str | None,
    ) -> Iterator[tuple[int, FileResult]]:
        ray = require("ray", "ray")
        rd = require("ray.data", "ray")
        ro = self.ray_options
        started = not ray.is_initialized()
        if started:
            ray.init(address=ro.address, include_dashboard=False)
        elif ro.address is not None:
            log.warning("Ray is already initialised in this process; ignoring address %s", ro.address)
        ctx = rd.DataContext.get_current()
        saved = ctx.enable_progress_bars, ctx.print_on_execution_start
        ctx.enable_progress_bars, ctx.print_on_execution_start = False, False  # our bar counts files
        try:
            self._check_resources(ray.cluster_resources())
            rows = [{"idx": i, "path": str(p), "root": str(r)} for i, (p, r, _) in enumerate(work)]
            ds = rd.from_items(rows).map_batches(
                _parse_files,
                batch_size=ro.files_per_batch,
                batch_format="numpy",
                fn_kwargs={
                    "opts": self.options.load_options(),
                    "max_bytes": int(self.options.max_file_mb * 1e6),
                    "captions": dict(captions) if captions is not None else None,
                    "tenant": tenant,
                },
                num_cpus=ro.parse_cpus,
                compute=rd.TaskPoolStrategy(size=ro.parse_tasks) if ro.parse_tasks else None,
            )
            ds = ds.map_batches(
                _EncoderWorker,
                batch_size=ro.files_per_batch,
                batch_format="numpy",
                fn_constructor_kwargs={
                    "factory": self.encoder_factory,
                    "encoder_id": self.encoder.id,
                    "dim": self.encoder.dim,
                    "sizes": {"text": self.options.text_window, "image": self.options.batch_size},
                },
                compute=rd.ActorPoolStrategy(size=ro.workers),
                num_cpus=ro.cpus_per_worker,
                num_gpus=ro.gpus_per_worker or None,
            )
            for row in ds.iter_rows():
                yield int(row["idx"]), _loads(row["result"])
        except ray.exceptions.RayError as exc:
            # Ray's message ends with the worker's own exception line: keep that, not the traceback.
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise MmragError(
                f"a Ray ingest stage failed ({type(exc).__name__}): {lines[-1] if lines else exc!r}. "
                "Store and ledger stay consistent: the next run (or `mmrag verify --repair`) "
                "undoes any interrupted write"
            ) from exc
        finally:
            ctx.enable_progress_bars, ctx.print_on_execution_start = saved
            if started:
                ray.shutdown()

    def _check_resources(self, have: Mapping[str, float]) -> None:
        # Encoder actors hold their CPUs for the whole run; with none left over, parsing tasks
        # would never be scheduled and the run would hang instead of failing.
        ro = self.ray_options
        cpus = ro.workers * ro.cpus_per_worker + ro.parse_cpus
        gpus = ro.workers * ro.gpus_per_worker
        if have.get("CPU", 0.0) < cpus or have.get("GPU", 0.0) < gpus:
            raise ConfigError(
                f"the Ray cluster has {have.get('CPU', 0.0):g} CPUs and {have.get('GPU', 0.0):g} GPUs; "
                f"{ro.workers} encoder workers need {cpus:g} CPUs (parsing included) and {gpus:g} GPUs: "
                "lower --ray-workers or give Ray more resources"
            )
