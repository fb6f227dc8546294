"""The embedder stage: vectors for chunks, and where the writer gets them from.

:class:`Embedder` encodes chunks with one dual encoder, text in calls of ``text_window`` and
images in calls of ``batch_size`` (each through :func:`mmrag.ingest.indexing.embed_chunks`), and
times each modality. The writer asks a
:class:`VectorSource` for the vectors of the chunks it is about to store:

* :class:`EncodeOnWrite` (the default engine) calls the embedder right then, for the chunks the
  store does not already hold, so a re-run after a crash embeds only what is missing;
* :class:`Precomputed` (the Ray engine) hands out the vectors that :meth:`Embedder.embed_files`
  computed on the workers before the files reached the driver.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from mmrag.encoders.base import DualEncoder
from mmrag.ingest.indexing import embed_chunks
from mmrag.ingest.stages.context import FileResult, FloatArray, RunContext
from mmrag.types import Chunk, IngestSummary


class Embedder:
    """Vectors for chunks with one dual encoder.

    Args:
        encoder: The encoder (its ``dim`` sizes the vectors).
        ctx: The run's context (``text_window`` and ``batch_size``: chunks per encoder call).

    Example:
        >>> vecs, seconds = Embedder(encoder, ctx).embed(chunks, {})            # doctest: +SKIP
        >>> vecs.shape, sorted(seconds)                                          # doctest: +SKIP
        ((3, 384), ['embed_text'])
    """

    def __init__(self, encoder: DualEncoder, ctx: RunContext) -> None:
        self.encoder = encoder
        self.sizes = {"text": ctx.text_window, "image": ctx.batch_size}

    def embed(
        self, chunks: Sequence[Chunk], images: Mapping[str, Any]
    ) -> tuple[FloatArray, dict[str, float]]:
        """One row per chunk (in order) and the seconds spent per ``embed_<modality>`` key.

        ``images`` holds decoded images by chunk id (PDF figures, checked photos): they save a
        second decode; other image chunks are read from their path. Each encoder call goes
        through :func:`~mmrag.ingest.indexing.embed_chunks`, the one embed path of the project.
        """
        vecs = np.zeros((len(chunks), self.encoder.dim), dtype=np.float32)
        seconds: dict[str, float] = {}
        for modality, size in self.sizes.items():
            idx = [i for i, c in enumerate(chunks) if c.modality == modality]
            for s in range(0, len(idx), size):
                part = idx[s : s + size]
                vecs[part] = embed_chunks(self.encoder, [chunks[i] for i in part], images, timings=seconds)
        return vecs, seconds

    def prepare(self, res: FileResult) -> FileResult:
        """``res`` with its decoded images turned into the encoder's input, where the encoder can
        (``prepare_image``). Called on the parsing thread, so the next batch is ready while the
        encoder runs this one: left to ``encode_image``, resizing each batch held the encoder up
        ~1.5 ms an image, a fifth of its forward pass."""
        prepare = getattr(self.encoder, "prepare_image", None)
        if prepare is None or not res.images:
            return res
        t0 = time.perf_counter()
        images = {cid: prepare(img) for cid, img in res.images.items()}
        return replace(res, images=images, seconds=res.seconds + time.perf_counter() - t0)

    def embed_files(self, results: Sequence[FileResult]) -> list[FileResult]:
        """The parsed files of ``results`` with their chunks' vectors (others unchanged), for an
        engine that embeds before the writer. Each file's time is its share of the batch's."""
        loaded = [r for r in results if r.status == "load"]
        # The writer keeps one chunk per id (the last); the vectors must follow the same rule.
        chunks = [list({c.id: c for c in r.chunks}.values()) for r in loaded]
        flat = [c for cs in chunks for c in cs]
        images = {k: v for r in loaded for k, v in r.images.items()}
        vecs, seconds = self.embed(flat, images)
        share = {
            key: secs / sum(c.modality == key.removeprefix("embed_") for c in flat)
            for key, secs in seconds.items()
        }
        out: dict[int, FileResult] = {}
        start = 0
        for r, cs in zip(loaded, chunks, strict=True):
            spent = {k: v * sum(c.modality == k.removeprefix("embed_") for c in cs) for k, v in share.items()}
            out[id(r)] = replace(
                r,
                chunks=cs,
                vectors=vecs[start : start + len(cs)],
                images={},  # decoded images stay here: the writer needs only the vectors
                embed_seconds=spent,
            )
            start += len(cs)
        return [out.get(id(r), r) for r in results]


class VectorSource(Protocol):
    """Where the writer gets the vectors of the chunks it stores.

    Example:
        >>> source.hold(parsed)                                                  # doctest: +SKIP
        >>> vecs = source.vectors(parsed.chunks)  # only chunks the store lacks  # doctest: +SKIP
        >>> source.release(parsed.chunks)                                        # doctest: +SKIP
    """

    def prepare(self, res: FileResult) -> FileResult:
        """Run on the parsing thread after the parser: ready ``res``'s images for the encoder."""

    def hold(self, res: FileResult) -> None:
        """Keep what a parsed file brings for its chunks (decoded images, or vectors)."""

    def vectors(self, chunks: Sequence[Chunk]) -> FloatArray:
        """One row per chunk, in order (only chunks the store lacks are asked for)."""

    def release(self, chunks: Sequence[Chunk]) -> None:
        """Forget what was held for these chunks: stored, or found already stored."""


