"""Forward passes side by side: as many as the cores fit at torch's thread count (mmrag.encoders.lanes)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tests.encoders.test_bf16 import QUERIES
from tests.retriever.test_batching import wait_until

from mmrag.encoders.lanes import FORWARDS, Lanes, parallel_lanes, usable_cores
from mmrag.encoders.openclip import OpenClipEncoder


def test_parallel_lanes_follow_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert parallel_lanes() == usable_cores()
        torch.set_num_threads(usable_cores())
        assert parallel_lanes() == 1
        torch.set_num_threads(usable_cores() + 3)  # more threads than cores: still one lane
        assert parallel_lanes() == 1
    finally:
        torch.set_num_threads(before)


def test_lanes_admit_up_to_the_limit_and_follow_it() -> None:
    limit = [2]
    lanes = Lanes(lambda: limit[0])
    release = threading.Event()
    entered: list[int] = []

    def hold(i: int) -> None:
        with lanes:
            entered.append(i)
            assert release.wait(60)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(entered) == 2 and lanes.waiting == 1, "two holders inside, the third waits")
    assert lanes.held == 2
    limit[0] = 3  # read again when a holder leaves or a new one arrives
    with lanes:  # a fourth caller enters at the raised limit and wakes nobody wrongly
        assert lanes.held == 3
    release.set()
    for t in threads:
        t.join(60)
    assert sorted(entered) == [0, 1, 2] and lanes.held == 0


def test_a_failing_holder_frees_its_lane() -> None:
    lanes = Lanes(lambda: 1)
    with pytest.raises(RuntimeError), lanes:
        raise RuntimeError("boom")
    assert lanes.held == 0
    with lanes:
        assert lanes.held == 1


def test_concurrent_text_batches_equal_serial_ones(lite: OpenClipEncoder) -> None:
    """Two threads encoding at once (the traced bf16 copy and the fp32 path, each on its own
    lane) get exactly the vectors each batch gets alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one lane per core (the fixture's setting, pinned here)
    try:
        _concurrent_equal_serial(lite)
    finally:
        torch.set_num_threads(before)


def _concurrent_equal_serial(lite: OpenClipEncoder) -> None:
    batches = [QUERIES[i : i + n] for n in (1, 4, 8) for i in range(0, len(QUERIES) - n + 1, 3)]
    alone = [lite.encode_text(b) for b in batches]
    got: dict[int, list[np.ndarray]] = {i: [] for i in range(len(batches))}
    start = threading.Barrier(2)

    def run(offset: int) -> None:
        start.wait(60)
        for _ in range(3):
            for i in range(offset, len(batches), 2):
                got[i].append(lite.encode_text(batches[i]))

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, ref in enumerate(alone):
        assert len(got[i]) == 3
        for vectors in got[i]:
            np.testing.assert_array_equal(vectors, ref)
    assert FORWARDS.held == 0


def test_pin_caps_the_lanes() -> None:
    """pin(1): a second holder waits until the first leaves; pin(None) lets a waiter in at once."""
    lanes = Lanes(lambda: 4)
    lanes.pin(1)
    assert lanes.limit() == 1
    entered = threading.Event()

    def second() -> None:
        with lanes:
            entered.set()

    with lanes:
        t = threading.Thread(target=second)
        t.start()
        wait_until(lambda: lanes.waiting == 1, "the second holder waits at the cap")
        assert not entered.is_set()
        lanes.pin(None)  # wakes it: the limit is 4 again
        assert entered.wait(60) and lanes.limit() == 4
    t.join(60)
    assert lanes.held == 0
    with pytest.raises(ValueError, match="cap"):
        lanes.pin(0)
