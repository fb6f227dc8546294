"""First-stage results as :class:`~mmrag.types.Hit` lists: dense alone, or dense fused with BM25."""

from __future__ import annotations

from collections.abc import Sequence

from mmrag.retriever.fusion import FusionMethod, fuse
from mmrag.types import Chunk, Hit

__all__ = ["dense_hits", "fused_hits"]


def dense_hits(results: Sequence[Sequence[tuple[Chunk, float]]], k: int, vector: str) -> list[list[Hit]]:
    """Store results (best first) as dense-only hits: the top ``k`` of each list, ranked 1..k."""
    return [
        [
            Hit(
                chunk=c,
                dense=s,
                sparse=None,
                fused=None,
                rerank=None,
                ann_rank=i + 1,
                final_rank=i + 1,
                vector=vector,
            )
            for i, (c, s) in enumerate(res[:k])
        ]
        for res in results
    ]


def fused_hits(
    dense: list[tuple[Chunk, float]],
    sparse: list[tuple[Chunk, float]],
    fusion: FusionMethod,
    rrf_k: int,
    vector: str | None,
) -> list[Hit]:
    """One query's dense and BM25 results fused (RRF or DBSF), best first, each keeping both scores."""
    chunks = {c.id: c for c, _ in dense} | {c.id: c for c, _ in sparse}
    dscore = {c.id: s for c, s in dense}
    sscore = {c.id: s for c, s in sparse}
    fused = fuse([[(c.id, s) for c, s in dense], [(c.id, s) for c, s in sparse]], fusion, k=rrf_k)
    return [
        Hit(
            chunk=chunks[cid],
            dense=dscore.get(cid),
            sparse=sscore.get(cid),
            fused=f,
            rerank=None,
            ann_rank=i + 1,
            final_rank=i + 1,
            vector=vector,
        )
        for i, (cid, f) in enumerate(fused)
    ]
