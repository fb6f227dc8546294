"""Results a RAG application can use as they are: diversity (MMR), one entry per document (group by
source) and context around each hit (see :mod:`mmrag.retriever.expand`).

All three run after the retriever's stages, on the final order (after rerank when it ran):

1. **MMR** re-orders the rerank-stage pool (the first ``pool`` hits, those the reranker scored)
   by maximal marginal relevance: ``λ · relevance − (1 − λ) · max cosine to the hits already
   picked``. The relevance is the hit's place in the final order scaled to [0, 1] (1 for the first,
   0 for the last): the reranker's fused score is an order, not a number kept on the hit, and a
   rank scale means the same on every stage. The similarities are the cosines of the stored dense
   vectors, read once for the pool.
2. **Group by source** keeps ``group_size`` hits per document and ``k`` documents, ranked by
   their best hit; the hits of one document come next to each other. Qdrant's own group-by
   (``query_points_groups`` on a server; Qdrant Edge 0.9 has none) groups by the first-stage score,
   before fusion and rerank, so the grouping runs here on the final order for both backends. The
   first stage fetches ``GROUP_FETCH`` candidates per wanted hit (cheap: ANN and BM25 take
   milliseconds; the reranker still scores only the pool, and the candidates after it keep their
   first-stage order); when they hold fewer than ``k`` documents, the search runs again with
   ``WIDEN`` times as many, up to ``MAX_FETCH``.
3. **Expand** attaches each returned hit's context (not counted in ``k``).

Every returned hit's ``final_rank`` is its place in the returned list; ``ann_rank`` and the
scores stay as the stages left them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from mmrag.retriever.expand import expand_hits
from mmrag.retriever.request import SearchRequest
from mmrag.tracing import span
from mmrag.types import Hit

if TYPE_CHECKING:
    from mmrag.retriever.core import Retriever, SearchResult

__all__ = ["GROUP_FETCH", "MAX_FETCH", "WIDEN", "group_hits", "mmr_order", "refine"]

GROUP_FETCH = 20  # first-stage candidates per wanted hit when grouping: one dominant document is common
WIDEN = 4  # how much more the first stage fetches when the candidates hold too few documents
MAX_FETCH = 2000  # the most candidates a grouped search reads (a corpus of one huge document stops here)


def group_hits(hits: Sequence[Hit], k: int, size: int, key: str = "source") -> list[Hit]:
    """The first ``k`` groups (documents) in ``hits``' order, each with its first ``size`` hits,
    flattened group by group. A group ranks where its best hit ranks.

    Example:
        >>> from mmrag.types import Chunk
        >>> h = lambda i, s: Hit(Chunk(str(i), "text", s, "t", None), 1.0, None, None, None, i, i)
        >>> [x.chunk.id for x in group_hits([h(1, "a"), h(2, "a"), h(3, "b"), h(4, "a")], 2, 2)]
        ['1', '2', '3']
    """
    groups: dict[str, list[Hit]] = {}
    for h in hits:
        g = str(getattr(h.chunk, key))
        if g not in groups:
            if len(groups) == k:
                continue  # a (k + 1)-th document: only hits of the k kept ones still count
            groups[g] = []
        if len(groups[g]) < size:
            groups[g].append(h)
    return [h for members in groups.values() for h in members]


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, lam: float) -> list[int]:
    """Indices in maximal-marginal-relevance order: each step picks the candidate with the best
    ``lam * relevance - (1 - lam) * (max cosine to the ones picked)``; ties go to the earlier one.

    ``vectors`` are L2-normalised rows (a zero row: a candidate without a stored vector, similar to
    nothing). ``lam = 1`` keeps the relevance order.

    Example:
        >>> v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> mmr_order(np.array([1.0, 0.9, 0.5]), v, 0.5)
        [0, 2, 1]
    """
    n = len(relevance)
    if n == 0:
        return []
    sims = vectors @ vectors.T
    max_sim = np.full(n, -np.inf)
    left = np.ones(n, dtype=bool)
    order: list[int] = []
    for _ in range(n):
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = np.where(left, lam * relevance - (1.0 - lam) * redundancy, -np.inf)
        i = int(np.argmax(gain))  # argmax returns the first maximum: ties keep the final order
        order.append(i)
        left[i] = False
        max_sim = np.maximum(max_sim, sims[i])
    return order


def _diversify(retriever: Retriever, hits: list[Hit], pool: int, lam: float) -> list[Hit]:
    """MMR over the first ``pool`` hits (the rerank-stage pool); the rest keep their order after it."""
    head, tail = hits[:pool], hits[pool:]
    if len(head) < 2:
        return hits
    vectors = _pool_vectors(retriever, head)
    relevance = np.linspace(1.0, 0.0, len(head))
    return [head[i] for i in mmr_order(relevance, vectors, lam)] + tail


def _pool_vectors(retriever: Retriever, hits: Sequence[Hit]) -> np.ndarray:
    """The pool's dense vectors, L2-normalised, in ``hits`` order (zeros where a point has none).

    One read by id for the whole pool: the hybrid pool holds BM25-only candidates the dense search
    never returned, so the ids are read back rather than the vectors taken from each branch.
    """
    name = retriever.vector
    records = retriever.store.backend.retrieve([h.chunk.id for h in hits], with_vectors=[name])
    found = {r.id: r.vectors[name] for r in records if name in r.vectors}
    dim = len(next(iter(found.values()))) if found else 1
    out = np.zeros((len(hits), dim), dtype=np.float32)
    for i, h in enumerate(hits):
        if h.chunk.id in found:
            out[i] = found[h.chunk.id]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    unit: np.ndarray = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return unit


def refine(
    retriever: Retriever, req: SearchRequest, run: Callable[[SearchRequest], SearchResult]
) -> tuple[list[Hit], dict[str, float]]:
    """Run ``req`` through ``run`` (the retriever's stages) with a pool large enough for its MMR and
    grouping, then diversify, group, cut to ``k`` and expand (see the module docstring); returns
    the hits and the per-stage seconds."""
    pool = req.pool if req.pool is not None else retriever.pool
    fetch = req.k
    if req.mmr_lambda is not None:
        fetch = max(fetch, pool)
    if req.group_by is not None:
        fetch = max(fetch, pool, min(MAX_FETCH, req.k * req.group_size * GROUP_FETCH))
    timings: dict[str, float] = {}
    while True:
        res = run(replace(req, k=fetch, group_by=None, group_size=1, expand=0, mmr_lambda=None))
        for stage, secs in res.timings.items():
            timings[stage] = timings.get(stage, 0.0) + secs  # a widened search: every pass's time
        hits = res.hits
        if req.mmr_lambda is not None:
            t0 = time.perf_counter()
            with span("mmr", pool=min(pool, len(hits)), mmr_lambda=req.mmr_lambda):
                hits = _diversify(retriever, hits, pool, req.mmr_lambda)
            timings["mmr"] = timings.get("mmr", 0.0) + time.perf_counter() - t0
        if req.group_by is None:
            hits = hits[: req.k]
            break
        t0 = time.perf_counter()
        with span("group", by=req.group_by, size=req.group_size, candidates=len(hits)) as s:
            grouped = group_hits(hits, req.k, req.group_size, req.group_by)
            groups = len({getattr(h.chunk, req.group_by) for h in grouped})
            s.set(groups=groups)
        timings["group"] = timings.get("group", 0.0) + time.perf_counter() - t0
        if groups >= req.k or len(res.hits) < fetch or fetch >= MAX_FETCH:
            hits = grouped  # enough documents, or the store has no more candidates to give
            break
        fetch = min(fetch * WIDEN, MAX_FETCH)
    hits = [replace(h, final_rank=i + 1) for i, h in enumerate(hits)]
    if req.expand > 0:
        t0 = time.perf_counter()
        with span("expand", hits=len(hits), width=req.expand) as s:
            hits = expand_hits(retriever.store, hits, req.expand, req.search_filters())
            s.set(context=sum(len(h.context) for h in hits))
        timings["expand"] = time.perf_counter() - t0
    timings["total"] = sum(v for key, v in timings.items() if key != "total")
    return hits, timings
