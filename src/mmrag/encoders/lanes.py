"""How many model forward passes may run at once: the usable cores over torch's thread count.

A forward pass with ``t`` intra-op threads keeps ``t`` cores busy. With 2 cores and 1 thread
(``MMRAG_THREADS=1``), one lock per model left a core idle while a query's text forward ran: two
threads calling ``encode_text`` together got 1.04 cores and 9.1 ms per 4-query batch; allowed two
at once, 1.87 cores and 4.3 ms (``OpenClipEncoder``, traced bf16 tower, which runs without the
GIL). :class:`Lanes` lets that many run and makes the rest wait. :data:`FORWARDS` is the process's
one set of lanes, shared by the encoder's towers and the reranker, so their forward passes together
never run more threads than there are cores.

Each lane is also a core: at one torch thread (a forward pass then runs on its caller's thread,
ONNX Runtime's too), a holder's thread is pinned to its lane's core (``sched_setaffinity``, Linux)
until it lets go, and gets its own affinity back. Left to the scheduler, two passes at once
sometimes shared one core while the other ran only Python or idled: the API's 8 concurrent
searches in one process (2-core AMX Xeon microVM, 6 s rounds, 2 x 3 alternating) kept 1.57-1.62
cores busy unpinned and 1.69-1.73 pinned, ~350 -> ~385 searches/s. ``MMRAG_PIN_LANES=0`` turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["FORWARDS", "Lanes", "parallel_lanes", "pin_lanes_default", "usable_cores"]

log = logging.getLogger(__name__)

_PINNED = threading.local()  # .stack: per lane held by this thread, its affinity before (or None)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it; for a thread
    pinned to a lane's core, the affinity it had before)."""
    if hasattr(os, "sched_getaffinity"):
        before = next((p for _, p in getattr(_PINNED, "stack", ()) if p is not None), None)
        return max(1, len(before if before is not None else os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def pin_lanes_default() -> bool:
    """Whether lanes pin their holders to cores: where the OS can (Linux), unless
    ``MMRAG_PIN_LANES=0``."""
    return hasattr(os, "sched_setaffinity") and os.environ.get("MMRAG_PIN_LANES", "1").strip() != "0"


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
        pin_cores: Pin each holder's thread to its lane's core while torch runs one thread (see
            the module docs); default :func:`pin_lanes_default`.

    Example:
        >>> lanes = Lanes(lambda: 2)
        >>> with lanes:
        ...     lanes.held
        1
    """

    def __init__(self, limit: Callable[[], int] = parallel_lanes, *, pin_cores: bool | None = None) -> None:
        self._limit = limit
        self.pin_cores = pin_lanes_default() if pin_cores is None else pin_cores
        self._slots: list[bool] = []  # lane i held now (``held`` counts them)
        self.cap: int | None = None  # pin(): at most this many, whatever the cores fit
        self._cond = threading.Condition()
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

    @property
    def held(self) -> int:
        """Callers holding a lane now."""
        return self._slots.count(True)

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
            slot = self._slots.index(False) if False in self._slots else len(self._slots)
            self._slots[slot : slot + 1] = [True]
        stack: list[tuple[int, set[int] | None]] = _PINNED.__dict__.setdefault("stack", [])
        try:
            before = self._pin(slot, pinned=any(p is not None for _, p in stack))
        except BaseException:
            self._leave(slot)
            raise
        stack.append((slot, before))
        return self

    def _pin(self, slot: int, *, pinned: bool) -> set[int] | None:
        """Pin this thread to lane ``slot``'s core; its affinity before, or None (not pinned)."""
        if not self.pin_cores or pinned:
            return None  # off, or already pinned by an outer lane
        import torch

        if torch.get_num_threads() != 1:
            return None  # a pass on several threads: its pool's threads are not the caller's
        try:
            before = os.sched_getaffinity(0)
            cores = sorted(before)
            if len(cores) < 2 or slot >= len(cores):
                return None
            os.sched_setaffinity(0, {cores[slot]})
        except OSError as exc:  # a container that refuses it: run unpinned
            log.debug("cannot pin a forward pass to a core (%s); lanes run unpinned", exc)
            self.pin_cores = False
            return None
        return before

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        slot, before = _PINNED.stack.pop()
        try:
            if before is not None:
                os.sched_setaffinity(0, before)
        except OSError as err:  # e.g. the process's own affinity narrowed meanwhile
            log.warning("cannot restore a thread's CPU affinity after a forward pass (%s)", err)
        finally:
            self._leave(slot)

    def _leave(self, slot: int) -> None:
        with self._cond:
            self._slots[slot] = False
            self._cond.notify_all()  # all: the limit may have risen since they began to wait


FORWARDS = Lanes()
