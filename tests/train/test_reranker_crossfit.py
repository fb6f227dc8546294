"""The validation table's cross-fitted fused figure: each half of the fold is fused with the weight
learned on the other half, so it is never tuned on the queries it scores (unlike the in-fold figure)."""

from __future__ import annotations

from collections.abc import Sequence

from mmrag.rerank.fusion import cross_fit, learn_weight
from mmrag.train.reranker_calibrate import _crossfit
from mmrag.types import Chunk, Hit


def _pool(q: int) -> list[Hit]:
    # first stage: the relevant doc ("q-rel") second of three
    texts = [f"{q}-a", f"{q}-rel", f"{q}-b"]
    return [
        Hit(Chunk(t, "text", t, t, None), None, None, 3.0 - i, None, i + 1, i + 1)
        for i, t in enumerate(texts)
    ]


def _top1(ordered: list[list[Hit]], ids: Sequence[str]) -> float:
    assert len(ordered) == len(ids)
    return sum(p[0].chunk.id.endswith("rel") for p in ordered) / len(ordered)


def test_a_reranker_that_helps_everywhere_keeps_its_gain() -> None:
    ids = [str(q) for q in range(8)]
    pools = [_pool(q) for q in range(8)]
    scores: list[list[float | None]] = [[0.0, 5.0, 1.0] for _ in ids]
    assert _crossfit(pools, scores, ids, _top1) == 1.0


def test_a_gain_tuned_on_half_the_fold_does_not_carry_over() -> None:
    # The reranker is right on even queries and wrong on odd ones: a weight learned on one half is
    # applied to the other, so the cross-fitted figure is below the in-fold one.
    ids = [str(q) for q in range(8)]
    pools = [_pool(q) for q in range(8)]
    scores: list[list[float | None]] = [[0.0, 5.0, 1.0] if q % 2 == 0 else [5.0, 0.0, 1.0] for q in range(8)]
    best, curve = learn_weight(pools, scores, lambda o: _top1(o, ids))
    crossfit = _crossfit(pools, scores, ids, _top1)
    assert crossfit is not None and crossfit < curve[best]
    assert _crossfit(pools[:3], scores[:3], ids[:3], _top1) is None  # too few queries to split
    # each half was fused with the other half's weight: the even queries' (rerank right) and the odd
    # queries' (first stage only) weights, in that order
    ordered, weights = cross_fit(pools, scores, lambda o, idx: _top1(o, [ids[i] for i in idx]))
    assert weights[0] > 0 and weights[1] == 0.0 and len(ordered) == len(pools)
