"""Context expansion: the chunks around each hit in its document, attached as ``Hit.context``.

Loaders number a document's chunks with ``metadata.position`` (reading order, text first: a PDF's
figures come after its text) and PDF chunks carry ``metadata.page``. For a hit and a width ``n``:

- a **text** chunk gets the ``n`` text chunks before and after it (by position), then the figures
  on its page;
- a **figure** (an image chunk with a page) gets the text of its page, in reading order (at most
  ``MAX_PAGE_CHUNKS``);
- any other image (a photo, a scan) gets the ``n`` chunks before and after it (its OCR text).

Each lookup is a filtered read of the hit's own source (and tenant), so context never crosses
documents or tenants. Context chunks are not hits: they have no scores and do not count in ``k``;
a neighbour that is also a hit appears in both places.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mmrag.store import QdrantStore, payload_chunk
from mmrag.types import Chunk, Hit

__all__ = ["MAX_PAGE_CHUNKS", "context_of", "expand_hits"]

MAX_PAGE_CHUNKS = 50  # a figure's page text: a bound for pages cut into many small chunks


def _position(c: Chunk) -> int | None:
    pos = c.metadata.get("position")
    return pos if isinstance(pos, int) and not isinstance(pos, bool) else None


def _read(store: QdrantStore, flt: Mapping[str, Any], limit: int) -> list[Chunk]:
    chunks = []
    for r in store.iter_records(flt, batch=min(limit, 256)):
        chunks.append(payload_chunk(r.id, r.payload))
        if len(chunks) >= limit:
            break
    return sorted(chunks, key=lambda c: (_position(c) or 0, c.id))


def context_of(store: QdrantStore, chunk: Chunk, n: int, scope: Mapping[str, Any]) -> tuple[Chunk, ...]:
    """The context of one chunk (see the module docstring); ``scope``: extra filters every read
    keeps (the tenant)."""
    base: dict[str, Any] = {**scope, "source": chunk.source}
    pos, page = _position(chunk), chunk.metadata.get("page")
    out: list[Chunk] = []
    if chunk.modality == "image" and page is not None:
        out += _read(store, {**base, "modality": "text", "metadata.page": page}, MAX_PAGE_CHUNKS)
    elif pos is not None:
        near = [p for p in range(pos - n, pos + n + 1) if p >= 0 and p != pos]
        flt = {**base, "metadata.position": near}
        if chunk.modality == "text":
            flt["modality"] = "text"  # a PDF's figures sit after its text in position order
        out += _read(store, flt, len(near))
    if chunk.modality == "text" and page is not None:
        out += _read(store, {**base, "modality": "image", "metadata.page": page}, MAX_PAGE_CHUNKS)
    return tuple(c for c in out if c.id != chunk.id)


def expand_hits(
    store: QdrantStore, hits: Sequence[Hit], n: int, filters: Mapping[str, Any] | None
) -> list[Hit]:
    """``hits`` with ``context`` set; ``filters``: the search's, whose ``tenant`` the reads keep
    (the hit's own tenant when it has one)."""
    out = []
    for h in hits:
        tenant = h.chunk.metadata.get("tenant", (filters or {}).get("tenant"))
        scope = {"tenant": tenant} if tenant is not None else {}
        out.append(replace(h, context=context_of(store, h.chunk, n, scope)))
    return out
