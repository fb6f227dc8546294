"""One oneDNN call for a transformer's feed-forward up-projection and its GELU, in bf16 on CPU.

A BERT-style layer computes ``gelu(x W^T + b)`` over ``tokens x 4*hidden`` values. In eager torch
on CPU that is three passes over the widest tensor of the layer: the bias copied into the output,
the matrix product, then GELU in its own kernel. In bf16 the two element-wise passes cost about as
much as the product. The 4-layer MiniLM reranker over 20 pairs x 112 tokens took 156-170 ms per
forward on one Zen 4 core, and 135-144 ms with this fused call in an interleaved A/B
(``torch.ops.mkldnn._linear_pointwise``, the kernel torch's own compiler emits for a linear followed
by GELU; bias and GELU are applied as the product's output is written). The other projections are
left alone: the same call made a forward slower when also used for them. Inside a search, with store
and encoder work between reranks, it pays less: hybrid + rerank@20 end to end 3-4% faster
(docs/speed.md).

:func:`fuse_gelu_ffn` switches a bf16 model in eval mode over, module by module, where the pattern
is HF's (``dense`` then ``intermediate_act_fn``, as in BERT, RoBERTa, XLM-R, ELECTRA) and the
activation is GELU, exact or tanh; the parameters keep their names, so ``state_dict`` is unchanged.
A build of torch without the kernel, or one that gives a different result on a probe, leaves the
model as it was (logged at debug level).

The reranker's bf16 model uses it (it runs eagerly). The text tower's bf16 copy
(:mod:`mmrag.encoders.bf16`) does not: it runs as one TorchScript trace (one GIL release per
forward, which the API's threads need), and ``torch.jit.trace`` cannot record this kernel's
optional-scalar list argument. Measured eagerly it would pay less there than in the reranker: 32
SciFact chunks x 256 tokens took 907-939 ms fused against 1022-1071 unfused and 932-1090 traced.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# activation class -> oneDNN's GELU algorithm ("none": exact, erf; "tanh": the tanh approximation)
GELU_KINDS = {
    "GELUActivation": "none",  # transformers' "gelu" (F.gelu, or its own erf formula)
    "NewGELUActivation": "tanh",  # "gelu_new": the tanh formula
    "PytorchGELUTanh": "tanh",
    "GELUTanh": "tanh",
}
PROBE_MATCH = 0.999  # cosine of the fused probe's output to eager's


def gelu_kind(act: Any) -> str | None:
    """oneDNN's GELU algorithm for ``act``, or None when it is not a GELU the kernel computes."""
    import torch

    if isinstance(act, torch.nn.GELU):
        return "tanh" if act.approximate == "tanh" else "none"
    return GELU_KINDS.get(type(act).__name__)


def _kernel() -> Any:
    import torch

    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


@functools.cache
def _module_class() -> type[torch.nn.Module]:
    import torch

    class FusedDenseGelu(torch.nn.Module):
        """``gelu(linear(x))`` in one oneDNN call; parameters named as the ``Linear`` they replace."""

        def __init__(self, dense: torch.nn.Linear, algorithm: str) -> None:
            super().__init__()
            self.weight = dense.weight
            self.bias = dense.bias
            self.in_features, self.out_features = dense.in_features, dense.out_features
            self.algorithm = algorithm
            self.train(dense.training)  # a new module starts in train mode: take the model's

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
                # the kernel has no gradient: a model trained after all (in place) gets eager math
                y = torch.nn.functional.linear(x, self.weight, self.bias)
                return torch.nn.functional.gelu(y, approximate=self.algorithm)
            return torch.ops.mkldnn._linear_pointwise(  # type: ignore[no-any-return]
                x, self.weight, self.bias, "gelu", [], self.algorithm
            )

        def extra_repr(self) -> str:
            return f"in={self.in_features}, out={self.out_features}, gelu={self.algorithm}"

    return FusedDenseGelu


@functools.cache  # a property of the torch build: probed once per process, not per model loaded
def _probe(algorithm: str) -> bool:
    """Whether the kernel runs here and matches eager bf16 linear + GELU on a small input."""
    import torch

    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 5, 16, generator=gen).to(torch.bfloat16)
        lin = torch.nn.Linear(16, 64).to(torch.bfloat16).eval()
        with torch.inference_mode():
            ref = torch.nn.functional.gelu(lin(x), approximate=algorithm).float()
            out = _module_class()(lin, algorithm)(x).float()
        same = torch.nn.functional.cosine_similarity(out.flatten(0, 1), ref.flatten(0, 1), dim=-1)
        return out.shape == ref.shape and float(same.min()) >= PROBE_MATCH
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run here means: keep eager
        log.debug("fused linear + GELU unavailable: %s", exc)
        return False


def fused_kernel_runs() -> bool:
    """Whether this torch build has the fused kernel and it matches eager on a probe."""
    return _kernel() is not None and _probe("none")


def fuse_gelu_ffn(model: torch.nn.Module) -> int:
    """Run each feed-forward up-projection + GELU of a bf16 ``model`` in eval mode as one call.

    Returns how many were fused (0, model unchanged: not in eval mode, not bf16 there, no such
    layers, or the kernel missing or wrong on this build). The kernel has no gradient, so a fused
    module in train mode, or with gradients wanted, computes linear then GELU eagerly instead.
    """
    import torch

    if model.training or _kernel() is None:
        return 0
    found: list[tuple[torch.nn.Module, str]] = []
    for mod in model.modules():
        dense, act = getattr(mod, "dense", None), getattr(mod, "intermediate_act_fn", None)
        if not isinstance(dense, torch.nn.Linear) or dense.weight.dtype != torch.bfloat16:
            continue
        kind = gelu_kind(act)
        if kind is not None:
            found.append((mod, kind))
    kinds = {kind for _, kind in found}
    if not found or not all(_probe(kind) for kind in kinds):
        return 0
    cls = _module_class()
    for mod, kind in found:
        mod.dense = cls(mod.dense, kind)
        mod.intermediate_act_fn = torch.nn.Identity()
    log.debug("%s: %d feed-forward layers run linear + GELU fused", type(model).__name__, len(found))
    return len(found)
