"""Uniform model soups: one model whose weights are the average of several fine-tuned from one start.

Fine-tuning runs that start from the same weights and differ only in their seed (which hard
negatives are sampled, the order of the groups, the dropout masks) end close enough together that
the average of their weights is itself a good model, as a rule better than its members and much less
dependent on the seed: Wortsman et al., 2022, "Model soups: averaging weights of multiple fine-tuned
models improves accuracy without increasing inference time". It costs nothing at inference: one
model of the same size. ``mmrag train-reranker --soup N`` uses it (measured in docs/search.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmrag.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["WeightSum"]


class WeightSum:
    """A running sum of the floating-point weights of models of one architecture.

    Add each member as it finishes (only the sum stays in memory, in fp32), then
    :meth:`load_mean_into` writes the average into a model of the same architecture. Integer
    buffers (e.g. position ids) are not averaged: the model keeps its own.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        >>> soup = WeightSum()
        >>> soup.add(a); soup.add(b)
        >>> mean = (a.weight + b.weight).detach() / 2
        >>> soup.load_mean_into(a)
        >>> bool(torch.allclose(a.weight, mean))
        True
    """

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor] | None = None
        self.count = 0

    def add(self, model: Any) -> None:
        """Add ``model``'s weights (an ``nn.Module``) to the sum."""
        state = model.state_dict()
        floats = {k: v for k, v in state.items() if v.is_floating_point()}
        if self._sum is None:
            self._sum = {k: v.detach().float().clone() for k, v in floats.items()}
        else:
            self._check(floats)
            for k, v in floats.items():
                self._sum[k] += v.detach().float()
        self.count += 1

    def load_mean_into(self, model: Any) -> None:
        """Overwrite ``model``'s floating-point weights with the members' average."""
        import torch

        if self._sum is None:
            raise ConfigError("no model was added to the soup")
        state = model.state_dict()
        self._check({k: v for k, v in state.items() if v.is_floating_point()})
        with torch.no_grad():
            for k, total in self._sum.items():
                state[k].copy_((total / self.count).to(state[k].dtype))

    def _check(self, floats: dict[str, torch.Tensor]) -> None:
        assert self._sum is not None
        if floats.keys() != self._sum.keys():
            missing = sorted(set(self._sum) ^ set(floats))[:3]
            raise ConfigError(f"soup members differ in their weights ({missing} ...): not one architecture")
        for k, v in floats.items():
            if v.shape != self._sum[k].shape:
                theirs = tuple(self._sum[k].shape)
                raise ConfigError(f"soup members differ in {k}: {tuple(v.shape)} vs {theirs}")
