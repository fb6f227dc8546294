"""How a :class:`~mmrag.types.Chunk` is laid out as a Qdrant payload, and read back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmrag.types import Chunk

__all__ = [
    "EVAL_WRITER",
    "INGEST_WRITER",
    "TRAIN_WRITER",
    "WRITER_KEY",
    "chunk_payload",
    "payload_chunk",
]

# Who wrote a point: ``mmrag verify --repair`` deletes only points that ingest wrote (and whose file
# its ledger knows); points of eval, training or other programs are reported, never silently deleted.
WRITER_KEY = "_writer"
INGEST_WRITER = "ingest"
EVAL_WRITER = "eval"
TRAIN_WRITER = "train"


def chunk_payload(chunk: Chunk, writer: str | None = None) -> dict[str, Any]:
    """The payload stored with a chunk's point; ``tenant`` is lifted to the top for the tenant index,
    and ``writer`` (who writes it: :data:`INGEST_WRITER`, ...) is kept under :data:`WRITER_KEY`."""
    payload: dict[str, Any] = {
        "modality": chunk.modality,
        "source": chunk.source,
        "text": chunk.text,
        "image": chunk.image,
        "metadata": dict(chunk.metadata),
    }
    if "tenant" in chunk.metadata:
        payload["tenant"] = chunk.metadata["tenant"]
    if writer is not None:
        payload[WRITER_KEY] = writer
    return payload


def payload_chunk(point_id: str, payload: Mapping[str, Any]) -> Chunk:
    """The chunk a stored point holds (the inverse of :func:`chunk_payload`)."""
    return Chunk(
        id=point_id,
        modality=payload.get("modality", "text"),
        source=str(payload.get("source", "")),
        text=payload.get("text"),
        image=payload.get("image"),
        metadata=dict(payload.get("metadata") or {}),
    )
