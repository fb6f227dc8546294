"""Uniform model soups (mmrag.train.soup.WeightSum): the mean of the members' float weights, nothing else."""

from __future__ import annotations

import pytest
import torch

from mmrag.errors import ConfigError
from mmrag.train.soup import WeightSum


class Net(torch.nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(width, 2)
        self.norm = torch.nn.LayerNorm(2).to(torch.bfloat16)
        self.register_buffer("ids", torch.arange(width))  # an integer buffer: never averaged


def test_the_soup_is_the_mean_of_three_members_in_each_ones_dtype() -> None:
    torch.manual_seed(0)
    nets = [Net() for _ in range(3)]
    for i, n in enumerate(nets):
        n.ids += 10 * i
    soup = WeightSum()
    for n in nets:
        soup.add(n)
    mean_w = sum(n.fc.weight.detach() for n in nets) / 3
    target = Net()
    soup.load_mean_into(target)
    torch.testing.assert_close(target.fc.weight, mean_w)
    assert target.norm.weight.dtype == torch.bfloat16  # written back in the model's own dtype
    assert torch.equal(target.ids, torch.arange(3))  # the target keeps its own integer buffer
    assert soup.count == 3


def test_members_of_another_shape_or_no_member_are_refused() -> None:
    soup = WeightSum()
    with pytest.raises(ConfigError, match="no model"):
        soup.load_mean_into(Net())
    soup.add(Net(3))
    with pytest.raises(ConfigError, match=r"differ in fc\.weight"):
        soup.add(Net(4))
    with pytest.raises(ConfigError, match="not one architecture"):
        soup.add(torch.nn.Linear(3, 2))
