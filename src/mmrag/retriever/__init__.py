"""Retrieval: ANN candidate pool from the store, then (later stages) rerank and cut to k."""

from mmrag.retriever.core import Retriever, SearchResult

__all__ = ["Retriever", "SearchResult"]
