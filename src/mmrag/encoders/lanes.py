"""How many model forward passes may run at once: the usable cores over torch's thread count.

A forward pass with ``t`` intra-op threads keeps ``t`` cores busy. With 2 cores and 1 thread
(``MMRAG_THREADS=1``), one lock per model left a core idle while a query's text forward ran: two
threads calling ``encode_text`` together got 1.04 cores and 9.1 ms per 4-query batch; allowed two
at once, 1.87 cores and 4.3 ms (``OpenClipEncoder``, traced bf16 tower, which runs without the
GIL). :class:`Lanes` lets that many run and makes the rest wait. :data:`FORWARDS` is the process's
one set of lanes, shared by the encoder's towers and the reranker, so their forward passes together
never run more threads than there are cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["FORWARDS", "Lanes", "parallel_lanes", "usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parallel_lanes() -> int:
    """Forward passes that fit the cores side by side at torch's current thread count (>= 1).

    Example:
        >>> parallel_lanes() >= 1
        True
    """
    import torch

    return max(1, usable_cores() // max(1, torch.get_num_threads()))


class Lanes:
    """A lock that admits up to ``limit()`` holders at once (read on each entry, so it follows
    ``torch.set_num_threads`` made after the model loaded).

    Args:
        limit: How many may hold it at once; default :func:`parallel_lanes`.

    Example:
        >>> lanes = Lanes(lambda: 2)
        >>> with lanes:
        ...     lanes.held
        1
    """

    def __init__(self, limit: Callable[[], int] = parallel_lanes) -> None:
        self._limit = limit
        self.cap: int | None = None  # pin(): at most this many, whatever the cores fit
        self._cond = threading.Condition()
        self.held = 0
        self.waiting = 0  # callers blocked in __enter__

    def limit(self) -> int:
        """How many may hold it now (>= 1)."""
        n = max(1, self._limit())
        return min(n, self.cap) if self.cap else n

    def pin(self, cap: int | None) -> None:
        """Admit at most ``cap`` holders (``None``: as many as the limit says). Latency benchmarks
        that claim "1 thread" pin 1, so a lone rerank pool is not split over other cores."""
        if cap is not None and cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        with self._cond:
            self.cap = cap
            self._cond.notify_all()

    def in_use(self) -> int:
        """Holders plus callers waiting to hold it: the lanes spoken for (a read without the lock,
        for an estimate)."""
        return self.held + self.waiting

    def __enter__(self) -> Lanes:
        with self._cond:
            self.waiting += 1
            try:
                while self.held >= self.limit():
                    self._cond.wait()
            finally:
                self.waiting -= 1
            self.held += 1
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._cond:
            self.held -= 1
            self._cond.notify_all()  # all: the limit may have risen since they began to wait


FORWARDS = Lanes()
