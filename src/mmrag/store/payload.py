"""How a :class:`~mmrag.types.Chunk` is laid out as a Qdrant payload, and read back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmrag.types import Chunk

__all__ = ["chunk_payload", "payload_chunk"]


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    """The payload stored with a chunk's point; ``tenant`` is lifted to the top for the tenant index."""
    payload: dict[str, Any] = {
        "modality": chunk.modality,
        "source": chunk.source,
        "text": chunk.text,
        "image": chunk.image,
        "metadata": dict(chunk.metadata),
    }
    if "tenant" in chunk.metadata:
        payload["tenant"] = chunk.metadata["tenant"]
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
