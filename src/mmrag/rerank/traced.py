"""The cross-encoder (fp32 or bf16) as one TorchScript call: the GIL released once per forward pass.

Eager, each of the model's ~100 torch ops gives up the GIL and takes it back. Beside a busy Python
thread (an API's event loop, other searches) every take-back can wait for the interpreter's switch
interval. The 4-layer ``make demo`` reranker scoring 20 SciFact pairs (112 tokens, bf16, 1 thread,
AMD EPYC with AVX512-BF16, switch interval 1 ms as ``mmrag serve`` sets it) took 235 ms alone and 323 ms
beside a thread spinning in Python (~89 waits). Traced it took 222 ms alone and 225 ms beside the
spinner, with the same logits (max difference 0.0, padded and unpadded batches). In fp32 (hosts
without bf16 hardware): 494 -> 452 ms alone, 569 -> 430 ms beside the spinner, logits identical. A
model that is trained in place is built with ``trace=False`` (every optimizer step would make it trace
again).

Traced, the feed-forward's fused linear + GELU (:mod:`mmrag.encoders.fused`) cannot be used (the
tracer does not take its kernel's arguments), so a traced model runs it unfused: still faster than
eager with it (222 against 235 ms). Where tracing fails or the trace does not match eager on a padded
probe, the eager model runs, fused, with one warning. The model is traced on first use and traced
again when its weights change (:func:`~mmrag.encoders.fingerprint.weights_fingerprint`); a model in train
mode always runs eagerly.

In bf16 what is traced is a copy that shares the model's parameters with its linear layers' weights
reordered for oneDNN once (:func:`~mmrag.encoders.prepack.prepacked_copy`: the same logits, a
20-pair pass 5-11% faster on an AMX Xeon); where that copy cannot be made, traced or matched to
eager on the probe, the model itself is traced. A prepacked trace that fails later, on a real batch,
gives way to the eager model like any other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mmrag.encoders.fingerprint import weights_fingerprint
from mmrag.encoders.onnxrt import jit_trace
from mmrag.encoders.prepack import prepacked_copy

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MATCH_ATOL = 1e-2  # traced and eager logits on the probe (bf16; measured: identical)


class TracedLogits:
    """A sequence-classification model's logits through a traced copy of its forward pass.

    Args:
        model: The (bf16, eval-mode) Hugging Face model; not changed.
        names: Its input names, in the order the traced call takes them.
        example: Makes a padded probe batch (name -> tensor) to trace on and check against eager.
        on_failure: Called once when tracing is given up (the caller then runs the model eagerly;
            e.g. it fuses the feed-forward, which only an eager model can use).
        name: What the model is, for log messages.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        names: Sequence[str],
        example: Callable[[], dict[str, torch.Tensor]],
        *,
        on_failure: Callable[[], object] | None = None,
        name: str = "cross-encoder",
    ) -> None:
        self.model = model
        self.names = tuple(names)
        self.example = example
        self.on_failure = on_failure
        self.name = name
        self.failed = False
        self._net: Any = None
        self._key: tuple[int, ...] | None = None
        self._lock = threading.RLock()  # re-entered by _give_up from _trace

    @property
    def active(self) -> bool:
        """Whether calls run traced (False before the first call and after tracing was given up)."""
        return self._net is not None and not self.failed

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The logits, or ``None`` when the caller must run the model eagerly."""
        if self.failed or self.model.training:
            return None
        with self._lock:
            if self.failed:
                return None
            key = weights_fingerprint(self.model)
            if key != self._key:
                self._net = self._trace()
                self._key = key
            net = self._net
        if net is None:
            return None
        try:
            return net(*(inputs[n] for n in self.names))  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - any failure of the trace: eager from now on
            self._give_up(f"the traced model failed on a batch ({exc})")
            return None

    def _trace(self) -> Any:
        import torch

        names = self.names

        class Logits(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                return self.inner(**dict(zip(names, args, strict=True))).logits  # type: ignore[no-any-return]

        try:
            x = self.example()
            args = tuple(x[n] for n in names)
            eager = Logits(self.model).eval()
            with torch.inference_mode():
                ref = eager(*args).float()
        except Exception as exc:  # noqa: BLE001 - any failure to trace means: run eager
            self._give_up(f"cannot trace it ({exc})")
            return None
        packed = prepacked_copy(self.model)
        for wrapper in ([Logits(packed).eval()] if packed is not None else []) + [eager]:
            try:
                with torch.inference_mode():
                    traced = jit_trace(wrapper, args, self.name)
                    gap = float((traced(*args).float() - ref).abs().max())
            except Exception as exc:  # noqa: BLE001 - any failure to trace means: run eager
                why = f"cannot trace it ({exc})"
            else:
                if gap <= MATCH_ATOL:  # not NaN
                    how = "traced" if wrapper is eager else "prepacked, traced"
                    log.debug("%s: %s (probe logits %.2g apart)", self.name, how, gap)
                    return traced
                why = f"the traced model differs from eager on a padded probe (logits {gap:.4f} apart)"
            if wrapper is not eager:
                log.debug("%s: the prepacked copy: %s; tracing the model itself", self.name, why)
        self._give_up(why)
        return None

    def _give_up(self, why: str) -> None:
        with self._lock:
            if self.failed:
                return
            self.failed, self._net = True, None
            log.warning("%s: %s; it runs eagerly (slower beside busy threads)", self.name, why)
            if self.on_failure is not None:
                self.on_failure()
