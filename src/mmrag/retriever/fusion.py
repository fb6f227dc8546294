"""Hybrid fusion of ranked lists: reciprocal-rank fusion (RRF) and distribution-based score fusion (DBSF).

Both are the formulas Qdrant's ``Fusion.Rrf`` / ``Fusion.Dbsf`` use (tests check the orders agree with
Qdrant Edge's own prefetch fusion); mmrag fuses on the client so that every branch's score and rank
stays on the :class:`~mmrag.types.Hit`.

* RRF: ``score(d) = Σ_i w_i / (k + r_i(d))`` with ``r_i`` the 0-based position in list ``i`` (as Qdrant
  counts; Cormack et al.'s 1-based form with k = 60 is this one with k = 59); a list that misses ``d`` adds 0.
* DBSF: each list's scores are mapped to [0, 1] by ``(s - (μ - 3σ)) / 6σ`` (clipped; a list with
  σ = 0 maps to 0.5; σ is the sample standard deviation), then summed with weights; a list that
  misses ``d`` adds 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from mmrag.errors import ConfigError

FusionMethod = Literal["rrf", "dbsf"]
FUSION_METHODS: tuple[FusionMethod, ...] = ("rrf", "dbsf")


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} fusion weights for {n} result lists")
    return [float(w) for w in weights]


def rrf(
    rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Reciprocal-rank fusion of ranked id lists (best first).

    Example:
        >>> s = rrf([["a", "b"], ["b", "c"]], k=60)
        >>> max(s, key=s.__getitem__)
        'b'
    """
    if k < 1:
        raise ConfigError(f"RRF k must be >= 1, got {k}")
    out: dict[str, float] = {}
    for w, ranking in zip(_weights(len(rankings), weights), rankings, strict=True):
        for rank, doc in enumerate(ranking):
            out[doc] = out.get(doc, 0.0) + w / (k + rank)
    return out


def dbsf_normalize(scores: Mapping[str, float]) -> dict[str, float]:
    """One list's scores mapped to [0, 1] by μ ± 3σ (sample σ)."""
    if not scores:
        return {}
    vals = list(scores.values())
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    if std == 0.0:
        return dict.fromkeys(scores, 0.5)
    lo, hi = mean - 3 * std, mean + 3 * std
    return {d: min(1.0, max(0.0, (s - lo) / (hi - lo))) for d, s in scores.items()}


def dbsf(scores: Sequence[Mapping[str, float]], weights: Sequence[float] | None = None) -> dict[str, float]:
    """Distribution-based score fusion of per-list ``{id: score}`` maps (higher is better)."""
    out: dict[str, float] = {}
    for w, lst in zip(_weights(len(scores), weights), scores, strict=True):
        for doc, s in dbsf_normalize(lst).items():
            out[doc] = out.get(doc, 0.0) + w * s
    return out


def fuse(
    lists: Sequence[Sequence[tuple[str, float]]],
    method: FusionMethod = "rrf",
    *,
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked ``(id, score)`` lists (each best first); returns ``(id, fused score)`` best first.

    Ties keep the order of first appearance (earlier lists first), so the result is deterministic.
    """
    if method == "rrf":
        fused = rrf([[d for d, _ in lst] for lst in lists], k=k, weights=weights)
    elif method == "dbsf":
        fused = dbsf([dict(lst) for lst in lists], weights=weights)
    else:
        raise ConfigError(f"fusion must be one of {FUSION_METHODS}, got {method!r}")
    order = {d: i for i, d in enumerate(fused)}
    return sorted(fused.items(), key=lambda kv: (-kv[1], order[kv[0]]))
