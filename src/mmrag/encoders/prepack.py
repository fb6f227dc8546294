"""bf16 linear layers with their weights laid out for oneDNN once, not on every call.

``torch.nn.functional.linear`` on bf16 CPU tensors hands oneDNN a plain row-major weight, which
oneDNN reorders into its blocked (AMX / AVX512-BF16) layout before every product: at the shapes of
a query batch that reorder is a large part of the call. ``torch.ops.mkldnn._reorder_linear_weight``
does it once and ``torch.ops.mkldnn._linear_pointwise`` multiplies by the reordered weight (the
pair torch's own compiler emits for frozen CPU linears). Same numbers: the outputs are identical to
``F.linear``'s (max difference 0.0). MiniLM-L6 text tower, traced bf16 copy, 1 thread, AMX Xeon
(scratch, medians): 1 / 2 / 3 / 8 SciFact queries 4.07 / 5.27 / 7.48 / 15.9 -> 3.03 / 3.78 / 5.19 /
13.6 ms a pass, 32 chunks of 256 tokens 541 -> 431 ms; the 4-layer ``make demo`` reranker, 20
pairs x 112 tokens, traced: 72-84 -> 67-71 ms, 5-11% in three alternating pairs (logits
identical). Fusing the feed-forward's GELU into the same call (attribute ``gelu``,
:mod:`mmrag.encoders.fused`) added 0-3% there and moved logits by up to 0.05, so it is not done.

:func:`prepack_linears` switches the ``torch.nn.Linear`` layers of a bf16 model that only infers
(the text tower's bf16 copies for padded and packed batches, :mod:`mmrag.encoders.bf16`; a copy
of the bf16 reranker, :func:`prepacked_copy`) over to :class:`PrepackedLinear`. Each is a
TorchScript module: ``torch.jit.trace`` cannot record the kernel's optional-scalar list argument,
but keeps a scripted submodule as it is, so the copy still runs as one traced call. The reordered
weight is an opaque oneDNN tensor (no data pointer, no gradient, no ``state_dict`` round trip), so
only a copy that is never trained, saved or fingerprinted is switched. A torch build without the
kernels, or one whose result differs from ``F.linear`` on a probe, leaves the model as it was
(logged at debug level).
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import TYPE_CHECKING, Any

from mmrag.encoders.onnxrt import TORCH_EXPORT_LOCK, jit_trace

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PROBE_MATCH = 0.9999  # cosine of the prepacked probe's rows to F.linear's (measured: identical)


@functools.cache
def _module_class() -> type[torch.nn.Module]:
    import torch

    class PrepackedLinear(torch.nn.Module):
        """``linear(x)`` by a weight reordered once for oneDNN (inference only)."""

        def __init__(self, dense: torch.nn.Linear) -> None:
            super().__init__()
            self.in_features, self.out_features = dense.in_features, dense.out_features
            weight = dense.weight.detach()
            self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, None))
            self.register_buffer("bias", None if dense.bias is None else dense.bias.detach())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            no_args: list[int | float | complex | None] = []  # post-op arguments (there is no post-op)
            kernel = torch.ops.mkldnn._linear_pointwise
            y: torch.Tensor = kernel(x, self.packed, self.bias, "none", no_args, "")
            return y

    return PrepackedLinear


def prepacked(dense: torch.nn.Linear) -> torch.nn.Module:
    """``dense`` (bf16) as a scripted :class:`PrepackedLinear` holding its reordered weight."""
    import torch

    module = _module_class()(dense)
    with TORCH_EXPORT_LOCK, warnings.catch_warnings():  # TorchScript's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


@functools.cache  # a property of the torch build: probed once per process, not per model
def kernels_run() -> bool:
    """Whether this torch build reorders and multiplies bf16 weights through oneDNN, scripted and
    traced, with ``F.linear``'s result on a small probe."""
    import torch

    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    if not all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 16, generator=gen).to(torch.bfloat16)
        with torch.random.fork_rng(devices=[]):  # the layer's init must not move seeded runs after it
            dense = torch.nn.Linear(16, 24).to(torch.bfloat16).eval().requires_grad_(False)
        with torch.inference_mode():
            ref = dense(x).float()
            net = torch.nn.Sequential(prepacked(dense))
            out = jit_trace(net, (x,), "prepack probe")(x[:2]).float()  # traced, then a new shape
        same = torch.nn.functional.cosine_similarity(out.flatten(0, 1), ref[:2].flatten(0, 1), dim=-1)
        return out.shape == ref[:2].shape and float(same.min()) >= PROBE_MATCH
    except Exception as exc:  # noqa: BLE001 - kernels that cannot run here mean: keep F.linear
        log.debug("prepacked bf16 linear layers unavailable: %s", exc)
        return False


def _bf16_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """``(parent, attribute name, layer)`` of every plain bf16 ``torch.nn.Linear`` in ``model``
    (subclasses, e.g. the one ``nn.MultiheadAttention`` reads the weight of, are left alone)."""
    import torch

    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16
    ]


def prepack_linears(model: torch.nn.Module) -> int:
    """Switch each bf16 ``torch.nn.Linear`` of ``model`` (in eval mode, never trained again) to a
    prepacked one, in place; returns how many. 0 leaves the model unchanged: in train mode, no bf16
    linear layers, the kernels missing or wrong on this build, or a layer that could not be
    prepacked (every replacement is built before any is put in, and the failure is logged)."""

    if model.training:
        return 0
    found = _bf16_linears(model)
    if not found or not kernels_run():
        return 0
    packed: dict[int, torch.nn.Module] = {}  # a layer two parents share is packed once
    try:
        for _, _, child in found:
            if id(child) not in packed:
                packed[id(child)] = prepacked(child)
    except Exception as exc:  # noqa: BLE001 - an odd layer (shape, dtype): the model stays plain
        log.warning("%s: cannot prepack its linear layers (%s); they run unpacked", type(model).__name__, exc)
        return 0
    for parent, name, child in found:
        setattr(parent, name, packed[id(child)])
    log.debug("%s: %d bf16 linear layers prepacked for oneDNN", type(model).__name__, len(found))
    return len(found)


def prepacked_copy(model: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of ``model`` (in eval mode) that shares its parameters and buffers, with its bf16
    linear layers prepacked; ``None`` where :func:`prepack_linears` would switch none (or the copy
    cannot be made: logged). The model itself is not changed, so it can still be fingerprinted,
    trained or saved; the reranker traces such a copy (:mod:`mmrag.rerank.traced`). The linear
    layers' weights are then held twice, once reordered: ~14 MB more for the 4-layer MiniLM demo
    reranker, about the size of the linear weights in bf16 for a larger model."""
    import copy

    if model.training or not _bf16_linears(model) or not kernels_run():  # an fp32 model: no probe
        return None
    shared: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    try:
        twin = copy.deepcopy(model, memo=shared)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be copied is traced as it is
        log.warning("%s: cannot copy it to prepack its linear layers (%s)", type(model).__name__, exc)
        return None
    return twin if prepack_linears(twin) > 0 else None
