"""Listwise training groups for the reranker, mined from a first stage: a data function.

Like sentence-transformers' ``mine_hard_negatives``: a dataset goes in, groups come out, and the
first stage is a plain callable, so mining imports no store and no retriever. The caller decides
what the first stage is (``mmrag train-reranker`` passes the hybrid BM25 + dense retriever the
reranker will sit behind, so both lexical and semantic near-misses become negatives).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmrag.eval.datasets import BeirDataset

__all__ = ["FirstStage", "Group", "mine_groups"]

FirstStage = Callable[[list[str], int], list[list[str]]]
"""``first_stage(texts, k)`` → for each text, the ids of its top ``k`` corpus documents, best first."""


@dataclass(frozen=True, slots=True)
class Group:
    """One query with its positive first and ``n`` negatives.

    Example:
        >>> Group("what is aspirin", ("Aspirin is ...", "Ibuprofen is ...")).passages[0]
        'Aspirin is ...'
    """

    query: str
    passages: tuple[str, ...]


def mine_groups(
    ds: BeirDataset,
    query_ids: Sequence[str],
    first_stage: FirstStage,
    *,
    negatives: int,
    depth: int = 30,
    titles: int = 0,
    seed: int = 0,
    exclude: Collection[str] = (),
) -> list[Group]:
    """Query groups (one per relevant doc) and title → abstract groups, negatives from the first stage.

    Args:
        ds: The BEIR dataset (corpus, queries, qrels).
        query_ids: Training queries (never the validation fold).
        first_stage: Ranks corpus doc ids for a batch of texts (see :data:`FirstStage`).
        negatives: Negatives per group, sampled from the first stage's non-relevant candidates.
        depth: Candidates per title query; training queries look ``2 * depth`` deep.
        titles: Title → abstract groups (the title as query, its own abstract as the positive):
            far more groups than the labelled queries give (0: none, ``train-reranker``'s default).
        seed: Seeds the sampling and the final shuffle.
        exclude: Docs that must not become training positives (the validation queries' relevant
            docs: a title group would otherwise teach the reranker the very answer it is judged on).

    Returns:
        The groups, shuffled; queries with fewer than ``negatives`` candidates are skipped.
    """
    rng = random.Random(seed)
    groups: list[Group] = []
    pools = first_stage([ds.queries[q] for q in query_ids], 2 * depth)
    for q, ranked in zip(query_ids, pools, strict=True):
        rel = ds.qrels[q]
        cands = [d for d in ranked if d not in rel]
        if len(cands) < negatives:
            continue
        for pos in rel:
            negs = rng.sample(cands, negatives)
            groups.append(Group(ds.queries[q], (ds.doc_text(pos), *(ds.doc_text(n) for n in negs))))
    held_out = set(exclude)
    titled = [d for d, (title, _) in ds.corpus.items() if len(title.split()) >= 4 and d not in held_out]
    picked = rng.sample(titled, min(titles, len(titled)))
    pools = first_stage([ds.corpus[d][0] for d in picked], depth)
    for d, ranked in zip(picked, pools, strict=True):
        cands = [x for x in ranked if x != d]
        if len(cands) < negatives:
            continue
        negs = rng.sample(cands, negatives)
        groups.append(Group(ds.corpus[d][0], (ds.corpus[d][1], *(ds.corpus[n][1] for n in negs))))
    rng.shuffle(groups)
    return groups
