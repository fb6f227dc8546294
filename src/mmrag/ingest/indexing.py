"""The one embed-and-write path: chunks → dual-encoder vectors → store points.

Ingest's writer, evaluation's corpus indexing, reranker training and the closed loop's re-embed all
write through here, so a chunk is embedded and stored the same way whoever writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders.base import DualEncoder, FloatArray, vector_spec
from mmrag.types import Chunk

if TYPE_CHECKING:
    from mmrag.store import QdrantStore

__all__ = ["embed_and_write", "embed_chunks"]


def embed_chunks(
    encoder: DualEncoder,
    chunks: Sequence[Chunk],
    images: Mapping[str, Any] | None = None,
    *,
    timings: MutableMapping[str, float] | None = None,
) -> FloatArray:
    """One L2-normalised row per chunk: text chunks through the text tower, image chunks through the
    image tower (``images[chunk.id]``, an already decoded image, else the file at ``chunk.image``).

    ``timings`` (optional) accumulates seconds under ``embed_text`` and ``embed_image``.

    Example:
        >>> embed_chunks(encoder, chunks).shape             # doctest: +SKIP
        (12, 512)
    """
    vecs = np.zeros((len(chunks), encoder.dim), dtype=np.float32)
    text_idx = [i for i, c in enumerate(chunks) if c.modality == "text"]
    image_idx = [i for i, c in enumerate(chunks) if c.modality == "image"]
    decoded = images or {}
    if text_idx:
        t = time.perf_counter()
        vecs[text_idx] = encoder.encode_text([chunks[i].text or "" for i in text_idx])
        if timings is not None:
            timings["embed_text"] = timings.get("embed_text", 0.0) + time.perf_counter() - t
    if image_idx:
        t = time.perf_counter()
        items = [decoded.get(chunks[i].id) for i in image_idx]
        vecs[image_idx] = encoder.encode_image(
            [
                img if img is not None else chunks[i].image or ""
                for img, i in zip(items, image_idx, strict=True)
            ]
        )
        if timings is not None:
            timings["embed_image"] = timings.get("embed_image", 0.0) + time.perf_counter() - t
    return vecs


def embed_and_write(
    encoder: DualEncoder,
    store: QdrantStore,
    chunks: Sequence[Chunk],
    *,
    vector: str | None = None,
    images: Mapping[str, Any] | None = None,
    present: Collection[str] | None = None,
    on_batch: Callable[[int], None] | None = None,
    batch: int = 256,
    writer: str | None = None,
) -> int:
    """Embed ``chunks`` and upsert them into ``store`` in batches; returns how many were written.

    Args:
        encoder: The dual encoder.
        store: Destination; the encoder's vector is created there if new (unless ``vector`` is given).
        chunks: What to write (ids are the point ids; an upsert is idempotent).
        vector: The named vector to write into (default: the encoder's own).
        images: Decoded images by chunk id (PDF figures, checked photos), saving a second decode.
        present: Ids of ``chunks`` already stored, when the caller just looked them up.
        on_batch: Called with the size of each written batch (progress bars).
        batch: Chunks per encoder call and store write.
        writer: The marker new points carry (``mmrag.store.payload.EVAL_WRITER`` / ``TRAIN_WRITER``):
            ``mmrag verify --repair`` deletes only points that ingest wrote.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    name = vector or store.ensure_vector(vector_spec(encoder))
    written = 0
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        vecs = embed_chunks(encoder, part, images)
        known = None if present is None else {c.id for c in part if c.id in present}
        written += store.upsert_chunks(part, vecs, name, present=known, writer=writer)
        if on_batch is not None:
            on_batch(len(part))
    return written
