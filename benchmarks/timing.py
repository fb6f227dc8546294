"""Percentiles of the latencies the benchmarks time (one definition for every script)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (NaN when there are none, e.g. every request failed).

    Example:
        >>> pct([1.0, 2.0, 3.0], 50)
        2.0
    """
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")
