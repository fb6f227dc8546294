"""Every stage of the pipeline on one BEIR dataset, in one run: the ablation users judge a retriever by.

``mmrag eval --stages`` indexes the corpus once and asks every judged query of each stage:

* ``bm25``: the store's BM25 vectors alone;
* ``dense``: dense ANN alone;
* ``hybrid``: both fused (DBSF by default, as the retriever fuses them);
* ``hybrid+rerank``: the hybrid pool's top ``pool`` reordered by the reranker's fused score (the
  production pipeline), the rest of the pool kept behind it;
* ``rerank``: the same top ``pool`` ordered by the cross-encoder's score alone.

The reranker scores each query's pool once; the two rerank stages reorder the same scores. Each stage
gets nDCG@k, Recall@k/100 and MRR over the same queries, so the rows compare like with like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from mmrag.eval.corpus import doc_ids
from mmrag.eval.metrics import evaluate
from mmrag.types import Hit

if TYPE_CHECKING:
    from mmrag.eval.datasets import BeirDataset
    from mmrag.retriever import Retriever
    from mmrag.retriever.base import Reranker

__all__ = ["STAGES", "beir_stages", "stage_table"]

STAGES = ("bm25", "dense", "hybrid", "hybrid+rerank", "rerank")
DEPTH = 100  # candidates per stage: Recall@100 needs them


def _reranked(
    reranker: Reranker, queries: Sequence[str], pools: Sequence[list[Hit]], pool: int, progress: bool = False
) -> tuple[list[list[Hit]], list[list[Hit]]]:
    """(fused order, rerank-score order) of each query's top ``pool``, the rest of its pool behind."""
    from tqdm import tqdm

    fused, alone = [], []
    pairs = zip(queries, pools, strict=True)
    for q, hits in tqdm(pairs, total=len(queries), desc="rerank stages", unit="query", disable=not progress):
        head, tail = hits[:pool], hits[pool:]
        ordered = reranker.rerank(q, head)
        fused.append(ordered + tail)
        # A candidate without text has no rerank score: it goes after the scored ones, in pool order.
        by_score = sorted(ordered, key=lambda h: (h.rerank is None, -(h.rerank or 0.0), h.ann_rank))
        alone.append([replace(h, final_rank=i + 1) for i, h in enumerate(by_score)] + tail)
    return fused, alone


def beir_stages(
    retriever: Retriever,
    ds: BeirDataset,
    *,
    reranker: Reranker | None = None,
    pool: int = 20,
    k: int = 10,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Metrics of each stage (see the module docstring) over the dataset's judged queries.

    ``retriever`` searches the store that holds the corpus; without a reranker the two rerank
    stages are left out. ``progress``: a bar over the reranked queries on stderr.
    """
    qids = list(ds.qrels)
    texts = [ds.queries[q] for q in qids]
    ks = sorted({1, 5, k, 10, DEPTH})
    store = retriever.store
    sparse = store.search_sparse([retriever.sparse_encoder.embed_query(t) for t in texts], DEPTH)
    runs: dict[str, list[list[str]]] = {
        "bm25": [[str(c.metadata.get("doc_id", c.id)) for c, _ in r] for r in sparse]
    }
    runs["dense"] = [doc_ids(h) for h in retriever.search_batch(texts, k=DEPTH, hybrid=False, rerank=False)]
    hybrid = retriever.search_batch(texts, k=DEPTH, pool=DEPTH, hybrid=True, rerank=False)
    runs["hybrid"] = [doc_ids(h) for h in hybrid]
    if reranker is not None:
        fused, alone = _reranked(reranker, texts, hybrid, pool, progress)
        runs["hybrid+rerank"] = [doc_ids(h) for h in fused]
        runs["rerank"] = [doc_ids(h) for h in alone]
    return {name: evaluate(ds.qrels, dict(zip(qids, run, strict=True)), ks=ks) for name, run in runs.items()}


def stage_table(stages: Mapping[str, Mapping[str, float]], k: int = 10) -> str:
    """The ablation as a text table, one row per stage, with each row's gain over the first row."""
    cols = (f"ndcg@{k}", "recall@10", "recall@100", "mrr")
    lines = [f"{'stage':<16}" + "".join(f"{c:>12}" for c in cols) + f"{'Δ nDCG':>10}"]
    base = next(iter(stages.values())).get(f"ndcg@{k}", 0.0) if stages else 0.0
    for name, m in stages.items():
        cells = "".join(f"{m[c]:>12.4f}" if c in m else f"{'-':>12}" for c in cols)
        lines.append(f"{name:<16}{cells}{m.get(f'ndcg@{k}', 0.0) - base:>+10.4f}")
    return "\n".join(lines)
