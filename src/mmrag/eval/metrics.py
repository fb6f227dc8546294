"""Ranking metrics: Recall@k, nDCG@k and MRR over plain qrels and runs.

The definitions follow ``pytrec_eval`` / BEIR so that numbers are comparable with published
BEIR tables: nDCG uses the graded relevance itself as the gain (linear, not ``2**rel - 1``)
and a ``log2(rank + 1)`` discount, with the ideal ranking built from the qrels.

Two deliberate differences from ``pytrec_eval``, both so that a retriever cannot score higher
by returning less:

* A query that is in the qrels but missing from the run counts as 0 (``pytrec_eval`` drops it).
* Scores are averaged over the queries of the qrels, not over the queries of the run.

Queries whose judgments are all ``<= 0`` have no defined recall and are left out of every mean.

Example:
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 1}}
    >>> run = {"q1": ["d1", "d9"], "q2": ["d9", "d3"]}
    >>> recall_at_k(qrels, run, 1)
    0.5
    >>> mrr(qrels, run)
    0.75
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
"""Query id -> {doc id: graded relevance}; only relevance > 0 counts as relevant."""

Run = Mapping[str, Sequence[str]]
"""Query id -> ranked doc ids, best first."""

__all__ = [
    "NOT_FOUND",
    "Qrels",
    "Run",
    "evaluate",
    "first_rank",
    "flickr_recall",
    "mrr",
    "ndcg_at_k",
    "recall_at_k",
    "success_at_k",
]

NOT_FOUND = 2**31 - 1
"""Rank given to a relevant item that a ranked list does not hold: past every cut-off."""


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _ranked(run: Run, query_id: str) -> list[str]:
    """The run's list for ``query_id`` with repeated ids dropped (first position wins).

    ``pytrec_eval`` keys a run by doc id, so a doc can occupy one rank only; without this a
    retriever that returns the same relevant chunk twice would get recall above 1.
    """
    docs = run.get(query_id, ())
    if isinstance(docs, str):
        # A bare string is a Sequence[str] too; iterating it would score single characters.
        raise TypeError(f"run[{query_id!r}] must be a sequence of doc ids, got the string {docs!r}")
    return list(dict.fromkeys(docs))


def _relevant(judgments: Mapping[str, int]) -> dict[str, int]:
    return {doc: rel for doc, rel in judgments.items() if rel > 0}


def _mean_over_queries(
    qrels: Qrels, run: Run, per_query: Callable[[dict[str, int], list[str]], float]
) -> float:
    scores = []
    for query_id, judgments in qrels.items():
        relevant = _relevant(judgments)
        if relevant:
            scores.append(per_query(relevant, _ranked(run, query_id)))
    if not scores:
        raise ValueError(
            "qrels hold no query with a relevant document (relevance > 0); "
            "check that the qrels file and the query filter select at least one judged query"
        )
    return sum(scores) / len(scores)


def recall_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean over the qrels' queries of ``|relevant ∩ top-k| / |relevant|``.

    Args:
        qrels: Query id -> {doc id: relevance}; relevance > 0 means relevant.
        run: Query id -> ranked doc ids. Queries missing from the run score 0.
        k: Cut-off, at least 1. A ``k`` longer than a ranked list just uses the whole list.

    Returns:
        Recall@k in ``[0, 1]``.

    Raises:
        ValueError: If ``k < 1`` or no query of ``qrels`` has a relevant document.

    Example:
        >>> recall_at_k({"q": {"a": 1, "b": 1}}, {"q": ["a", "x", "b"]}, 2)
        0.5
    """
    _check_k(k)

    def one(relevant: dict[str, int], ranked: list[str]) -> float:
        return sum(1 for doc in ranked[:k] if doc in relevant) / len(relevant)

    return _mean_over_queries(qrels, run, one)


def success_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Fraction of queries with at least one relevant doc in the top ``k`` (Flickr image→text R@k).

    Example:
        >>> success_at_k({"q": {"a": 1, "b": 1}}, {"q": ["x", "b", "a"]}, 2)
        1.0
    """
    _check_k(k)

    def per_query(judged: dict[str, int], ranked: list[str]) -> float:
        return 1.0 if any(doc in judged for doc in ranked[:k]) else 0.0

    return _mean_over_queries(qrels, run, per_query)


def _dcg(gains: Sequence[int]) -> float:
    # rank r (1-based) is discounted by log2(r + 1); enumerate gives r - 1.
    return sum(gain / math.log2(i + 2) for i, gain in enumerate(gains))


def ndcg_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean over the qrels' queries of nDCG@k with linear graded gain.

    ``DCG@k = sum_{r=1..k} rel_r / log2(r + 1)``; the ideal DCG sorts the query's judged
    relevances (all of them, not only the retrieved ones) in decreasing order.

    Args:
        qrels: Query id -> {doc id: relevance}; relevance > 0 is the gain.
        run: Query id -> ranked doc ids. Queries missing from the run score 0.
        k: Cut-off, at least 1.

    Returns:
        nDCG@k in ``[0, 1]``.

    Raises:
        ValueError: If ``k < 1`` or no query of ``qrels`` has a relevant document.

    Example:
        >>> round(ndcg_at_k({"q": {"a": 1}}, {"q": ["x", "a"]}, 10), 4)
        0.6309
    """
    _check_k(k)

    def one(relevant: dict[str, int], ranked: list[str]) -> float:
        dcg = _dcg([relevant.get(doc, 0) for doc in ranked[:k]])
        ideal = _dcg(sorted(relevant.values(), reverse=True)[:k])
        return dcg / ideal

    return _mean_over_queries(qrels, run, one)


