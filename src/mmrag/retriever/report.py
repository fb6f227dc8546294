"""One search as a report that renders itself: JSON (``mmrag search --json``) and text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmrag.types import Chunk, Hit

__all__ = ["SearchReport"]

_UNTRAINED_NOTE = (
    "note: this encoder's image/text heads are untrained; cross-modal scores are not "
    "meaningful (train with `mmrag train`)"
)
_SNIPPET_CHARS = 110


@dataclass(frozen=True, slots=True)
class SearchReport:
    """What one search asked for, what ran and what it found.

    Attributes:
        query: The text query (``None`` for an image query).
        image: The image query's path (``None`` for a text query).
        encoder: Encoder id.
        aligned: Whether the encoder's image and text heads are trained together (cross-modal
            scores mean something).
        hybrid: Whether BM25 was fused with dense search.
        fusion: The fusion method when hybrid, else ``None``.
        reranker: Reranker id when one was loaded, else ``None``.
        hits: The hits, best first.
        timings: Per-stage seconds (``encode``, ``ann``, ``sparse``, ``fuse``, ``rerank``, ``total``).
        modality: The modality filter (not in the JSON: it only decides the text's untrained-heads note).

    Example:
        >>> r = SearchReport(query="q", image=None, encoder="lite", aligned=True, hybrid=False,
        ...                  fusion=None, reranker=None, hits=[], timings={"total": 0.0012})
        >>> r.to_dict()["timings_ms"]
        {'total': 1.2}
        >>> r.to_text()
        'no results (is the store empty? run `mmrag ingest PATH`)'
    """

    query: str | None
    image: str | None
    encoder: str
    aligned: bool
    hybrid: bool
    fusion: str | None
    reranker: str | None
    hits: Sequence[Hit]
    timings: Mapping[str, float] = field(default_factory=dict)
    modality: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stable ``mmrag search --json`` object (documented in the README); timings in ms."""
        return {
            "query": self.query,
            "image": self.image,
            "encoder": self.encoder,
            "aligned": self.aligned,
            "hybrid": self.hybrid,
            "fusion": self.fusion,
            "reranker": self.reranker,
            "hits": [h.to_dict() for h in self.hits],
            "timings_ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }

    def to_text(self) -> str:
        """One line per hit (every stage's score, the rank it moved from, where) and a snippet."""
        lines = []
        if not self.aligned and (self.image is not None or self.modality == "image"):
            lines.append(_UNTRAINED_NOTE)
        lines += [_hit_text(h) for h in self.hits]
        if not self.hits:
            lines.append("no results (is the store empty? run `mmrag ingest PATH`)")
        return "\n".join(lines)


def _hit_text(h: Hit) -> str:
    snippet = (h.chunk.text or h.chunk.image or "").replace("\n", " ")[:_SNIPPET_CHARS]
    page = h.chunk.metadata.get("page")
    where = f"{h.chunk.source}" + (f" p.{page}" if page else "")
    scores = " ".join(
        f"{name} {v:.3f}"
        for name, v in (("dense", h.dense), ("bm25", h.sparse), ("fused", h.fused), ("rerank", h.rerank))
        if v is not None
    )
    moved = f" (was {h.ann_rank})" if h.ann_rank != h.final_rank else ""
    text = f"{h.final_rank:>2}.{moved} {scores} [{h.chunk.modality}] {where}\n    {snippet}"
    return text + "".join(f"\n      + {_context_text(c)}" for c in h.context)


def _context_text(c: Chunk) -> str:
    """One context chunk (``--expand``): where it sits in the document and a short snippet."""
    page, pos = c.metadata.get("page"), c.metadata.get("position")
    where = " ".join(x for x in (f"p.{page}" if page else "", f"#{pos}" if pos is not None else "") if x)
    snippet = (c.text or c.image or "").replace("\n", " ")[: _SNIPPET_CHARS - 30]
    return f"[{c.modality}] {where}: {snippet}"
