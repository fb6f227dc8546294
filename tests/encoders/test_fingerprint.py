"""The weights fingerprint: every kind of weight change moves it; a walk is reused only while safe."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mmrag.encoders import fingerprint as fp
from mmrag.encoders.fingerprint import weights_fingerprint


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Sequential(nn.Linear(4, 2)))


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the tree walks; the re-walk interval long enough that a test never reaches it."""
    count: list[int] = []
    real = fp._walk

    def walk(module: nn.Module) -> list[torch.Tensor]:
        count.append(1)
        return real(module)

    monkeypatch.setattr(fp, "_walk", walk)
    monkeypatch.setattr(fp, "REWALK_S", 3600.0)
    return count


def test_in_place_update_moves_it(walks: list[int]) -> None:
    net = _net()
    before = weights_fingerprint(net)
    with torch.no_grad():
        net[2][0].weight.mul_(2)  # an optimizer step: in place
    assert weights_fingerprint(net) != before
    assert len(walks) == 1  # the same tensors: read again, not walked again


def test_swapped_data_moves_it(walks: list[int]) -> None:
    net = _net()
    before = weights_fingerprint(net)
    net[0].weight.data = torch.zeros(4, 4)  # the same Parameter object, new storage
    assert weights_fingerprint(net) != before
    assert len(walks) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda n: setattr(n[2], "0", nn.Linear(4, 2)),  # a submodule replaced
        lambda n: setattr(n[0], "bias", nn.Parameter(torch.zeros(4))),  # a parameter replaced
        lambda n: n[1].register_buffer("extra", torch.zeros(1)),  # a buffer added
        lambda n: n.add_module("3", nn.Linear(2, 2)),  # a submodule added
        lambda n: n.load_state_dict(copy.deepcopy(_net()).state_dict(), assign=True),
    ],
    ids=["submodule", "parameter", "buffer", "add_module", "assign"],
)
def test_registrations_move_it_at_once(walks: list[int], change: object) -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight.add_(1.0)  # differ from the fresh _net() that "assign" loads
    before = weights_fingerprint(net)
    assert callable(change)
    change(net)
    assert weights_fingerprint(net) != before
    assert len(walks) == 2  # the registration hook made the second call walk


def test_a_change_past_the_hooks_is_seen_by_the_next_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(fp.time, "monotonic", lambda: clock[0])
    net = _net()
    before = weights_fingerprint(net)
    net[0]._parameters["bias"] = None  # a direct dict edit: no hook runs
    assert weights_fingerprint(net) == before  # the walk is reused ...
    clock[0] += fp.REWALK_S + 0.01
    assert weights_fingerprint(net) != before  # ... but not for longer than REWALK_S


def test_unchanged_weights_keep_it_and_are_not_walked_again(walks: list[int]) -> None:
    net, other = _net(), _net()
    key = weights_fingerprint(net)
    weights_fingerprint(other)
    for _ in range(5):
        assert weights_fingerprint(net) == key
    assert len(walks) == 2  # one walk per module
    assert weights_fingerprint(copy.deepcopy(net)) != key  # a copy: other tensors


def test_without_registration_hooks_every_call_walks(
    monkeypatch: pytest.MonkeyPatch, walks: list[int]
) -> None:
    monkeypatch.setattr(fp, "_HOOKED", [False])  # as on a torch without them
    net = _net()
    before = weights_fingerprint(net)
    net[0]._parameters["bias"] = None
    assert weights_fingerprint(net) != before
    assert len(walks) == 2


def test_a_shared_submodule_counts_once() -> None:
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, shared)
    assert len(weights_fingerprint(net)) == 2 * 2  # weight and bias, each (pointer, version)
