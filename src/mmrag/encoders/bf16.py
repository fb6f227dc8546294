"""bfloat16 inference of a tower, on CPUs that multiply bf16 in hardware.

On a CPU with Intel AMX tiles, oneDNN runs bf16 matrix products several times faster than fp32
(with AVX512-BF16, e.g. AMD Zen 4, ~1.5x), but only once a product has enough rows. With AMX,
MiniLM's text tower on one thread, short SciFact queries, ms per query at 1 / 2 / 4 / 8 texts: fp32
(ONNX Runtime) 4.4 / 4.1 / 4.2 / 4.7; the traced bf16 copy 2.7 at 2, 2.0 at 4, 1.7 at 8; a 256-token
abstract costs ~4x less than in fp32. With AVX512-BF16 (AMD EPYC): fp32 4.8 / 4.0 / 3.6 / 3.6, bf16
3.0 at 2, 2.6 at 4, 2.5 at 8; abstracts 1.5x (``benchmarks/bench_text_path.py``, in BENCHMARKS.md;
``bench_api_concurrency.py`` for the API). So on such a CPU every text batch runs on a bf16 copy of
the tower: an ingest batch, the queries the API's micro-batcher gathers, and a lone query too. Until
2026-12-06 a lone query kept the fp32 path, which is bit-stable, because the copy was no faster for
one text (3.8 ms traced against 3.9 with AMX, 5.3 against 4.8 with AVX512-BF16); with its weights
prepacked one query takes 3.2 ms in bf16 against 5.0-5.4 in fp32 on an AMX Xeon, and 4.9 against
7.3 ms on a Zen 4 EPYC (200 SciFact claims one at a time, 5 alternating rounds, min cosine to fp32
0.99992). Over HTTP on that EPYC one client got 120-149 against 88-111 queries/s (2 alternating fresh
servers each), 8 clients the same. ``MMRAG_TEXT_PRECISION=fp32`` keeps every text on the fp32 path.

:class:`Bf16Forward` keeps that copy: made on first use, checked against the fp32 path on that
batch's first rows (:data:`CHECK_ROWS`) and again on any batch with inputs over twice as long as
checked so far (per-row cosine >= :data:`PARITY_MIN`, else bf16 is switched off for these
weights, with a warning), and re-made when the module's weights change (training updates them in
place). The copy's linear layers hold their weights in oneDNN's layout
(:mod:`mmrag.encoders.prepack`: the same numbers, 25-30% less time for 1-3 queries, ~15% for 8);
where the prepacked copy fails on an input, on its first batch or a later one, a plain copy is made
and checked in its place, with a warning.
A module in train mode always runs itself. The precision is a process default set once by a
face from ``MMRAG_TEXT_PRECISION`` (``auto``: bf16 where :func:`bf16_is_fast`; ``fp32``; ``bf16``).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmrag.config import TEXT_PRECISIONS
from mmrag.encoders.fingerprint import weights_fingerprint
from mmrag.encoders.onnxrt import jit_trace
from mmrag.encoders.prepack import prepack_linears
from mmrag.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BF16_MIN_BATCH = 1  # a lone query too (speed: see above); fp32 everywhere: MMRAG_TEXT_PRECISION=fp32
EAGER_MIN_BATCH = 4  # the same threshold where the copy cannot be traced (eager: slower per text)
TRACE_MATCH = 0.9999  # per-row cosine of the traced copy's output to the eager copy's
PARITY_MIN = 0.999  # per-row cosine of the bf16 copy's output to fp32's on its first batch
# Rows of a checked batch that fp32 also runs: the fp32 path (ONNX Runtime) keeps its arena at the
# largest batch it ran, ~500 MB after 32 texts of 256 tokens, for the life of the process.
CHECK_ROWS = 4
_DEFAULT: list[str] = ["auto"]


def bf16_hardware() -> str | None:
    """The bf16 matrix instructions this CPU has, as oneDNN uses them: ``"amx"`` (Intel AMX tiles,
    Sapphire Rapids and later), ``"avx512_bf16"`` (bf16 dot products: AMD Zen 4 and later, Intel
    Cooper Lake), or ``None`` (bf16 is emulated and slower than fp32)."""
    import torch

    for name, probe in (("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return name
    return None


def bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (:func:`bf16_hardware`).

    There a bf16 transformer runs faster than fp32 on large enough batches. MiniLM text tower, 1
    thread, abstracts/s bf16 against fp32: ~4.3x with AMX; 1.5x with AVX512-BF16 (AMD EPYC, 2 cores;
    the 20-pair rerank 2.7x). Without either, bf16 is emulated and slower.
    """
    return bf16_hardware() is not None


