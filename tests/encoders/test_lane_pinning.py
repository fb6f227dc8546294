"""Lanes pin their holders to cores (mmrag.encoders.lanes, MMRAG_PIN_LANES): which cores, getting
the affinity back on every way out, and what happens where the OS refuses."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from mmrag.config import Settings
from mmrag.encoders import lanes as lanes_mod
from mmrag.encoders.lanes import Lanes, lane_cores, pin_lanes_default, usable_cores
from mmrag.errors import ConfigError


def _can_narrow() -> bool:
    """Linux, 2+ cores, and a sandbox that lets a thread narrow its own affinity."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    mine = os.sched_getaffinity(0)
    if len(mine) < 2:
        return False
    try:
        os.sched_setaffinity(0, {min(mine)})
    except OSError:
        return False
    os.sched_setaffinity(0, mine)
    return True


needs_affinity = pytest.mark.skipif(
    not _can_narrow(), reason="pinning needs Linux CPU affinity that may be narrowed, and 2+ cores"
)


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def held_elsewhere(lanes: Lanes) -> Iterator[None]:
    """Another thread holds a lane of ``lanes`` for the block's duration."""
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lanes:
            held.set()
            assert done.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(60)
    try:
        yield
    finally:
        done.set()
        t.join(60)


@needs_affinity
@pytest.mark.usefixtures("one_thread")
def test_holders_run_on_their_lanes_cores_and_get_their_affinity_back() -> None:
    mine = os.sched_getaffinity(0)
    order = lane_cores(mine)
    lanes = Lanes(lambda: 2, pin_cores=True)
    inside: dict[int, set[int]] = {}
    counted: dict[int, int] = {}
    after: dict[int, set[int]] = {}
    both = threading.Barrier(2)

    def hold(i: int) -> None:
        with lanes:
            inside[i] = os.sched_getaffinity(0)
            counted[i] = usable_cores()  # the cores the process may use, not the one pinned
            both.wait(60)  # both lanes held at once
        after[i] = os.sched_getaffinity(0)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(inside.values(), key=min) == sorted([{order[0]}, {order[1]}], key=min)  # one each
    assert counted == {0: len(mine), 1: len(mine)}
    assert after == {0: mine, 1: mine}
    assert lanes.held == 0
    with held_elsewhere(lanes):
        with lanes:  # lane 0 is held: this one runs on the second lane's core
            assert os.sched_getaffinity(0) == {order[1]}
            with Lanes(lambda: 2, pin_cores=True):  # nested (its own lane 0): the outer pin stays
                assert os.sched_getaffinity(0) == {order[1]}
            assert os.sched_getaffinity(0) == {order[1]}
        assert os.sched_getaffinity(0) == mine
    with lanes:  # freed lanes are taken again from the first
        assert os.sched_getaffinity(0) == {order[0]}


def test_lane_cores_spread_physical_cores_first_and_rotate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cpu0/cpu1 share physical core 0 and cpu2/cpu3 core 1 (SMT siblings numbered side by side):
    two lanes get two physical cores, and the start rotates with the process."""
    for cpu, core in ((0, 0), (1, 0), (2, 1), (3, 1)):
        top = tmp_path / f"cpu{cpu}" / "topology"
        top.mkdir(parents=True)
        (top / "physical_package_id").write_text("0\n")
        (top / "core_id").write_text(f"{core}\n")
    monkeypatch.setattr(lanes_mod, "_TOPOLOGY", tmp_path)
    lanes_mod._spread.cache_clear()
    try:
        assert lane_cores({0, 1, 2, 3}, start=0) == [0, 2, 1, 3]
        assert lane_cores({0, 1, 2, 3}, start=1) == [2, 0, 3, 1]  # each group rotated
        assert lane_cores({0, 1, 2}, start=1) == [2, 0, 1]  # two busy lanes: two physical cores
        assert lane_cores({1, 3}, start=0) == [1, 3]  # a cpuset of one sibling per core
        assert lane_cores({0, 1, 2, 3}) == lane_cores({0, 1, 2, 3}, start=os.getpid())
    finally:
        lanes_mod._spread.cache_clear()


def test_no_pinning_when_off_or_on_several_threads(one_thread: None) -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this OS")
    mine = os.sched_getaffinity(0)
    with Lanes(lambda: 2, pin_cores=False):
        assert os.sched_getaffinity(0) == mine
    torch.set_num_threads(2)  # a pass on several threads: its pool is not the caller's thread
    with Lanes(lambda: 2, pin_cores=True):
        assert os.sched_getaffinity(0) == mine


@needs_affinity
@pytest.mark.usefixtures("one_thread")
def test_a_failing_holder_gets_its_affinity_and_lane_back() -> None:
    mine = os.sched_getaffinity(0)
    lanes = Lanes(lambda: 1, pin_cores=True)
    with pytest.raises(RuntimeError), lanes:
        assert len(os.sched_getaffinity(0)) == 1  # pinned inside
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == mine and lanes.held == 0


def _interrupt_as_the_entry_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the affinity is narrowed, as the lane is recorded on the thread's stack."""

    class Interrupted(list):  # type: ignore[type-arg]
        def append(self, item: object) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(lanes_mod, "_held", Interrupted)