def mrr(qrels: Qrels, run: Run, k: int | None = None) -> float:
    """Mean reciprocal rank of the first relevant document.

    Args:
        qrels: Query id -> {doc id: relevance}; relevance > 0 means relevant.
        run: Query id -> ranked doc ids. Queries missing from the run score 0.
        k: Optional cut-off: a first hit below rank ``k`` scores 0 (MRR@k). ``None`` looks at
            the whole list.

    Returns:
        MRR in ``[0, 1]``.

    Raises:
        ValueError: If ``k`` is given and ``< 1``, or no query of ``qrels`` has a relevant document.

    Example:
        >>> mrr({"q": {"a": 1}}, {"q": ["x", "y", "a"]})
        0.3333333333333333
    """
    if k is not None:
        _check_k(k)

    def one(relevant: dict[str, int], ranked: list[str]) -> float:
        for rank, doc in enumerate(ranked if k is None else ranked[:k], start=1):
            if doc in relevant:
                return 1.0 / rank
        return 0.0

    return _mean_over_queries(qrels, run, one)


def evaluate(qrels: Qrels, run: Run, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """All metrics at once, keyed ``"ndcg@k"``, ``"recall@k"`` for each ``k`` and ``"mrr"``.

    ``"mrr"`` is over the whole ranked list (no cut-off).

    Args:
        qrels: Query id -> {doc id: relevance}.
        run: Query id -> ranked doc ids.
        ks: Cut-offs; duplicates are ignored and keys come out in ascending ``k``.

    Returns:
        Metric name -> value, e.g. ``{"ndcg@1": ..., "recall@1": ..., ..., "mrr": ...}``.

    Raises:
        ValueError: If ``ks`` is empty or holds a ``k < 1``, or no query has a relevant document.

    Example:
        >>> evaluate({"q": {"a": 1}}, {"q": ["a"]}, ks=(1,))
        {'ndcg@1': 1.0, 'recall@1': 1.0, 'mrr': 1.0}
    """
    if isinstance(ks, int):
        raise TypeError(f"ks must be a sequence of cut-offs such as (1, 5, 10), got the int {ks}")
    cutoffs = sorted(set(ks))
    if not cutoffs:
        raise ValueError("ks must hold at least one cut-off, e.g. (1, 5, 10)")
    for k in cutoffs:
        _check_k(k)
    out: dict[str, float] = {}
    for k in cutoffs:
        out[f"ndcg@{k}"] = ndcg_at_k(qrels, run, k)
        out[f"recall@{k}"] = recall_at_k(qrels, run, k)
    out["mrr"] = mrr(qrels, run)
    return out


def first_rank(ranked: Sequence[str], relevant: Collection[str]) -> int:
    """0-based position of the first relevant id in ``ranked``; :data:`NOT_FOUND` when there is none.

    Example:
        >>> first_rank(["x", "b", "a"], {"a", "b"})
        1
    """
    for rank, doc in enumerate(ranked):
        if doc in relevant:
            return rank
    return NOT_FOUND


def flickr_recall(
    t2i_ranks: Sequence[int], i2t_ranks: Sequence[int] | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Flickr-protocol text→image (and image→text) Recall@k from 0-based ranks, plus ``rsum``.

    The one recall of image-caption retrieval: the trainer (exact search over embeddings), the
    closed loop (through the store) and ``mmrag eval`` all reduce their rankings to ranks and call
    this, so their numbers agree by construction.

    Args:
        t2i_ranks: For each caption (query), the rank of its one image (:data:`NOT_FOUND` if absent).
        i2t_ranks: For each image (query), the best rank of any of its captions: an image scores at
            ``k`` when any of its captions is in the top ``k``. ``None``: text→image only.
        ks: Cut-offs.

    Returns:
        ``t2i_recall@k`` (and ``i2t_recall@k``) for each ``k`` in that order, then
        ``rsum`` = 100 × the sum of those recalls.

    Raises:
        ValueError: If a ``k < 1`` or a list of ranks is empty.

    Example:
        >>> flickr_recall([0, 3, 12], [1, 0], ks=(5,))
        {'t2i_recall@5': 0.6666666666666666, 'i2t_recall@5': 1.0, 'rsum': 166.66666666666666}
    """
    for k in ks:
        _check_k(k)
    if len(t2i_ranks) == 0 or (i2t_ranks is not None and len(i2t_ranks) == 0):
        raise ValueError("recall needs at least one query: the list of ranks is empty")

    def share(ranks: Sequence[int], k: int) -> float:
        return sum(1 for r in ranks if r < k) / len(ranks)

    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_recall@{k}"] = share(t2i_ranks, k)
        if i2t_ranks is not None:
            out[f"i2t_recall@{k}"] = share(i2t_ranks, k)
    out["rsum"] = 100 * sum(out.values())
    return out
