"""Retrieval: ANN candidate pool from the store, then (later stages) rerank and cut to k.

Faces describe one search as a :class:`SearchRequest` (first stage: a :class:`RetrievalMode`) and
print a :class:`SearchReport`; :meth:`Retriever.run` runs a request.
"""

from mmrag.retriever.core import Retriever, SearchResult
from mmrag.retriever.report import SearchReport
from mmrag.retriever.request import RetrievalMode, SearchRequest

__all__ = ["RetrievalMode", "Retriever", "SearchReport", "SearchRequest", "SearchResult"]