def _interrupt_as_the_pin_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after ``sched_setaffinity`` returns, before the lane knows it pinned."""
    narrow = Lanes._narrow

    def interrupted(self: Lanes, slot: int, before: set[int]) -> bool:
        narrow(self, slot, before)
        raise KeyboardInterrupt

    monkeypatch.setattr(Lanes, "_narrow", interrupted)


@needs_affinity
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("strike", [_interrupt_as_the_entry_is_recorded, _interrupt_as_the_pin_returns])
def test_an_interrupt_while_entering_leaves_no_thread_pinned(
    strike: Callable[[pytest.MonkeyPatch], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = os.sched_getaffinity(0)
    strike(monkeypatch)
    lanes = Lanes(lambda: 2, pin_cores=True)
    with pytest.raises(KeyboardInterrupt), lanes:
        pass
    assert os.sched_getaffinity(0) == mine and lanes.held == 0
    assert not lanes_mod._PINNED.__dict__.get("stack")  # no entry left behind to skip later pins


def test_widening_reads_every_possible_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "possible").write_text("0-3,8,10-11\n")  # sparse ids
    monkeypatch.setattr(lanes_mod, "_TOPOLOGY", tmp_path)
    assert lanes_mod._possible_cpus() == {0, 1, 2, 3, 8, 10, 11}
    (tmp_path / "possible").unlink()
    assert lanes_mod._possible_cpus() == set(range(os.cpu_count() or 1))


@pytest.mark.usefixtures("one_thread")
def test_a_refused_pin_runs_unpinned_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this OS")
    mine = os.sched_getaffinity(0)
    if len(mine) < 2:
        pytest.skip("one core: lanes never pin")

    def refuse(pid: int, cores: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(lanes_mod.os, "sched_setaffinity", refuse)
    lanes = Lanes(lambda: 2, pin_cores=True)
    with caplog.at_level(logging.WARNING, logger=lanes_mod.__name__), lanes:
        assert os.sched_getaffinity(0) == mine
    assert not lanes.pin_cores and lanes.held == 0  # off from now on: one warning, not one a pass
    assert [r.getMessage() for r in caplog.records if "cannot pin" in r.getMessage()]


@needs_affinity
@pytest.mark.usefixtures("one_thread")
def test_a_failed_restore_widens_the_thread_rather_than_leave_it_on_one_core(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mine = os.sched_getaffinity(0)
    real = os.sched_setaffinity
    lanes = Lanes(lambda: 1, pin_cores=True)

    refused: list[object] = []

    def restore_fails(pid: int, cores: object) -> None:
        if not refused:  # the restore, not the widening after it
            refused.append(cores)
            raise OSError(22, "Invalid argument")  # as when the process's own set shrank meanwhile
        real(pid, cores)  # type: ignore[arg-type]

    try:
        with caplog.at_level(logging.WARNING, logger=lanes_mod.__name__), lanes:
            assert len(os.sched_getaffinity(0)) == 1
            monkeypatch.setattr(lanes_mod.os, "sched_setaffinity", restore_fails)
        assert mine <= os.sched_getaffinity(0)  # every core the OS allows: ours at least
        assert refused == [mine] and lanes.held == 0 and "widening" in caplog.text
    finally:
        monkeypatch.undo()
        real(0, mine)


def test_lanes_leave_in_any_order_but_on_the_thread_that_entered() -> None:
    a, b = Lanes(lambda: 2, pin_cores=False), Lanes(lambda: 2, pin_cores=False)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # not last in, first out: each finds its own entry
    assert (a.held, b.held) == (0, 1)
    b.__exit__(None, None, None)
    assert b.held == 0
    a.__enter__()
    errors: list[BaseException] = []

    def leave_elsewhere() -> None:
        try:
            a.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=leave_elsewhere)
    t.start()
    t.join(60)
    assert len(errors) == 1 and "did not enter" in str(errors[0]) and a.held == 1
    a.__exit__(None, None, None)
    assert a.held == 0


@pytest.mark.timeout(120)  # a child stuck on a lock inherited from another thread fails, not hangs
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_keeps_only_its_own_lanes() -> None:
    """A lane held by another thread at fork time would never be let go in the child."""
    lanes = Lanes(lambda: 2, pin_cores=False)
    read, write = os.pipe()
    with held_elsewhere(lanes), lanes:
        pid = os.fork()
        if pid == 0:  # the child: only this thread, holding one lane
            try:
                ok = lanes.held == 1 and lanes.waiting == 0
                lanes.__exit__(None, None, None)
                with lanes, Lanes(lambda: 2, pin_cores=False):  # both lanes free again
                    ok = ok and lanes.held == 1
                os.write(write, b"ok" if ok and lanes.held == 0 else b"no")
            finally:
                os._exit(0)
        assert lanes.held == 2  # the parent's lanes are untouched
    os.close(write)
    try:
        assert os.read(read, 2) == b"ok"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def test_pinning_follows_the_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("MMRAG_PIN_LANES", off)
        assert not pin_lanes_default() and not Lanes().pin_cores
    for on in ("1", "true", "yes", ""):
        monkeypatch.setenv("MMRAG_PIN_LANES", on)
        assert pin_lanes_default() == hasattr(os, "sched_setaffinity")
    monkeypatch.setenv("MMRAG_PIN_LANES", "sometimes")  # read at import: logged, the default kept
    with caplog.at_level(logging.WARNING, logger=lanes_mod.__name__):
        assert pin_lanes_default() == hasattr(os, "sched_setaffinity")
    if hasattr(os, "sched_setaffinity"):
        assert "MMRAG_PIN_LANES must be 1 or 0" in caplog.text
    with pytest.raises(ConfigError, match="MMRAG_PIN_LANES"):  # what the CLI and the API read first
        Settings.from_env({"MMRAG_PIN_LANES": "sometimes"})
