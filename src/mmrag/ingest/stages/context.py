"""What one run's stages share: the frozen :class:`RunContext`, and the per-file record they pass on.

A run fixes everything its stages need before the first file is read (load options, limits,
captions, the store's vector, the tenant, batch sizes) in one :class:`RunContext`; the stages
never take these one argument at a time. Each file then travels through the stages as one
:class:`FileResult`, which each stage replaces by a fuller copy:

    Reader  → status "skip" | "unchanged" | "load" (with the file's bytes and digest)
    Parser  → the chunks and decoded images of a "load" (the bytes dropped), or a "skip"
    Embedder (only when it runs before the writer, as on Ray workers) → the chunks' vectors
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmrag.ingest.loaders import LoadOptions, RawFile
from mmrag.types import Chunk, SkippedFile

Status = Literal["load", "unchanged", "skip"]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]

# The timing keys of every run, in the order IngestSummary.timings lists them; "recover",
# "prune" and "optimize" follow when those steps run.
TIMING_KEYS = ("read", "parse", "embed_text", "embed_image", "write", "ledger")


@dataclass(frozen=True, slots=True)
class RunContext:
    """Everything one ingest run's stages share, fixed before the first file is read.

    Frozen and picklable: the Ray engine ships it to its workers as is.

    Attributes:
        load: How files become chunks (chunking, OCR, PDF figures, image limit).
        max_bytes: Files larger than this are skipped with a reason.
        captions: Image captions keyed by file name, or None.
        vector: The store's named vector the run writes (and the ledger's unchanged test asks for).
        encoder_id: The encoder's id (remote workers check that they load the same model).
        dim: The encoder's vector size.
        tenant: Owner of the chunks (their ids and ledger keys name it), or None.
        batch_size: Images per encoder call and store write.
        text_window: Text chunks per encoder call and store write.
        workers: Threads reading and parsing files ahead of the encoder.

    Example:
        >>> ctx = RunContext(LoadOptions(), 200_000_000, None, "lite", "lite", 256)  # doctest: +SKIP
    """

    load: LoadOptions
    max_bytes: int
    captions: Mapping[str, Sequence[str]] | None
    vector: str
    encoder_id: str
    dim: int
    tenant: str | None = None
    batch_size: int = 32
    text_window: int = 256
    workers: int = 2

    @property
    def read_ahead(self) -> int:
        """Files read and parsed ahead of the one being written: a whole encoder batch, so the
        next batch is parsed while the encoder runs this one, plus a few per worker thread."""
        return self.batch_size + 4 * self.workers


@dataclass(frozen=True, slots=True, eq=False)  # eq would compare vector arrays element-wise
class FileResult:
    """What the stages learned about one file so far.

    Attributes:
        path: The file as walked.
        source: Its ledger key (:func:`ledger_source`: the resolved path, plus the tenant).
        status: ``"skip"`` (see ``skip``), ``"unchanged"`` (the ledger has this version), or
            ``"load"`` (to be parsed, then written).
        digest: Hex SHA-256 of the bytes read (computed once, by the reader).
        params: The load-parameter fingerprint stored beside the digest in the ledger.
        raw: The bytes read, until the parser has used them.
        chunks: The parsed chunks (the tenant's copies when the run has a tenant).
        images: Decoded images by chunk id (PDF figures, checked photos): no second decode.
        vectors: One row per chunk, in chunk order, when embedded before the writer (Ray).
        skip: Why the file is skipped.
        seconds: Time spent reading and parsing it (on a worker thread or a Ray task).
        embed_seconds: Time spent embedding its chunks, per ``embed_<modality>`` key (Ray).

    Example:
        >>> FileResult(Path("a.txt"), "/docs/a.txt", "unchanged", "9f86...", "loader=2;...")  # doctest: +SKIP
    """

    path: Path
    source: str
    status: Status
    digest: str = ""
    params: str = ""
    raw: RawFile | None = None
    chunks: list[Chunk] = field(default_factory=list)
    images: Mapping[str, Any] = field(default_factory=dict)
    vectors: FloatArray | None = None
    skip: SkippedFile | None = None
    seconds: float = 0.0
    embed_seconds: Mapping[str, float] = field(default_factory=dict)


def skipped(path: Path, source: str, reason: str, seconds: float = 0.0) -> FileResult:
    """A skip record: every way a file can be bad ends here, never in an exception out of the run."""
    return FileResult(path, source, "skip", skip=SkippedFile(str(path), reason), seconds=seconds)


_TENANT_SEP = "\x00tenant="


def ledger_source(source: str, tenant: str | None) -> str:
    """The ledger key of a file: its path, plus the tenant when ingested for one (the same file may
    be stored once per tenant, each copy with its own chunk ids and ledger entry)."""
    return source if tenant is None else f"{source}{_TENANT_SEP}{tenant}"


def split_ledger_source(key: str) -> tuple[str, str | None]:
    """``(path, tenant)`` of a ledger key made by :func:`ledger_source`."""
    path, sep, tenant = key.partition(_TENANT_SEP)
    return path, (tenant if sep else None)


def chunk_ledger_key(chunk: Chunk) -> str:
    """The ledger entry a chunk belongs to: its file, per tenant (see :func:`ledger_source`)."""
    tenant = chunk.metadata.get("tenant")
    return ledger_source(chunk.source, tenant if isinstance(tenant, str) else None)


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[key]`` (stages on the driver time themselves so)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
