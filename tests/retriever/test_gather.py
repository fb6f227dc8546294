"""The gathering queue under the micro-batched searches (issue #16, :class:`mmrag.retriever.gather.Gather`):
calls that arrive together become one batch, up to ``lanes`` batches run at once, waiting calls are
shared out over the free lanes, and a failing or interrupted call fails alone, leaving no call hanging.

Batches are formed deterministically, never by timing: the first batch is held on an Event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from mmrag.errors import MmragError
from mmrag.retriever.gather import Gather
from tests.waiting import wait_until


def first_batch_held(release: threading.Event, sizes: list[int]) -> Callable[[list[int]], list[int]]:
    """A batched square that records each batch's size and holds the first inside until ``release``."""

    def square(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        if len(sizes) == 1:
            assert release.wait(60)
        return [x * x for x in xs]

    return square


def test_gather_fails_only_the_bad_call() -> None:
    def square(xs: list[int]) -> list[int]:
        if any(x < 0 for x in xs):
            raise ValueError("negative")
        return [x * x for x in xs]

    g: Gather[int, int] = Gather(square, max_batch=8, max_wait_ms=50, ready=lambda n: n >= 3)
    out: dict[int, Any] = {}

    def call(x: int) -> None:
        try:
            out[x] = g([x])
        except MmragError as exc:  # pragma: no cover - would be the wrong error type
            out[x] = exc
        except ValueError as exc:
            out[x] = exc

    threads = [threading.Thread(target=call, args=(x,)) for x in (2, -1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out[2] == [4] and out[3] == [9] and isinstance(out[-1], ValueError)
    assert g.calls == 3


@pytest.mark.parametrize("lanes", [1, 2])
def test_gather_runs_up_to_lanes_batches_at_once(lanes: int) -> None:
    """The first batch is held inside ``fn``: with a second lane the next calls form a batch and
    finish meanwhile; with one they wait for it. A leader's wait counts the calls running."""
    release = threading.Event()
    sizes: list[int] = []
    admitted = [0]  # calls started and not returned, as SearchBatcher counts its searches
    lock = threading.Lock()
    square = first_batch_held(release, sizes)

    def all_here(n: int) -> bool:
        with lock:
            return n >= admitted[0]

    # max_wait 60 s: batches form when every admitted call waits or runs, never by timing
    g: Gather[int, int] = Gather(square, 8, 60_000, ready=all_here, lanes=lambda: lanes)
    out: dict[int, list[int]] = {}

    def call(x: int) -> None:
        out[x] = g([x])
        with lock:
            admitted[0] -= 1
        g.poke()

    def start(xs: tuple[int, ...]) -> list[threading.Thread]:
        with lock:
            admitted[0] += len(xs)
        threads = [threading.Thread(target=call, args=(x,)) for x in xs]
        for t in threads:
            t.start()
        return threads

    threads = start((1,))
    wait_until(lambda: sizes == [1], "the first call runs alone")
    threads += start((2, 3))
    if lanes == 1:
        wait_until(lambda: g.waiting == 2, "the other calls wait for the only lane")
        assert sizes == [1] and not out
    else:
        wait_until(lambda: out.get(2) == [4] and out.get(3) == [9], "a second lane served them")
        assert 1 not in out  # the first batch is still held
    release.set()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9]} and sizes == [1, 2]
    assert g.batches == 2 and g.calls == 3


@pytest.mark.parametrize(
    ("lanes", "busy", "sizes"), [(1, 0, [4]), (2, 0, [2, 2]), (3, 0, [2, 2]), (2, 1, [4]), (3, 1, [2, 2])]
)
def test_waiting_calls_are_shared_out_over_the_free_lanes(lanes: int, busy: int, sizes: list[int]) -> None:
    """Four calls waiting with two free lanes run as two batches of two side by side, not one
    batch of four with the second lane idle; one free lane takes all, and no batch is split
    below two calls (a third lane stays free). A lane other work holds (``busy``: a rerank pass)
    is not free: the four run as one batch rather than two halves one after the other."""
    seen: list[int] = []
    four_here = threading.Barrier(len(sizes), timeout=10)

    def square(xs: list[int]) -> list[int]:
        seen.append(len(xs))
        four_here.wait()  # with lanes > 1, every batch waits until all run at once
        return [x * x for x in xs]

    # never ready by timing (60 s): the leader takes its batch once all four calls wait
    g: Gather[int, int] = Gather(
        square, 8, 60_000, ready=lambda n: n >= 4, lanes=lambda: lanes, busy=lambda: busy
    )
    out: dict[int, list[int]] = {}

    def call(x: int) -> None:
        out[x] = g([x])

    threads = [threading.Thread(target=call, args=(x,)) for x in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9], 4: [16]}
    assert sorted(seen, reverse=True) == sizes and g.batches == len(sizes)


@pytest.mark.parametrize("partner", [True, False])
def test_a_lone_text_waits_for_a_partner_while_another_batch_runs(partner: bool) -> None:
    """``min_batch=2``: with a batch running, a call alone in line waits for a second, although
    ``ready`` says all have come (two in one pass cost less each); once nothing runs it goes alone
    at once. Never ready by timing (60 s)."""
    release = threading.Event()
    sizes: list[int] = []
    square = first_batch_held(release, sizes)

    g: Gather[int, int] = Gather(square, 8, 60_000, ready=lambda n: True, lanes=lambda: 2, min_batch=2)
    out: dict[int, list[int]] = {}
    threads: list[threading.Thread] = []

    def start(x: int) -> None:
        threads.append(threading.Thread(target=lambda: out.__setitem__(x, g([x]))))
        threads[-1].start()

    start(1)
    wait_until(lambda: sizes == [1], "the first call runs (nothing else runs: no wait)")
    start(2)
    wait_until(lambda: g.waiting == 1, "the second call waits in line")
    time.sleep(0.2)
    assert sizes == [1] and 2 not in out  # a free lane, yet it waits for a partner
    if partner:
        start(3)
        wait_until(lambda: out.get(2) == [4] and out.get(3) == [9], "the pair ran in the free lane")
        assert sizes == [1, 2]
        release.set()
    else:
        release.set()  # the running batch ends: the lone call goes now, not after max_wait
        wait_until(lambda: out.get(2) == [4], "the lone call ran once nothing else ran")
        assert sizes == [1, 1]
    for t in threads:
        t.join(60)
    assert out[1] == [1]


