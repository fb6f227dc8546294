"""Second-stage reranking (inference only): a cross-encoder over the first-stage pool, fused with the
first-stage scores.

:class:`CrossEncoderReranker` implements the retriever's ``Reranker`` protocol (``retriever/base.py``)
structurally: this package imports neither the store nor the retriever. Training lives in
``train/reranker.py``.
"""

from collections.abc import Mapping

from mmrag.rerank.cross_encoder import CrossEncoderReranker
from mmrag.rerank.fusion import ScoreFusion, learn_weight

__all__ = ["CrossEncoderReranker", "ScoreFusion", "cached_reranker", "learn_weight"]

_CACHE: dict[tuple[str, int, int | None, bool, tuple[tuple[str, float], ...], str], CrossEncoderReranker] = {}


def cached_reranker(
    spec: str,
    threads: int = 0,
    *,
    max_length: int | None = None,
    int8: bool = False,
    fusion_weights: Mapping[str, float] | None = None,
    precision: str = "auto",
) -> CrossEncoderReranker:
    """One loaded cross-encoder per (spec, threads, options) in this process (faces share it).

    ``fusion_weights``: per-modality rerank weights that replace the checkpoint's own (empty or
    ``None``: the checkpoint's). ``precision``: ``auto`` (bf16 on CPUs with AMX or AVX512-BF16), ``fp32`` or
    ``bf16``.
    """
    weights = tuple(sorted((fusion_weights or {}).items()))
    key = (spec, threads, max_length, int8, weights, precision)
    if key not in _CACHE:
        given = dict(weights)
        fusion = ScoreFusion(given, default=given.get("text", 0.5)) if given else None
        _CACHE[key] = CrossEncoderReranker(
            spec,
            threads=threads or None,
            max_length=max_length,
            int8=int8,
            fusion=fusion,
            precision=precision,
        )
    return _CACHE[key]
