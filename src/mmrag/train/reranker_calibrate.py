"""Learn the reranker's fusion weight with the first stage on the validation fold, and report it.

Used by :func:`mmrag.train.reranker.train_reranker` on the finished model (and on each member of a
soup): the curve of fused nDCG@10 over the weight, the chosen weight, the cross-fitted figure (each
half of the fold fused with the weight learned on the other half) and the figures on the fold's
unseen queries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mmrag.eval.corpus import ranking_metrics
from mmrag.rerank.fusion import cross_fit, learn_weight
from mmrag.train.reranker_report import Calibration

if TYPE_CHECKING:
    from mmrag.eval.datasets import BeirDataset
    from mmrag.rerank.cross_encoder import CrossEncoderReranker
    from mmrag.types import Hit

__all__ = ["calibrate"]


def calibrate(
    reranker: CrossEncoderReranker,
    ds: BeirDataset,
    val_ids: Sequence[str],
    pools: Sequence[Sequence[Hit]],
    pool: int,
    *,
    unseen: Sequence[str] = (),
    progress: bool = False,
) -> Calibration:
    """Learn the text fusion weight on the validation fold; report first stage / rerank / fused nDCG@10.

    Args:
        reranker: The trained cross-encoder.
        ds: The BEIR dataset.
        val_ids: Validation-fold query ids.
        pools: The first stage's hits of each validation query (``pool`` deep), best first.
        pool: The depth asked of the first stage (recorded in the report).
        unseen: The validation queries whose relevant docs are no training positive (also reported).
    """
    from tqdm import tqdm

    qrels = {q: dict(ds.qrels[q]) for q in val_ids}
    scores = [
        [float(s) for s in reranker.score(ds.queries[q], [h.chunk.text or "" for h in hits])]
        for q, hits in tqdm(
            list(zip(val_ids, pools, strict=True)), desc="validate", unit="query", disable=not progress
        )
    ]

    def ndcg(ordered: list[list[Hit]], ids: Sequence[str] = val_ids) -> float:
        sub = {q: qrels[q] for q in ids}
        return ranking_metrics(sub, dict(zip(ids, ordered, strict=True)), ks=(10,))["ndcg@10"]

    best, curve = learn_weight(pools, scores, ndcg)
    crossfit = _crossfit(pools, scores, list(val_ids), ndcg)
    unseen_stats = None
    keep = [i for i, q in enumerate(val_ids) if q in set(unseen)]
    if keep:
        ids = [val_ids[i] for i in keep]
        _, sub_curve = learn_weight(
            [pools[i] for i in keep], [scores[i] for i in keep], lambda o: ndcg(o, ids), grid=(0.0, best, 1.0)
        )
        unseen_stats = {
            "first_stage_ndcg@10": sub_curve[0.0],
            "rerank_only_ndcg@10": sub_curve[1.0],
            "fused_ndcg@10": sub_curve[best],
        }
    return Calibration(
        weight=best,
        curve=curve,
        first_stage_ndcg=curve[0.0],
        rerank_only_ndcg=curve[1.0],
        fused_ndcg=curve[best],
        queries=len(val_ids),
        pool=pool,
        unseen=unseen_stats,
        unseen_queries=len(keep),
        fused_crossfit=crossfit,
    )


def _crossfit(
    pools: Sequence[Sequence[Hit]],
    scores: Sequence[Sequence[float | None]],
    ids: list[str],
    ndcg: Callable[[list[list[Hit]], Sequence[str]], float],
) -> float | None:
    """nDCG@10 of the fold cross-fitted (:func:`mmrag.rerank.fusion.cross_fit`); None under 4 queries."""
    if len(ids) < 4:
        return None
    ordered, _ = cross_fit(pools, scores, lambda o, idx: ndcg(o, [ids[i] for i in idx]))
    return ndcg(ordered, ids)
