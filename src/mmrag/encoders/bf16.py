"""bfloat16 inference of a tower for large batches, on CPUs that multiply bf16 in hardware.

On a CPU with Intel AMX tiles, oneDNN runs bf16 matrix products several times faster than fp32, but
only once a product has enough rows. MiniLM's text tower on one thread, short SciFact queries, per
query: fp32 (ONNX Runtime) 3.9 ms for one, 3.4 at 2, 3.9 at 4, 4.6 at 8; the traced bf16 copy 3.8 ms
for one, 2.4 at 2, 1.8 at 4, 1.5 at 8; a 256-token abstract costs ~4x less than in fp32
(``benchmarks/bench_text_path.py``; ``bench_api_concurrency.py`` for the API). So a text batch of at
least :data:`BF16_MIN_BATCH` texts (an ingest batch, or the queries the API's micro-batcher gathers)
runs on a bf16 copy of the tower, and a single query keeps the fp32 path: as fast, and bit-stable.

:class:`Bf16Forward` keeps that copy: made on first use, checked against the fp32 path on that
batch and again on any batch with inputs over twice as long as checked so far (per-row cosine >=
:data:`PARITY_MIN`, else bf16 is switched off for these weights, with a warning), and re-made when
the module's weights change (training updates them in place). A module in
train mode always runs itself. The precision is a process default set once by a face from
``MMRAG_TEXT_PRECISION`` (``auto``: bf16 where :func:`bf16_is_fast`; ``fp32``; ``bf16``).
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmrag.config import TEXT_PRECISIONS
from mmrag.encoders.onnxrt import weights_fingerprint
from mmrag.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BF16_MIN_BATCH = 2  # a single text runs as fast on the fp32 path (measured above), and bit-stable
PARITY_MIN = 0.999  # per-row cosine of the bf16 copy's output to fp32's on its first batch
_DEFAULT: list[str] = ["auto"]


def bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles, via oneDNN).

    There a bf16 transformer runs several times faster than fp32 on large enough batches; without
    AMX, bf16 is emulated and slower.
    """
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def set_default_text_precision(precision: str) -> None:
    """Make ``precision`` what text towers loaded in this process use for large batches."""
    check_precision(precision)
    _DEFAULT[0] = precision


def check_precision(precision: str) -> str:
    if precision not in TEXT_PRECISIONS:
        names = ", ".join(TEXT_PRECISIONS)
        raise ConfigError(f"text precision must be one of {names} (MMRAG_TEXT_PRECISION), got {precision!r}")
    return precision


_WARNED: list[bool] = []  # the no-AMX warning, once per process


def large_batch_bf16(precision: str | None = None) -> bool:
    """Whether large text batches run in bf16 under ``precision`` (``None``: the process default)."""
    p = check_precision(precision or _DEFAULT[0])
    fast = bf16_is_fast()
    if p == "bf16" and not fast and not _WARNED:
        _WARNED.append(True)
        log.warning("text precision bf16 on a CPU without AMX: bf16 is emulated and slower than fp32 here")
    return p == "bf16" or (p == "auto" and fast)


