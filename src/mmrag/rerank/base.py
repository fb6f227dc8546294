"""What a reranker provides to the retriever."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mmrag.types import Hit


class Reranker(Protocol):
    """Re-orders a first-stage candidate pool for one text query.

    ``rerank`` returns the same hits, best first, each with ``rerank`` set (``None`` when the
    candidate has no text to score) and ``final_rank`` = its new 1-based position; the first-stage
    scores and ``ann_rank`` stay as they were.
    """

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]: ...
