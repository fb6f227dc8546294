"""Context expansion: the chunks around each hit in its document, attached as ``Hit.context``.

Loaders number a document's chunks with ``metadata.position`` (reading order, text first: a PDF's
figures come after its text) and PDF chunks carry ``metadata.page``. For a hit and a width ``n``:

- a **text** chunk gets the ``n`` text chunks before and after it (by position), then the figures
  on its page (picked the same way past ``MAX_PAGE_CHUNKS``);
- a **figure** (an image chunk with a page) gets the text of its page, in reading order: on a
  page cut into more than ``MAX_PAGE_CHUNKS`` chunks, the ``MAX_PAGE_CHUNKS`` nearest the figure
  (vertical gap between citation boxes; without boxes, the first ones in reading order);
- any other image (a photo, a scan) gets the ``n`` chunks before and after it (its OCR text).

Each lookup is a filtered read of the hit's own source (and tenant), so context never crosses
documents or tenants. Context chunks are not hits: they have no scores and do not count in ``k``;
a neighbour that is also a hit appears in both places.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mmrag.store import QdrantStore, payload_chunk
from mmrag.types import Chunk, Hit

__all__ = ["MAX_PAGE_CHUNKS", "PAGE_READ_LIMIT", "context_of", "expand_hits"]

log = logging.getLogger(__name__)

MAX_PAGE_CHUNKS = 50  # a figure's page text: a bound for pages cut into many small chunks
# Chunks of one page read before picking: the store returns them in point-id order, not reading
# order, so the whole page is read and sorted first; this only bounds one lookup's cost.
PAGE_READ_LIMIT = 5000


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


def _gap(anchor: Chunk, c: Chunk) -> float:
    """Vertical distance between two chunks' citation boxes (``(left, bottom, right, top)``), 0 when
    they overlap; infinite when either has no box."""
    a = anchor.citation.bbox if anchor.citation else None
    b = c.citation.bbox if c.citation else None
    if a is None or b is None:
        return math.inf
    return max(0.0, a[1] - b[3], b[1] - a[3])


def _page(store: QdrantStore, flt: Mapping[str, Any], anchor: Chunk) -> list[Chunk]:
    """The page's chunks matching ``flt`` in reading order; past ``MAX_PAGE_CHUNKS``, the ones
    nearest ``anchor`` (ties, and chunks without boxes, by reading order)."""
    chunks = _read(store, flt, PAGE_READ_LIMIT)
    if len(chunks) >= PAGE_READ_LIMIT:
        log.warning(
            "page %s of %s has over %d chunks: context from the first %d read",
            flt.get("metadata.page"),
            anchor.source,
            PAGE_READ_LIMIT,
            PAGE_READ_LIMIT,
        )
    if len(chunks) <= MAX_PAGE_CHUNKS:
        return chunks
    nearest = sorted(range(len(chunks)), key=lambda i: (_gap(anchor, chunks[i]), i))
    return [chunks[i] for i in sorted(nearest[:MAX_PAGE_CHUNKS])]


def context_of(store: QdrantStore, chunk: Chunk, n: int, scope: Mapping[str, Any]) -> tuple[Chunk, ...]:
    """The context of one chunk (see the module docstring); ``scope``: extra filters every read
    keeps (the tenant)."""
    base: dict[str, Any] = {**scope, "source": chunk.source}
    pos, page = _position(chunk), chunk.metadata.get("page")
    out: list[Chunk] = []
    if chunk.modality == "image" and page is not None:
        out += _page(store, {**base, "modality": "text", "metadata.page": page}, chunk)
    elif pos is not None:
        near = [p for p in range(pos - n, pos + n + 1) if p >= 0 and p != pos]
        flt = {**base, "metadata.position": near}
        if chunk.modality == "text":
            flt["modality"] = "text"  # a PDF's figures sit after its text in position order
        out += _read(store, flt, len(near))
    if chunk.modality == "text" and page is not None:
        out += _page(store, {**base, "modality": "image", "metadata.page": page}, chunk)
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
