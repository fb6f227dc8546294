"""A fingerprint of a module's weights: it changes whenever they do, so a copy derived from them
(an ONNX export, a bf16 copy, a trace) is known to be stale.

It is taken before every forward pass of a served query, holding the GIL, so it must be cheap.
Walking the module tree (~120 modules for the MiniLM text tower) cost ~105 us a call; reading the
tensors of a walk made earlier costs ~13 us. A walk is therefore reused while the tree cannot have
changed:

- A tensor changed in place (an optimizer step, ``load_state_dict``) bumps its version counter;
  one whose data was swapped (``p.data = ...``, ``module.to(...)``) has a new data pointer. Both are
  read from the tensors on every call.
- A parameter, buffer or submodule put in (``register_*``, ``add_module``, attribute assignment,
  ``load_state_dict(assign=True)``) calls torch's global registration hooks: any of them anywhere
  in the process makes the next call walk again.
- What passes no hook (a parameter set to ``None`` or deleted, the module's dicts edited directly)
  is seen by the next walk: at most :data:`REWALK_S` after the last one. So is a registration on
  another thread that lands during a walk (torch calls the hooks just before it stores the value).

A walk holds the tensors it found until the module's next walk or its end (e.g. the parameters that
``load_state_dict(assign=True)`` replaced, until the next fingerprint of that module).

Where this torch has no registration hooks, every call walks.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["REWALK_S", "weights_fingerprint"]

REWALK_S = 0.2  # the longest a walk is reused (a change that passes no hook is seen within this)
_COUNTER = itertools.count(1)  # next() is atomic: every registration gets its own value
_EPOCH = [0]  # the value of the last registration anywhere in the process
_LOCK = threading.Lock()
_HOOKED: list[bool] = []  # [whether the hooks are in]: decided once, on the first call
# module -> (epoch when walked, when, its tensors): weak, so a dropped module's entry goes with it
_WALKS: weakref.WeakKeyDictionary[Any, tuple[int, float, list[torch.Tensor]]] = weakref.WeakKeyDictionary()


def _registered(*_: object) -> None:
    _EPOCH[0] = next(_COUNTER)


def _hooks_in() -> bool:
    """Put the registration hooks in (once); False where this torch has none."""
    if not _HOOKED:
        from torch.nn.modules import module as nn_module

        names = ("parameter", "buffer", "module")
        registers = [getattr(nn_module, f"register_module_{n}_registration_hook", None) for n in names]
        if all(callable(r) for r in registers):
            for register in registers:
                register(_registered)  # type: ignore[misc]
            _HOOKED.append(True)
        else:
            _HOOKED.append(False)
    return _HOOKED[0]


def _walk(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of the tree, each once, over the modules' own dicts (~4x cheaper
    than ``named_modules()``)."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    stack = [module]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        out += [t for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
        stack.extend(c for c in m._modules.values() if c is not None)
    return out


def weights_fingerprint(module: torch.nn.Module) -> tuple[int, ...]:
    """Changes whenever the module's weights do (so a derived copy or export is stale).

    Example:
        >>> net = torch.nn.Linear(2, 2)                         # doctest: +SKIP
        >>> before = weights_fingerprint(net)                   # doctest: +SKIP
        >>> with torch.no_grad():                               # doctest: +SKIP
        ...     net.weight.mul_(2)
        >>> weights_fingerprint(net) != before                  # doctest: +SKIP
        True
    """
    with _LOCK:
        hooked = _hooks_in()
        epoch, now = _EPOCH[0], time.monotonic()
        walk = _WALKS.get(module) if hooked else None
        if walk is None or walk[0] != epoch or now - walk[1] > REWALK_S:
            # the epoch read before the walk: a registration during it makes the next call walk
            walk = (epoch, now, _walk(module))
            if hooked:
                _WALKS[module] = walk
    out: list[int] = []
    for t in walk[2]:
        out += (t.data_ptr(), t._version)
    return tuple(out)