class Bf16Forward:
    """Run a module through a bfloat16 copy of itself, checked against it; float32 out.

    Args:
        module: The fp32 module (e.g. a text tower); it is not changed.
        fallback: The fp32 path that runs instead while the module trains or after a failed check,
            and that the copy is checked against (default: the module itself; an encoder passes
            its ONNX Runtime forward).
        name: What the module is, for log messages.

    Example:
        >>> fwd = Bf16Forward(encoder.model.text, name="text tower")   # doctest: +SKIP
        >>> fwd(tokens).dtype                                          # doctest: +SKIP
        torch.float32
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        fallback: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "module",
        example: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        self.module = module
        self.fallback = fallback or module
        self.name = name
        self.example = example
        self._copy: Any = None
        self._key: tuple[int, ...] | None = None
        self._off_key: tuple[int, ...] | None = None  # weights whose bf16 copy failed parity
        self._checked_len = 0  # the longest input (last dimension) checked against fp32
        self.parity: float | None = None
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """False while the module trains or its current weights failed the parity check (calls
        then run ``fallback``)."""
        if self.module.training:
            return False
        with self._lock:
            return self._off_key is None or self._off_key != weights_fingerprint(self.module)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.module.training:
            return self.fallback(x)
        with self._lock:
            key = weights_fingerprint(self.module)
            if key == self._off_key:
                return self.fallback(x)
            if key != self._key or x.shape[-1] > 2 * self._checked_len:
                # new weights, or inputs over twice as long as any checked (short queries first,
                # then 256-token chunks; doubling keeps it to a few checks): compare with fp32 first
                return self._check(x, key)
            net = self._copy
        return net(_bf16(x)).float()  # type: ignore[no-any-return]

    def _check(self, x: torch.Tensor, key: tuple[int, ...]) -> torch.Tensor:
        import torch

        ref = self.fallback(x).float()
        fresh = key != self._key  # new weights: a new copy; else a longer input for the same copy
        net = self._copy
        if fresh:
            net = copy.deepcopy(self.module).to(torch.bfloat16).eval().requires_grad_(False)
            net = self._traced(net)
        y: torch.Tensor = net(_bf16(x)).float()
        parity = float(torch.nn.functional.cosine_similarity(y, ref, dim=-1).min())
        self.parity = parity if fresh or self.parity is None else min(self.parity, parity)
        if parity < PARITY_MIN:
            log.warning(
                "%s: bf16 output has cosine %.5f < %s to fp32's; large batches stay in fp32",
                self.name, parity, PARITY_MIN,
            )  # fmt: skip
            self._off_key, self._copy, self._key, self._checked_len = key, None, None, 0
            return ref
        log.debug("%s: bf16 copy checked up to length %d (parity %.6f)", self.name, x.shape[-1], parity)
        length = int(x.shape[-1])
        self._checked_len = length if fresh else max(self._checked_len, length)
        self._copy, self._key, self._off_key = net, key, None
        return y

    def _traced(self, net: Any) -> Any:
        """``net`` as one TorchScript call when an example input is known and the trace matches.

        Eager, the tower's ops take the GIL back one by one: beside a busy Python thread (an API's
        request handlers) each wait can last the interpreter's 5 ms switch interval, and a 4-query
        batch took 127 ms/query instead of 2.3 (one thread spinning in Python beside it). Traced,
        the call releases the GIL once and skips the Python dispatch: 1.8 ms/query alone, 4.7 beside
        the spinner; in the API, 8 clients get ~25% more queries/s
        (``benchmarks/bench_api_concurrency.py``).
        The example must be padded (a short and a long text) so the attention-mask path is the one
        traced. Where tracing is unavailable (``torch.jit`` is deprecated) or differs from eager on
        the example, the eager copy runs.
        """
        if self.example is None:
            return net
        import torch

        try:
            x = self.example()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation notice and HF's tracer warnings
                traced = torch.jit.trace(net, _bf16(x), check_trace=False)  # type: ignore[no-untyped-call]
            same = torch.nn.functional.cosine_similarity(
                traced(_bf16(x)).float(), net(_bf16(x)).float(), dim=-1
            )
            if float(same.min()) >= 0.9999:
                return traced
            log.debug(
                "%s: the traced bf16 copy differs from eager (cosine %.5f); eager runs", self.name, same.min()
            )
        except Exception as exc:  # noqa: BLE001 - any failure to trace means: run eager
            log.debug("%s: cannot trace the bf16 copy (%s); eager runs", self.name, exc)
        return net


def _bf16(x: torch.Tensor) -> torch.Tensor:
    """Float inputs in the copy's dtype; token ids as they are."""
    import torch

    return x.to(torch.bfloat16) if x.is_floating_point() else x
