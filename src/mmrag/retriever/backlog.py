"""How long a queue of searches takes to drain: the time bound of the micro-batcher's queue.

A count alone does not bound the wait: 64 queued dense searches drain in a second, 64 queued
rerank searches can take minutes, and then every client gets a 504 after the timeout instead of a
fast 503. :class:`DrainRate` measures how fast admitted searches finish while the queue is busy,
so the batcher can refuse a search whose expected wait is over the limit and say when to retry.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["DrainRate"]


class DrainRate:
    """Seconds per finished search over the last ``window`` completions of the current busy period.

    A busy period ends when nothing is admitted: an idle gap is not service time, so the samples
    start again. With fewer than ``min_samples`` completions there is no estimate (and no refusal).

    Example:
        >>> rate = DrainRate(min_samples=3)
        >>> for t in (0.0, 0.5, 1.0):
        ...     rate.done(t, still_admitted=4)
        >>> rate.wait(ahead=6)
        3.0
    """

    def __init__(self, window: int = 64, min_samples: int = 8) -> None:
        self._times: deque[float] = deque(maxlen=max(2, window))
        self.min_samples = max(2, min_samples)

    def done(self, now: float, still_admitted: int) -> None:
        """A search finished at ``now``; ``still_admitted`` searches remain."""
        self._times.append(now)
        if still_admitted == 0:
            self._times.clear()

    def seconds_per_search(self) -> float | None:
        """Mean time between completions while busy (``None``: too few samples yet)."""
        if len(self._times) < self.min_samples:
            return None
        span = self._times[-1] - self._times[0]
        return span / (len(self._times) - 1) if span > 0 else None

    def wait(self, ahead: int) -> float | None:
        """Expected seconds until ``ahead`` admitted searches have finished."""
        per = self.seconds_per_search()
        return None if per is None else ahead * per

    def retry_after(self, excess: int) -> int:
        """Whole seconds until ``excess`` more searches have finished (at least 1)."""
        per = self.seconds_per_search() or 0.0
        return max(1, math.ceil(excess * per))