class EncodeOnWrite:
    """Embeds the chunks the writer asks for, timing into the run's summary.

    Args:
        embedder: The embedder.
        summary: The run's summary (``embedded`` and the ``embed_*`` timings grow here).

    Example:
        >>> source = EncodeOnWrite(Embedder(encoder, ctx), summary)             # doctest: +SKIP
    """

    def __init__(self, embedder: Embedder, summary: IngestSummary) -> None:
        self.embedder = embedder
        self.summary = summary
        self.images: dict[str, Any] = {}

    def prepare(self, res: FileResult) -> FileResult:
        return self.embedder.prepare(res)

    def hold(self, res: FileResult) -> None:
        self.images.update(res.images)

    def vectors(self, chunks: Sequence[Chunk]) -> FloatArray:
        vecs, seconds = self.embedder.embed(chunks, self.images)
        for key, secs in seconds.items():
            self.summary.timings[key] = self.summary.timings.get(key, 0.0) + secs
        self.summary.embedded += len(chunks)
        return vecs

    def release(self, chunks: Sequence[Chunk]) -> None:
        for c in chunks:
            self.images.pop(c.id, None)


class Precomputed:
    """Hands out the vectors a file arrived with (:meth:`Embedder.embed_files` ran elsewhere).

    Args:
        summary: The run's summary (``embedded`` and the ``embed_*`` timings grow as files arrive).

    Example:
        >>> source = Precomputed(summary)                                        # doctest: +SKIP
    """

    def __init__(self, summary: IngestSummary) -> None:
        self.summary = summary
        self.held: dict[str, FloatArray] = {}

    def prepare(self, res: FileResult) -> FileResult:
        return res  # embedded before it arrives

    def hold(self, res: FileResult) -> None:
        if res.vectors is None:
            return
        self.held.update(zip((c.id for c in res.chunks), res.vectors, strict=True))
        self.summary.embedded += len(res.chunks)
        for key, secs in res.embed_seconds.items():
            self.summary.timings[key] = self.summary.timings.get(key, 0.0) + secs

    def vectors(self, chunks: Sequence[Chunk]) -> FloatArray:
        return np.stack([self.held[c.id] for c in chunks]).astype(np.float32, copy=False)

    def release(self, chunks: Sequence[Chunk]) -> None:
        for c in chunks:
            self.held.pop(c.id, None)
