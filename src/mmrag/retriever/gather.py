"""Gather the calls of many threads into one call over all their items (a micro-batch).

:class:`Gather` is the mechanism under :class:`~mmrag.retriever.batching.SearchBatcher`: the
encoder's text calls and the reranker's pools of concurrent searches each go through one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from mmrag.errors import MmragError, SearchAbandonedError

__all__ = ["Gather"]

I = TypeVar("I")  # noqa: E741 - an item gathered into a batch
O = TypeVar("O")  # noqa: E741 - its result


class _Call(Generic[I, O]):
    """One caller's items and, once its batch has run, their results or the error."""

    __slots__ = ("cancelled", "done", "error", "items", "out", "ripe", "taken", "wake", "weight")

    def __init__(
        self, items: list[I], weight: int, cancelled: Callable[[], bool] | None, lock: threading.Lock
    ) -> None:
        self.items = items
        self.weight = weight  # its items' total size, against max_batch
        self.ripe = False  # left over by a batch shared out over the lanes: leads without waiting
        self.wake = threading.Condition(lock)  # this caller's own wake-up, on the gather's lock
        self.cancelled = cancelled
        self.out: list[O] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.taken = False  # in a batch that a leader took


class Gather(Generic[I, O]):
    """Gathers the calls of many threads into one call of ``fn`` over all their items.

    No thread of its own: the oldest waiting caller leads, waits up to ``max_wait_ms`` for more
    (less when ``ready(calls waiting or running)`` says nobody else is coming), runs ``fn`` once for
    the batch and hands each caller its slice. Up to ``lanes()`` batches run at once (one per
    forward pass the cores fit); calls arriving meanwhile form the next one, and the calls waiting
    when a batch is taken are shared out over the free lanes. Each caller sleeps on its own
    condition and is woken only when its turn to lead or its results come (not by every event,
    which cost each of a server's waiting threads a GIL round trip). If a batch of several
    calls fails, each call is retried alone so one bad input fails only its own caller. A call whose
    ``cancelled()`` is true when its batch is taken is dropped with
    :class:`~mmrag.errors.SearchAbandonedError` (its client has gone).

    Args:
        fn: Items in, one result per item out, in order.
        max_batch: Size of one ``fn`` call, in items or by ``size`` (a larger single call runs
            alone).
        max_wait_ms: How long the leader waits for more calls.
        ready: ``ready(n)`` is true when ``n`` waiting calls are all that can come; default:
            never (wait the full ``max_wait_ms``).
        size: The weight of an item against ``max_batch`` (default 1; e.g. a rerank pool's pairs).
        lanes: How many batches may run at once (read before each batch is taken; default 1).
        busy: How many of those lanes are in use now by anyone, as far as known (e.g. forward
            passes of other work sharing the cores); the calls waiting are shared out only over
            lanes free by this count too. Default: only this gather's own running batches count.
        min_batch: A batch smaller than this (by ``size``) waits for more, up to ``max_wait_ms``,
            while another batch runs, even when ``ready`` says all have come: the calls in that
            batch come back soon, and two texts in one pass cost less each than a lone pass (bf16
            ~3.0 ms a text at 2 against 4.8 ms fp32 for one). Default 1: never.

    Example:
        >>> double = Gather(lambda xs: [2 * x for x in xs], max_batch=8, max_wait_ms=0)
        >>> double([1, 2])
        [2, 4]
    """

    def __init__(
        self,
        fn: Callable[[list[I]], Sequence[O]],
        max_batch: int,
        max_wait_ms: float,
        ready: Callable[[int], bool] | None = None,
        size: Callable[[I], int] | None = None,
        lanes: Callable[[], int] | None = None,
        busy: Callable[[], int] | None = None,
        min_batch: int = 1,
    ) -> None:
        self._fn = fn
        self._size = size or (lambda _: 1)
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._ready = ready or (lambda _: False)
        self._lock = threading.Lock()
        self._pending: deque[_Call[I, O]] = deque()
        self._lanes = lanes or (lambda: 1)
        self._busy = busy or (lambda: 0)
        self.min_batch = min_batch
        self._running = 0  # batches taken and not finished
        self._leading = False  # a leader is waiting for more calls
        self._in_flight = 0  # calls in those batches
        self.batches = 0  # fn calls so far (batches run), for stats and tests
        self.calls = 0  # caller calls served

    @property
    def waiting(self) -> int:
        """Calls gathered but not yet run."""
        with self._lock:
            return len(self._pending)

    def poke(self) -> None:
        """Re-check a leader's wait (e.g. a search finished, so fewer calls can still come)."""
        with self._lock:
            self._wake_head()

    def _wake_head(self) -> None:
        """Wake the first call in line (holding the lock): it leads, or as the leader it re-checks
        whether its batch is complete."""
        if self._pending:
            self._pending[0].wake.notify()

    def __call__(self, items: Sequence[I], cancelled: Callable[[], bool] | None = None) -> list[O]:
        # weighed before it joins the line: a size() that raises fails only this caller
        todo = list(items)
        call: _Call[I, O] = _Call(todo, sum(self._size(x) for x in todo), cancelled, self._lock)
        with self._lock:
            self._pending.append(call)
            if self._pending[0] is not call and (self._leading or self._lane_free()):
                self._wake_head()  # a leader waiting for more calls counts this one; or one may lead
            leading = False
            try:
                while not call.done and (call.taken or not self._may_lead(call)):
                    call.wake.wait()
                leading = not call.done
                batch = self._take_locked(call) if leading else None
            except BaseException:  # an interrupt in a wait, lanes() raising: no dead head in line
                if leading:
                    self._leading = False
                if call in self._pending:
                    self._pending.remove(call)
                self._wake_head()
                raise
        if batch is not None:
            self._run(batch)
        if call.error is not None:
            raise call.error
        assert call.out is not None  # set by the batch that ran it
        return call.out

    def _lane_free(self) -> bool:
        return self._running < max(1, self._lanes())

    def _may_lead(self, call: _Call[I, O]) -> bool:
        return self._pending[0] is call and self._lane_free()

    def _take_locked(self, leader: _Call[I, O]) -> list[_Call[I, O]]:
        """As the leader, first in line (holding the lock): wait for more calls, then take one
        batch. Calls left over by a batch that was shared out over the lanes already waited: they
        do not wait a second time."""
        deadline = time.monotonic() + (0.0 if leader.ripe else self.max_wait)
        self._leading = True
        while True:
            waiting = sum(c.weight for c in self._pending)
            left = deadline - time.monotonic()
            alone = 2 * self._pending[0].weight > self.max_batch  # no like-sized call fits
            short = 0 < waiting < self.min_batch and self._running > 0  # a partner is on its way
            if (
                waiting >= self.max_batch
                or alone
                or (not short and self._ready(len(self._pending) + self._in_flight))
                or left <= 0
            ):
                break
            leader.wake.wait(left)
        self._leading = False
        # What waits is shared out over the free lanes: 8 calls and 2 free lanes run as two
        # batches of 4 side by side, not one batch of 8 on one core with the other idle; never
        # below 2 items a batch (a pair costs less per item than two single passes). Lanes that
        # other work holds (busy, e.g. a rerank pass) count as taken: a batch split for a lane that
        # is not free only waits for it, and runs as two smaller passes one after the other.
        # (Leading still needs only a lane free of this gather's own batches: nothing here is
        # woken when other work lets go of a lane.)
        free = max(1, min(self._lanes() - max(self._running, self._busy()), waiting // 2))
        cap = min(self.max_batch, -(-waiting // free))
        batch: list[_Call[I, O]] = []
        size = 0
        c: _Call[I, O] | None = None
        try:
            while self._pending and (not batch or size + self._pending[0].weight <= cap):
                c = self._pending.popleft()
                gone = _gone(c)
                if gone is not None:
                    c.error, c.done = gone, True
                    c.wake.notify()  # its own thread raises the error
                else:
                    c.taken = True
                    batch.append(c)
                    size += c.weight
                c = None
        except BaseException:  # an interrupt in cancelled(): the calls out of line never run
            for lost in batch + ([c] if c is not None else []):
                lost.error, lost.done = MmragError("the batch this call was in was interrupted; retry"), True
                lost.wake.notify()
            raise
        self._running += 1
        self._in_flight += len(batch)
        if free > 1:  # shared out: the calls left run next, in the next free lane, without a wait
            for c in self._pending:
                c.ripe = True
        self._wake_head()  # the next in line may lead in a free lane
        return batch

    def _run(self, batch: list[_Call[I, O]]) -> None:
        try:
            items = [x for c in batch for x in c.items]
            try:
                if batch:  # empty when every call taken was abandoned
                    self._split(batch, self._fn(items))
            except Exception as exc:  # noqa: BLE001 - handed to the callers, who raise it
                if len(batch) == 1:
                    batch[0].error = exc
                else:  # one bad input must not fail the others: each call alone, its own error
                    for c in batch:
                        try:
                            self._split([c], self._fn(c.items))
                        except Exception as one:  # noqa: BLE001 - raised by its own caller
                            c.error = one
        finally:
            with self._lock:
                for c in batch:
                    if c.out is None and c.error is None:
                        c.error = MmragError("the batch this call was in was interrupted; retry")
                    c.done = True
                    c.wake.notify()
                self.batches += bool(batch)
                self.calls += len(batch)
                self._running -= 1
                self._in_flight -= len(batch)
                self._wake_head()  # a lane is free

    @staticmethod
    def _split(batch: list[_Call[I, O]], out: Sequence[O]) -> None:
        if len(out) != sum(len(c.items) for c in batch):
            raise MmragError(f"a batched call returned {len(out)} results for {len(batch)} calls' items")
        start = 0
        for c in batch:
            c.out = list(out[start : start + len(c.items)])
            start += len(c.items)


def _gone(call: _Call[I, O]) -> BaseException | None:
    """Why ``call`` must not run: its client has gone, or asking that failed (the call gets the
    error; the calls already taken with it still run)."""
    try:
        if call.cancelled is not None and call.cancelled():
            return SearchAbandonedError("the search was abandoned (its client timed out)")
    except Exception as exc:  # noqa: BLE001 - raised by that call's own thread
        return exc
    return None
