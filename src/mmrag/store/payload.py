"""How a :class:`~mmrag.types.Chunk` is laid out as a Qdrant payload, and read back.

The chunk's :class:`~mmrag.types.Citation` is stored under ``citation`` beside the metadata (``null``
when it has none). Points written before citations existed have no such key; they are read back with
what their metadata still tells (a PDF page, a figure's box, a Markdown heading path), so old stores
keep loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmrag.types import Chunk, Citation

__all__ = [
    "EVAL_WRITER",
    "INGEST_WRITER",
    "TRAIN_WRITER",
    "WRITER_KEY",
    "chunk_payload",
    "legacy_citation",
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
        # null, not absent, for a chunk with nothing to cite: only points written before
        # citations existed lack the key, and only they are read back from their metadata.
        "citation": chunk.citation.to_dict() if chunk.citation is not None else None,
    }
    if "tenant" in chunk.metadata:
        payload["tenant"] = chunk.metadata["tenant"]
    if writer is not None:
        payload[WRITER_KEY] = writer
    return payload


def payload_chunk(point_id: str, payload: Mapping[str, Any]) -> Chunk:
    """The chunk a stored point holds (the inverse of :func:`chunk_payload`)."""
    metadata = dict(payload.get("metadata") or {})
    if "citation" not in payload:
        citation = legacy_citation(metadata)
    else:
        stored = payload["citation"]
        citation = Citation.from_dict(stored) if isinstance(stored, Mapping) else None
    return Chunk(
        id=point_id,
        modality=payload.get("modality", "text"),
        source=str(payload.get("source", "")),
        text=payload.get("text"),
        image=payload.get("image"),
        metadata=metadata,
        citation=citation,
    )


def legacy_citation(metadata: Mapping[str, Any]) -> Citation | None:
    """What the metadata of a chunk stored before citations existed still tells: its page, a
    figure's box, a Markdown heading path; ``None`` when it tells nothing.

    Example:
        >>> legacy_citation({"page": 2, "bbox": [1, 2, 3, 4]}).to_text()
        'p. 2, bbox (1.0, 2.0, 3.0, 4.0)'
    """
    page = metadata.get("page")
    page = page if isinstance(page, int) and not isinstance(page, bool) else None
    bbox = Citation.from_dict({"bbox": metadata.get("bbox")}).bbox
    headings = tuple(str(h) for h in metadata.get("headings") or () if isinstance(h, str))
    if page is None and bbox is None and not headings:
        return None
    return Citation(page=page, bbox=bbox, boxes=(bbox,) if bbox else (), headings=headings)
