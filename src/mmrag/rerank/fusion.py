"""Fusion of cross-encoder and first-stage scores, per modality.

For one query's candidate pool, each score family is min-max normalised over the candidates that
have it, then

    final = w[modality] · norm(rerank) + (1 − w[modality]) · norm(first stage)

where the first-stage score is the hybrid fused score when there is one, else the dense score. A
candidate without text (an image with no caption / alt / OCR text) has no rerank score and keeps
``norm(first stage)`` weighted by 1 − w, as if its rerank score were the pool's mean. ``w = 0``
reproduces the first stage exactly and ``w = 1`` is the cross-encoder alone, so learning ``w`` on
a validation fold (:func:`learn_weight`) can only match or beat the first stage *on that fold*.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mmrag.errors import ConfigError
from mmrag.types import Hit

GRID = tuple(i / 20 for i in range(21))  # weights tried by learn_weight: 0, 0.05, ..., 1


def minmax(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1]; a constant list maps to 0.5."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.5] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def first_stage_score(hit: Hit) -> float:
    """The score the first stage ranked by: fused (hybrid) or dense (or BM25 alone)."""
    for s in (hit.fused, hit.dense, hit.sparse):
        if s is not None:
            return s
    return 0.0


@dataclass(frozen=True, slots=True)
class ScoreFusion:
    """Per-modality weight of the rerank score against the first-stage score.

    Example:
        >>> ScoreFusion({"text": 0.3}).weight("image")   # unlisted modalities use ``default``
        0.5
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    default: float = 0.5

    def __post_init__(self) -> None:
        for m, w in {**self.weights, "default": self.default}.items():
            if not 0.0 <= w <= 1.0:
                raise ConfigError(f"rerank fusion weight for {m} must be in [0, 1], got {w}")

    def weight(self, modality: str) -> float:
        return float(self.weights.get(modality, self.default))

    def combine(self, hits: Sequence[Hit], rerank: Sequence[float | None]) -> list[float]:
        """Final scores of ``hits`` given their rerank scores (``None`` = not scored)."""
        first = minmax([first_stage_score(h) for h in hits])
        scored = [s for s in rerank if s is not None]
        norm = iter(minmax(scored))
        mean = sum(minmax(scored)) / len(scored) if scored else 0.0
        out = []
        for h, f, r in zip(hits, first, rerank, strict=True):
            w = self.weight(h.chunk.modality)
            nr = next(norm) if r is not None else mean
            out.append(w * nr + (1.0 - w) * f)
        return out


def order_by(hits: Sequence[Hit], final: Sequence[float]) -> list[Hit]:
    """Hits by final score, best first; ties keep the first-stage order."""
    return [hits[i] for i in sorted(range(len(hits)), key=lambda i: (-final[i], i))]


def learn_weight(
    pools: Sequence[Sequence[Hit]],
    rerank_scores: Sequence[Sequence[float | None]],
    metric: Callable[[list[list[Hit]]], float],
    grid: Sequence[float] = GRID,
    modality: str = "text",
) -> tuple[float, dict[float, float]]:
    """Grid-search the weight of ``modality`` that maximises ``metric`` over many queries' pools.

    Args:
        pools: One first-stage candidate list per query (best first).
        rerank_scores: The cross-encoder score of each candidate (same shapes).
        metric: Quality of a list of re-ordered pools (e.g. mean nDCG@10 against qrels).

    Returns:
        The best weight (the smallest on ties, i.e. the one closest to the first stage) and the
        metric at every grid point.
    """
    curve: dict[float, float] = {}
    for w in grid:
        fusion = ScoreFusion({modality: w}, default=w)
        ordered = []
        for hits, scores in zip(pools, rerank_scores, strict=True):
            ordered.append(order_by(hits, fusion.combine(hits, scores)))
        curve[w] = metric(ordered)
    best = max(curve.values())
    return min(w for w, v in curve.items() if v == best), curve


def cross_fit(
    pools: Sequence[Sequence[Hit]],
    rerank_scores: Sequence[Sequence[float | None]],
    metric: Callable[[list[list[Hit]], list[int]], float],
    modality: str = "text",
) -> tuple[list[list[Hit]], list[float]]:
    """Two-fold cross-fitting of the fusion weight: each half of the queries (alternate ones) is
    re-ordered with the weight :func:`learn_weight` finds on the other half, an estimate of the fused
    gain that is not tuned on the queries it scores.

    Args:
        pools, rerank_scores, modality: As for :func:`learn_weight`.
        metric: Quality of re-ordered pools, given with the indices (into ``pools``) of their queries.

    Returns:
        Every pool re-ordered (in input order) and the two weights (learned on the even, then the
        odd queries).
    """
    halves = [list(range(0, len(pools), 2)), list(range(1, len(pools), 2))]
    ordered: dict[int, list[Hit]] = {}
    weights = []
    for fit_on, apply_to in (halves, halves[::-1]):

        def half_metric(o: list[list[Hit]], idx: list[int] = fit_on) -> float:
            return metric(o, idx)

        w, _ = learn_weight(
            [pools[i] for i in fit_on], [rerank_scores[i] for i in fit_on], half_metric, modality=modality
        )
        weights.append(w)
        fusion = ScoreFusion({modality: w}, default=w)
        for i in apply_to:
            ordered[i] = order_by(pools[i], fusion.combine(pools[i], rerank_scores[i]))
    return [ordered[i] for i in range(len(pools))], weights
