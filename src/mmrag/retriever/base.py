"""What the retriever needs of a second stage: the :class:`Reranker` protocol.

The protocol lives on the retriever side, the side that calls it: :mod:`mmrag.rerank` implements it
structurally (no import), so rerank stays below the retriever in the import graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from mmrag.types import Hit


class Reranker(Protocol):
    """Re-orders a first-stage candidate pool for one text query.

    ``rerank`` returns the same hits, best first, each with ``rerank`` set (``None`` when the
    candidate has no text to score) and ``final_rank`` = its new 1-based position; the first-stage
    scores and ``ann_rank`` stay as they were.

    Example:
        >>> from mmrag.rerank import CrossEncoderReranker       # doctest: +SKIP
        >>> reranker: Reranker = CrossEncoderReranker(None)     # doctest: +SKIP
    """

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]: ...
