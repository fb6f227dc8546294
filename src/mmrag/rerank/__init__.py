"""Second-stage reranking (inference only): a cross-encoder over the first-stage pool, fused with the
first-stage scores.

:class:`CrossEncoderReranker` implements the retriever's ``Reranker`` protocol (``retriever/base.py``)
structurally: this package imports neither the store nor the retriever. Training lives in
``train/reranker.py``.
"""

from mmrag.rerank.cross_encoder import CrossEncoderReranker
from mmrag.rerank.fusion import ScoreFusion, learn_weight

__all__ = ["CrossEncoderReranker", "ScoreFusion", "cached_reranker", "learn_weight"]

_CACHE: dict[tuple[str, int], CrossEncoderReranker] = {}


def cached_reranker(spec: str, threads: int = 0) -> CrossEncoderReranker:
    """One loaded cross-encoder per (spec, threads) in this process (the API and the UI share it)."""
    key = (spec, threads)
    if key not in _CACHE:
        _CACHE[key] = CrossEncoderReranker(spec, threads=threads or None)
    return _CACHE[key]