def set_default_text_precision(precision: str) -> None:
    """Make ``precision`` what text towers loaded in this process use (``auto``: bf16 on bf16 hardware)."""
    check_precision(precision)
    _DEFAULT[0] = precision


def check_precision(precision: str) -> str:
    if precision not in TEXT_PRECISIONS:
        names = ", ".join(TEXT_PRECISIONS)
        raise ConfigError(f"text precision must be one of {names} (MMRAG_TEXT_PRECISION), got {precision!r}")
    return precision


_WARNED: list[bool] = []  # the no-bf16-hardware warning, once per process


def texts_in_bf16(precision: str | None = None) -> bool:
    """Whether texts (batches and lone queries) run in bf16 under ``precision`` (``None``: the process
    default)."""
    p = check_precision(precision or _DEFAULT[0])
    fast = bf16_is_fast()
    if p == "bf16" and not fast and not _WARNED:
        _WARNED.append(True)
        log.warning(
            "text precision bf16 on a CPU without AMX or AVX512-BF16: "
            "bf16 is emulated and slower than fp32 here"
        )
    return p == "bf16" or (p == "auto" and fast)


class Bf16Forward:
    """Run a module through a bfloat16 copy of itself, checked against it; float32 out.

    Args:
        module: The fp32 module (e.g. a text tower); it is not changed.
        fallback: The fp32 path that runs instead while the module trains or after a failed check,
            and that the copy is checked against (default: the module itself; an encoder passes
            its ONNX Runtime forward).
        name: What the module is, for log messages.
        example: Makes an input to trace the copy on (TorchScript: one call, one GIL release);
            ``None``: the copy runs eagerly. See :meth:`_traced`.
        head: The input of the first ``n`` items of an input (default ``x[:n]``), for the check
            (:data:`CHECK_ROWS`); a packed text batch (:mod:`mmrag.encoders.packing`) has its own.

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
        head: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> None:
        self.module = module
        self.head = head or (lambda x, n: x[:n])
        self.fallback = fallback or module
        self.name = name
        self.example = example
        self._copy: Any = None  # what runs: the traced copy, or the eager one
        self._eager: Any = None  # the eager bf16 copy (the traced one shares its weights)
        self._key: tuple[int, ...] | None = None
        self._off_key: tuple[int, ...] | None = None  # weights whose bf16 copy failed parity
        self._checked_len = 0  # the longest input (last dimension) checked against fp32
        self._packed = False  # the copy in use has prepacked linear layers
        self._unpacked_only = False  # a prepacked copy failed here: copies are made plain from now on
        self.parity: float | None = None
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """False while the module trains or its current weights failed the parity check (calls
        then run ``fallback``)."""
        if self.module.training:
            return False
        with self._lock:
            return self._off_key is None or self._off_key != weights_fingerprint(self.module)

    @property
    def traced(self) -> bool:
        """Whether the copy runs traced (False before the first batch made it)."""
        return self._copy is not None and self._copy is not self._eager

    @property
    def min_batch(self) -> int:
        """The fewest texts worth the copy: :data:`BF16_MIN_BATCH` traced (or not made yet),
        :data:`EAGER_MIN_BATCH` when it has to run eagerly."""
        return EAGER_MIN_BATCH if self._copy is not None and not self.traced else BF16_MIN_BATCH

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
            net, eager = self._copy, self._eager
        try:
            return net(_bf16(x)).float()  # type: ignore[no-any-return]
        except Exception as exc:
            if net is eager:
                if self._drop_prepacked(x, exc, eager):
                    return self(x)  # a plain copy, made and checked as for new weights
                raise
            self._eager_instead(_failed(x, exc))
            with self._lock:
                self._copy = eager
        try:
            return eager(_bf16(x)).float()  # type: ignore[no-any-return]
        except Exception as exc:
            if self._drop_prepacked(x, exc, eager):
                return self(x)
            raise

    def _drop_prepacked(self, x: torch.Tensor, exc: Exception, eager: Any) -> bool:
        """After ``eager`` failed on ``x``: when it is the prepacked copy in use, make the next call
        build a plain one (the kernels may refuse a shape the probe did not try) and say so; False
        where it is plain (the error is the caller's)."""
        with self._lock:
            if not self._packed or self._unpacked_only or eager is not self._eager:
                return False
            self._plain_from_now(x, exc)
        return True

    def _plain_from_now(self, x: torch.Tensor, exc: Exception) -> None:
        """The prepacked copy failed on ``x``: the next copy made is plain (and so is every later
        one), checked as for new weights. The caller holds the lock."""
        self._unpacked_only, self._key = True, None
        log.warning("%s: the prepacked bf16 copy failed on a %s input (%s); it runs unpacked",
                    self.name, tuple(x.shape), exc)  # fmt: skip

    def _eager_instead(self, why: str) -> None:
        log.warning("%s: %s; the eager bf16 copy runs instead (slower beside busy threads)", self.name, why)

    def _check(self, x: torch.Tensor, key: tuple[int, ...]) -> torch.Tensor:
        import torch

        fresh = key != self._key  # new weights: a new copy; else a longer input for the same copy
        net, eager, packed = self._copy, self._eager, self._packed
        xb = _bf16(x)
        if fresh:
            eager, packed = self._new_copy(prepack=not self._unpacked_only)
        try:
            y: torch.Tensor = eager(xb).float()
        except Exception as exc:
            if not packed:
                raise
            # the prepacked copy refuses its first input, or one longer than any checked
            self._plain_from_now(x, exc)
            return self._check(x, key)
        if fresh:
            net = self._traced(eager)
            self._packed = packed
        ref = self.fallback(self.head(x, CHECK_ROWS)).float()
        if net is not eager:  # the trace must also match on this (new) shape, or it is dropped
            try:
                same = float(torch.nn.functional.cosine_similarity(net(xb).float(), y, dim=-1).min())
            except Exception as exc:  # noqa: BLE001 - a trace that fails on a shape is dropped
                same, why = -1.0, _failed(x, exc)
            else:
                why = f"the traced copy differs from eager on a {tuple(x.shape)} input (cosine {same:.5f})"
            if same < TRACE_MATCH:
                self._eager_instead(why)
                net = eager
        parity = float(torch.nn.functional.cosine_similarity(y[:CHECK_ROWS], ref, dim=-1).min())
        self.parity = parity if fresh or self.parity is None else min(self.parity, parity)
        if parity < PARITY_MIN:
            log.warning(
                "%s: bf16 output has cosine %.5f < %s to fp32's; its batches stay in fp32",
                self.name, parity, PARITY_MIN,
            )  # fmt: skip
            self._off_key, self._copy, self._eager, self._key, self._checked_len = key, None, None, None, 0
            return ref if len(ref) == len(y) else self.fallback(x).float()
        log.debug("%s: bf16 copy checked up to length %d (parity %.6f)", self.name, x.shape[-1], parity)
        length = int(x.shape[-1])
        self._checked_len = length if fresh else max(self._checked_len, length)
        self._copy, self._eager, self._key, self._off_key = net, eager, key, None
        return y

    def _new_copy(self, *, prepack: bool) -> tuple[Any, bool]:
        """A bf16 copy of the module for inference, and whether its linear layers were prepacked
        (``prepack``: their weights laid out for oneDNN once, :mod:`mmrag.encoders.prepack`; the
        same numbers in 25-30% less time for 1-3 queries)."""
        import torch

        net = copy.deepcopy(self.module).to(torch.bfloat16).eval().requires_grad_(False)
        return net, prepack and prepack_linears(net) > 0

    def _traced(self, net: Any) -> Any:
        """``net`` as one TorchScript call when an example input is known and the trace matches.

        Eager, the tower's ops take the GIL back one by one: beside a busy Python thread (an API's
        request handlers) each wait can last the interpreter's 5 ms switch interval, and a 4-query
        batch took 127 ms/query instead of 2.3 (one thread spinning in Python beside it). Traced,
        the call releases the GIL once and skips the Python dispatch: 1.8 ms/query alone, 4.7 beside
        the spinner (``benchmarks/bench_api_concurrency.py`` for the API). The example must be
        padded (a short and a long text) so the attention-mask path is the one traced; the trace
        is compared with eager on it here, and on each batch :meth:`_check` sees. Where tracing is
        unavailable (``torch.jit`` is deprecated), fails or differs, the eager copy runs, with a
        warning.
        """
        if self.example is None:
            return net
        import torch

        try:
            x = _bf16(self.example())
            traced = jit_trace(net, (x,), self.name)
            same = torch.nn.functional.cosine_similarity(traced(x).float(), net(x).float(), dim=-1)
            if float(same.min()) >= TRACE_MATCH:
                return traced
            why = f"the traced copy differs from eager on the example (cosine {float(same.min()):.5f})"
        except Exception as exc:  # noqa: BLE001 - any failure to trace means: run eager
            why = f"cannot trace the copy ({exc})"
        self._eager_instead(why)
        return net


def _failed(x: torch.Tensor, exc: Exception) -> str:
    return f"the traced copy failed on a {tuple(x.shape)} input ({exc})"


def _bf16(x: torch.Tensor) -> torch.Tensor:
    """Float inputs in the copy's dtype; token ids as they are."""
    import torch

    return x.to(torch.bfloat16) if x.is_floating_point() else x