def test_a_call_whose_checks_raise_fails_alone() -> None:
    """``size`` raising fails only that caller, before it joins the line; ``cancelled`` raising
    while a batch is taken fails only that call, and the calls taken with it still run (before,
    the error left them taken but never run: their threads hung)."""

    def weight(x: int) -> int:
        if x == 0:
            raise ValueError("no size")
        return 1

    def gone() -> bool:
        raise RuntimeError("cannot tell")

    def square(xs: list[int]) -> list[int]:
        return [x * x for x in xs]

    pair: Gather[int, int] = Gather(square, 8, 60_000, ready=lambda n: n >= 2, size=weight)
    out: dict[int, Any] = {}
    first = threading.Thread(target=lambda: out.__setitem__(4, pair([4])))
    first.start()
    wait_until(lambda: pair.waiting == 1, "a leader waits for a second call")
    with pytest.raises(ValueError, match="no size"):  # raised here, not in the leader's thread
        pair([0])
    assert pair.waiting == 1 and 4 not in out
    assert pair([5]) == [25]  # the second call: the pair runs
    first.join(20)
    assert out[4] == [16] and pair.batches == 1

    g: Gather[int, int] = Gather(square, 8, 60_000, ready=lambda n: n >= 3, size=weight)

    def call(x: int) -> None:
        try:
            out[x] = g([x], cancelled=gone if x == 2 else None)
        except RuntimeError as exc:
            out[x] = exc

    threads = [threading.Thread(target=call, args=(x,)) for x in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert out[1] == [1] and out[3] == [9] and isinstance(out[2], RuntimeError)
    assert g.calls == 2 and g.waiting == 0


def test_an_interrupt_while_a_batch_is_taken_leaves_no_call_hanging() -> None:
    """``cancelled`` raising an interrupt (not an Exception) in the leader's thread: the leader
    raises it, the calls already out of line get an error instead of waiting forever, and the
    call still in line runs (after ``max_wait``: nobody says the batch is complete)."""

    def interrupt() -> bool:
        raise KeyboardInterrupt

    g: Gather[int, int] = Gather(lambda xs: [x * x for x in xs], 8, 300, ready=lambda n: n >= 3)
    out: dict[int, Any] = {}

    def call(x: int) -> None:
        try:
            out[x] = g([x], cancelled=interrupt if x == 2 else None)
        except BaseException as exc:  # noqa: BLE001 - the test records what each caller got
            out[x] = exc

    threads = []
    for x in (1, 2, 3):
        threads.append(threading.Thread(target=call, args=(x,)))
        threads[-1].start()
        if x < 3:
            wait_until(lambda n=x: g.waiting == n, f"{x} call(s) in line")  # type: ignore[misc]
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert isinstance(out[1], KeyboardInterrupt) and isinstance(out[2], MmragError)
    assert out[3] == [9] and g.waiting == 0


def test_calls_left_by_a_shared_out_batch_do_not_wait_again() -> None:
    """With nobody saying the batch is complete (``ready`` never true), the leader waits
    ``max_wait``; the calls it leaves for the second lane have waited as long and lead at once,
    so both batches start together instead of one ``max_wait`` apart."""
    starts: list[float] = []
    go = threading.Event()

    def square(xs: list[int]) -> list[int]:
        starts.append(time.monotonic())
        return [x * x for x in xs]

    g: Gather[int, int] = Gather(square, 8, 2000, ready=lambda n: False, lanes=lambda: 2)
    out: dict[int, list[int]] = {}

    def call(x: int) -> None:
        go.wait(10)
        out[x] = g([x])

    threads = [threading.Thread(target=call, args=(x,)) for x in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9], 4: [16]} and len(starts) == 2
    assert starts[1] - starts[0] < 1.5  # one wait of 2 s in all, not two (generous for a slow host)


def test_a_call_left_in_line_leads_in_the_free_lane_at_once() -> None:
    """A leader that takes a full batch and leaves a call waiting wakes it: with a second lane
    free it runs now, not when the first batch ends (before the fix it slept until then)."""
    release = threading.Event()
    sizes: list[int] = []
    square = first_batch_held(release, sizes)

    # weights 1, 1, 2 against max_batch 3: the leader waits for more until the third call comes,
    # then takes the first two (the third does not fit); never ready by timing (60 s)
    g: Gather[int, int] = Gather(
        square, 3, 60_000, ready=lambda n: False, size=lambda x: 2 if x == 3 else 1, lanes=lambda: 2
    )
    out: dict[int, list[int]] = {}
    threads: list[threading.Thread] = []

    def call(x: int) -> None:
        out[x] = g([x])

    for x in (1, 2, 3):
        threads.append(threading.Thread(target=call, args=(x,)))
        threads[-1].start()
        if x < 3:
            wait_until(lambda n=x: g.waiting == n, f"{x} call(s) wait: the first leads")  # type: ignore[misc]
    wait_until(lambda: out.get(3) == [9], "the call left in line ran in the second lane")
    assert sizes == [2, 1] and 1 not in out
    release.set()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9]}
