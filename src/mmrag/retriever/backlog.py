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
    """Mean seconds between finished searches while the queue is busy, over the last ``window``.

    The first search of a busy period (the queue was empty when it came) counts its whole time;
    the next ones the gap since the previous completion, so idle time never counts as service
    time. One sample is enough for an estimate; before any, there is none (and no refusal).

    Example:
        >>> rate = DrainRate()
        >>> rate.started(0.0, admitted_before=0)
        >>> for t in (0.5, 1.0, 1.5):
        ...     rate.done(t, still_admitted=2)
        >>> rate.wait(ahead=6)
        3.0
    """

    def __init__(self, window: int = 32) -> None:
        self._gaps: deque[float] = deque(maxlen=max(1, window))
        self._last: float | None = None  # the last completion, or when the busy period began

    def started(self, now: float, admitted_before: int) -> None:
        """A search was admitted at ``now`` with ``admitted_before`` already in the queue."""
        if admitted_before == 0:
            self._last = now

    def done(self, now: float, still_admitted: int, *, counted: bool = True) -> None:
        """A search finished (``counted=False``: it was cancelled before it ran)."""
        if counted and self._last is not None:
            self._gaps.append(max(0.0, now - self._last))
        self._last = now if still_admitted > 0 else None

    def seconds_per_search(self) -> float | None:
        """Mean gap between completions while busy (``None``: no sample yet)."""
        return sum(self._gaps) / len(self._gaps) if self._gaps else None

    def wait(self, ahead: int) -> float | None:
        """Expected seconds until ``ahead`` admitted searches have finished."""
        per = self.seconds_per_search()
        return None if per is None else ahead * per

    def retry_after(self, excess: int) -> int:
        """Whole seconds until ``excess`` more searches have finished (at least 1)."""
        per = self.seconds_per_search() or 0.0
        return max(1, math.ceil(excess * per))
