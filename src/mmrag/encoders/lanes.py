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

Lanes take cores one physical core at a time (SMT siblings last, from sysfs' topology), starting
at a core chosen by the process id, so several mmrag processes on one host do not all put their
first lane on the same core. A thread started inside a pinned lane inherits its one-core mask:
start threads outside the ``with`` block.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from mmrag.config import env_flag
from mmrag.errors import ConfigError

__all__ = ["FORWARDS", "Lanes", "lane_cores", "parallel_lanes", "pin_lanes_default", "usable_cores"]

log = logging.getLogger(__name__)

# .stack: one entry per lane this thread holds, oldest first: (its Lanes, its slot, the thread's
# affinity before the pin, or None where this entry did not pin)
_PINNED = threading.local()
_Held = tuple["Lanes", int, "set[int] | None"]
_TOPOLOGY = Path("/sys/devices/system/cpu")


def _held() -> list[_Held]:
    stack: list[_Held] = _PINNED.__dict__.setdefault("stack", [])
    return stack


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it; for a thread
    pinned to a lane's core, the affinity it had before)."""
    if hasattr(os, "sched_getaffinity"):
        before = next((b for _, _, b in _held() if b is not None), None)
        return max(1, len(before if before is not None else os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def pin_lanes_default() -> bool:
    """Whether lanes pin their holders to cores: where the OS can (Linux), unless
    ``MMRAG_PIN_LANES`` is off (``0``, ``false``, ``no``, ``off``; anything else not ``1`` and
    friends is logged and read as on; :meth:`mmrag.config.Settings.from_env` rejects it)."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        return env_flag(os.environ, "MMRAG_PIN_LANES", True)
    except ConfigError as exc:  # read at import: Settings.from_env stops the CLI and API on it
        log.warning("%s; lanes pin their forward passes (the default)", exc)
        return True


def _physical_core(cpu: int) -> tuple[int, int] | None:
    """(package, core) of a logical CPU from sysfs, or None where it does not say."""
    try:
        top = _TOPOLOGY / f"cpu{cpu}" / "topology"
        return int((top / "physical_package_id").read_text()), int((top / "core_id").read_text())
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=32)
def _spread(cores: frozenset[int]) -> tuple[tuple[int, ...], ...]:
    """The first logical CPU of each physical core, then the second of each, ... (SMT siblings)."""
    seen: dict[tuple[int, int], int] = {}
    rank: dict[int, int] = {}
    for cpu in sorted(cores):
        key = _physical_core(cpu)
        rank[cpu] = 0 if key is None else seen.get(key, 0)
        if key is not None:
            seen[key] = rank[cpu] + 1
    return tuple(
        tuple(cpu for cpu in sorted(cores) if rank[cpu] == r)
        for r in range(max(rank.values(), default=-1) + 1)
    )


def lane_cores(cores: set[int] | frozenset[int], start: int | None = None) -> list[int]:
    """``cores`` in the order lanes take them: one logical CPU of each physical core first (SMT
    siblings after, where sysfs tells them apart), each of those groups rotated by ``start``
    (default: the process id), so one-lane processes spread over the cores and busy lanes never
    share a physical core while another stands idle.

    Example:
        >>> lane_cores({900, 901, 902}, start=1)  # CPUs sysfs knows nothing of: by number
        [901, 902, 900]
    """
    shift = os.getpid() if start is None else start
    out: list[int] = []
    for group in _spread(frozenset(cores)):
        first = shift % len(group)
        out += group[first:] + group[:first]
    return out


def parallel_lanes() -> int:
    """Forward passes that fit the cores side by side at torch's current thread count (>= 1).

    Example:
        >>> parallel_lanes() >= 1
        True
    """
    import torch

    return max(1, usable_cores() // max(1, torch.get_num_threads()))


def _possible_cpus() -> set[int]:
    """Every CPU id the kernel could run on (sysfs ``possible``: ids may be sparse), else 0..count-1."""
    try:
        spans = (_TOPOLOGY / "possible").read_text().strip().split(",")
        return {cpu for span in spans for cpu in range(int(span.split("-")[0]), int(span.split("-")[-1]) + 1)}
    except (OSError, ValueError):
        return set(range(os.cpu_count() or 1))


def _restore(before: set[int]) -> None:
    """Give this thread back its affinity; failing that (the process's own narrowed meanwhile),
    every core the OS still allows, rather than leave it on one."""
    try:
        os.sched_setaffinity(0, before)
    except OSError as err:
        log.warning("cannot restore a thread's CPU affinity after a forward pass (%s); widening it", err)
        try:
            os.sched_setaffinity(0, _possible_cpus())
        except OSError as again:
            log.warning("cannot widen the thread's CPU affinity either (%s)", again)


_LIVE: weakref.WeakSet[Lanes] = weakref.WeakSet()


class Lanes:
    """A lock that admits up to ``limit()`` holders at once (read on each entry, so it follows
    ``torch.set_num_threads`` made after the model loaded). A holder leaves on the thread that
    entered (a ``with`` block), in any order.

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
        _LIVE.add(self)

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
        stack, before = _held(), None
        try:
            before = self._core_for(slot, pinned=any(b is not None for _, _, b in stack))
            if before is not None and not self._narrow(slot, before):
                before = None  # refused: nothing to restore
            stack.append((self, slot, before))
        except BaseException:  # KeyboardInterrupt too: no thread left on one core, no lane lost
            if stack and stack[-1][0] is self and stack[-1][1] == slot:
                stack.pop()  # recorded just before the interrupt
            if before is not None and os.sched_getaffinity(0) != before:
                _restore(before)  # narrowed, and the interrupt came as the pin returned
            self._leave(slot)
            raise
        return self

    def _core_for(self, slot: int, *, pinned: bool) -> set[int] | None:
        """This thread's affinity now if lane ``slot`` should pin it, else None."""
        if not self.pin_cores or pinned:
            return None  # off, or already pinned by an outer lane
        import torch

        if torch.get_num_threads() != 1:
            return None  # a pass on several threads: its pool's threads are not the caller's
        before = os.sched_getaffinity(0)
        return before if len(before) >= 2 and slot < len(before) else None

    def _narrow(self, slot: int, before: set[int]) -> bool:
        try:
            os.sched_setaffinity(0, {lane_cores(before)[slot]})
        except OSError as exc:  # a container or sandbox that refuses it: run unpinned
            log.warning("cannot pin a forward pass to a core (%s); lanes run unpinned", exc)
            self.pin_cores = False
            return False
        return True

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = _held()
        at = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] is self), None)
        if at is None:
            raise RuntimeError("a Lanes was left on a thread that did not enter it")
        _, slot, before = stack[at]
        try:
            del stack[at]
            if before is not None:
                _restore(before)
        finally:
            self._leave(slot)

    def _leave(self, slot: int) -> None:
        with self._cond:
            self._slots[slot] = False
            self._cond.notify_all()  # all: the limit may have risen since they began to wait

    def _after_fork(self) -> None:
        """In a forked child only the forking thread lives on: keep its lanes, drop the rest."""
        mine = {slot for lanes, slot, _ in _held() if lanes is self}
        self._cond = threading.Condition()  # its lock may have been held by a thread now gone
        self.waiting = 0
        self._slots = [i in mine for i in range(len(self._slots))]


def _forget_other_threads() -> None:
    for lanes in list(_LIVE):
        lanes._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_other_threads)

FORWARDS = Lanes()
