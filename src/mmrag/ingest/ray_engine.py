"""The Ray Data engine (optional extra ``ray``): the ingest stages distributed beyond one machine.

:class:`RayDistributor` is a :class:`~mmrag.ingest.pipeline.Distributor`: the runner, its stages and
its writer are the default engine's; only where the parser and the embedder run changes::

    driver    Reader: walk, check and hash every file; the ledger's unchanged test (unchanged and
              bad files never leave the driver, so a re-run of an unchanged folder starts no Ray)
       │ files that need work
       ▼
    Ray Data  map_batches(_parse_files)     tasks: Reader (re-read on the worker) → Parser
              map_batches(_EncoderWorker)   actor pool: Embedder, the encoder loads once per actor
       │ streamed back as batches finish (iter_rows)
       ▼
    driver    Writer: ledger intent → store upsert → ledger commit, with the workers' vectors

So chunk ids, payloads, ledger entries and skip reasons are the same as the default engine's. A
worker reads the file again (it may be on another node) and hashes what it read: the ledger
records the digest of the bytes that were parsed. The store is whatever
:class:`~mmrag.store.QdrantStore` opened: Qdrant Edge in-process, or a Qdrant server/cluster URL.
Workers need mmrag (and the encoder's weights, or the checkpoint path) installed on their node.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrag._lazy import require
from mmrag.encoders.base import DualEncoder
from mmrag.errors import ConfigError, EncoderError, MmragError
from mmrag.ingest.ledger_base import IngestLedger
from mmrag.ingest.pipeline import IngestOptions, IngestRunner, Prepare
from mmrag.ingest.stages import (
    Embedder,
    FileResult,
    Parser,
    Precomputed,
    Reader,
    RunContext,
    VectorSource,
    read_ahead,
)
from mmrag.ingest.stages.context import skipped
from mmrag.ingest.stages.reader import Todo
from mmrag.store import QdrantStore
from mmrag.types import IngestSummary

__all__ = ["RayDistributor", "RayIngestRunner", "RayOptions"]

log = logging.getLogger(__name__)
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


def _dumps(res: FileResult) -> bytes:
    # Ray Data batches are columns; a pickled typed record crosses the stage boundary whole.
    return pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(blob: bytes) -> FileResult:
    res = pickle.loads(blob)
    if not isinstance(res, FileResult):
        raise TypeError(f"expected a FileResult from the Ray stage, got {type(res).__name__}")
    return res


def _parse_files(batch: Batch, *, ctx: RunContext) -> Batch:
    """Ray task: the Reader (no ledger here: the driver already decided) and the Parser."""
    reader, parser = Reader(ctx, {}), Parser(ctx)
    out = [
        _dumps(parser.parse(reader.read(Path(str(path)), Path(str(root)))))
        for path, root in zip(batch["path"], batch["root"], strict=True)
    ]
    return {"idx": batch["idx"], "result": np.array(out, dtype=object)}


class _EncoderWorker:
    """Ray actor: the Embedder over each batch of parsed files, with one encoder per actor."""

    def __init__(self, factory: Callable[[], DualEncoder], ctx: RunContext) -> None:
        enc = factory()
        if (enc.id, enc.dim) != (ctx.encoder_id, ctx.dim):
            raise EncoderError(
                f"the Ray worker loaded encoder {enc.id!r} (dim {enc.dim}) but the driver's is "
                f"{ctx.encoder_id!r} (dim {ctx.dim}); give the workers the same model spec and weights"
            )
        self.embedder = Embedder(enc, ctx)

    def __call__(self, batch: Batch) -> Batch:
        done = self.embedder.embed_files([_loads(b) for b in batch["result"]])
        return {"idx": batch["idx"], "result": np.array([_dumps(r) for r in done], dtype=object)}


class RayDistributor:
    """Runs the Parser and the Embedder as Ray Data stages; the driver keeps Reader checks and Writer.

    Args:
        encoder_factory: Builds the run's encoder on each Ray worker (picklable, e.g.
            ``functools.partial(load_encoder, "lite")``).
        ray_options: Cluster address and stage widths.

    Raises:
        ConfigError: ``encoder_factory`` is not callable.

    Example:
        >>> dist = RayDistributor(functools.partial(load_encoder, "lite"))              # doctest: +SKIP
        >>> IngestRunner(load_encoder("lite"), store, distributor=dist).run(["/mnt/docs"])  # doctest: +SKIP
    """

    def __init__(
        self, encoder_factory: Callable[[], DualEncoder], ray_options: RayOptions | None = None
    ) -> None:
        if not callable(encoder_factory):
            raise ConfigError("encoder_factory must be a callable that returns the encoder")
        self.encoder_factory = encoder_factory
        self.ray_options = ray_options or RayOptions()

    def vector_source(self, ctx: RunContext, encoder: DualEncoder, summary: IngestSummary) -> VectorSource:
        return Precomputed(summary)  # the driver never encodes

    def results(
        self, ctx: RunContext, reader: Reader, todo: Todo, prepare: Prepare | None = None
    ) -> Iterator[FileResult]:
        # ``prepare`` is Precomputed's, a no-op: the encoder actors take decoded images.
        def check(item: tuple[Path, Path]) -> FileResult:
            # The driver only decides: the bytes are read again where they are parsed.
            return replace(reader.read(*item), raw=None)

        work: list[tuple[Path, Path, FileResult]] = []
        held: dict[str, list[FileResult]] = {}  # the same file reached again while out on Ray
        checks = read_ahead(check, todo, workers=ctx.workers, window=ctx.read_ahead)
        for (path, root), res in zip(todo, checks, strict=True):
            if res.status != "load":
                yield res
            elif res.source in held:
                held[res.source].append(res)
            else:
                held[res.source] = []
                work.append((path, root, res))
        if not work:
            return
        for idx, res in self._ray_map(ctx, work):
            yield res
            for again in held.pop(work[idx][2].source, []):
                # As the default engine would see it: a second skip, or a copy the runner drops.
                if res.skip is not None:
                    again = skipped(again.path, again.source, res.skip.reason)
                yield again

    def _ray_map(
        self, ctx: RunContext, work: Iterable[tuple[Path, Path, FileResult]]
    ) -> Iterator[tuple[int, FileResult]]:
        ray = require("ray", "ray")
        rd = require("ray.data", "ray")
        ro = self.ray_options
        started = not ray.is_initialized()
        if started:
            ray.init(address=ro.address, include_dashboard=False)
        elif ro.address is not None:
            log.warning("Ray is already initialised in this process; ignoring address %s", ro.address)
        dctx = rd.DataContext.get_current()
        saved = dctx.enable_progress_bars, dctx.print_on_execution_start
        dctx.enable_progress_bars, dctx.print_on_execution_start = False, False  # our bar counts files
        # Shipped to every task and actor: a plain dict of captions pickles whatever mapping was given.
        ctx = replace(ctx, captions=dict(ctx.captions) if ctx.captions is not None else None)
        try:
            self._check_resources(ray.cluster_resources())
            rows = [{"idx": i, "path": str(p), "root": str(r)} for i, (p, r, _) in enumerate(work)]
            ds = rd.from_items(rows).map_batches(
                _parse_files,
                batch_size=ro.files_per_batch,
                batch_format="numpy",
                fn_kwargs={"ctx": ctx},
                num_cpus=ro.parse_cpus,
                compute=rd.TaskPoolStrategy(size=ro.parse_tasks) if ro.parse_tasks else None,
            )
            ds = ds.map_batches(
                _EncoderWorker,
                batch_size=ro.files_per_batch,
                batch_format="numpy",
                fn_constructor_kwargs={"factory": self.encoder_factory, "ctx": ctx},
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
            dctx.enable_progress_bars, dctx.print_on_execution_start = saved
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


class RayIngestRunner:
    """An :class:`~mmrag.ingest.IngestRunner` whose parsing and encoding run as Ray Data stages
    (a :class:`RayDistributor`); the driver never encodes with ``encoder``, whose id, dim and
    tokenizer name the store's vector and the chunking.

    Args:
        encoder, store, options, progress, ledger: As for :class:`~mmrag.ingest.IngestRunner`.
        encoder_factory: Builds the same encoder on each Ray worker (picklable, e.g.
            ``functools.partial(load_encoder, "lite")``).
        ray_options: Cluster address and stage widths.

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
        ledger: IngestLedger | None = None,
    ) -> None:
        require("ray.data", "ray")
        self.distributor = RayDistributor(encoder_factory, ray_options)
        self.runner = IngestRunner(
            encoder, store, options, progress=progress, ledger=ledger, distributor=self.distributor
        )

    def run(
        self,
        roots: Iterable[str | Path],
        *,
        captions: Mapping[str, Sequence[str]] | None = None,
        limit: int | None = None,
        files: Sequence[Path] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> IngestSummary:
        """As :meth:`IngestRunner.run <mmrag.ingest.IngestRunner.run>`, on Ray."""
        return self.runner.run(roots, captions=captions, limit=limit, files=files, on_progress=on_progress)
