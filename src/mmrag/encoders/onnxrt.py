"""Inference of a torch module through ONNX Runtime, with a parity check and a torch fallback.

Eager PyTorch runs EfficientNet-Lite0 at ~20% of the CPU's matmul ceiling (depthwise convolutions,
BatchNorm and activations as separate ops, NCHW). ONNX Runtime folds BatchNorm into the convolutions,
fuses the activations and picks NHWC kernels: the same image tower runs ~4x faster on one thread
(``benchmarks/bench_image_path.py``). The export takes well under a second for the lite towers and
is done in memory, so nothing goes stale on disk.

:class:`FastForward` is what callers use: it wraps a module, exports it on first use, checks the
first batch against torch (cosine >= :data:`PARITY_MIN`, else the module keeps running in torch, with
a warning), and re-exports when the module's weights change (training updates them in place, which
bumps each tensor's version counter). A module in train mode always runs in torch.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mmrag.config import RUNTIMES
from mmrag.encoders.fingerprint import weights_fingerprint
from mmrag.errors import EncoderError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "onnx"]
PARITY_MIN = 0.999  # per-row cosine of ONNX Runtime's output to torch's on the first batch
# What runtime=None means in this process: set once by a face from MMRAG_RUNTIME (like torch's thread
# count), so encoders loaded deep inside training or eval follow the user's choice too.
_DEFAULT: list[Runtime] = ["auto"]
# torch.onnx.export and torch.jit.trace keep process-global state (GLOBALS.in_onnx_export, the trace
# module map): two at once, e.g. the image and text towers' first calls on two lanes, fail. One at a time.
TORCH_EXPORT_LOCK = threading.Lock()


def set_default_runtime(runtime: str) -> None:
    """Make ``runtime`` what encoders loaded without an explicit runtime use in this process."""
    _DEFAULT[0] = check_runtime(runtime)


def default_runtime() -> Runtime:
    return _DEFAULT[0]


def ort_available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's dependency (``onnx``) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def check_runtime(runtime: str) -> Runtime:
    """Validate a runtime name; ``onnx`` without ONNX Runtime installed is an error, ``auto`` is not."""
    if runtime not in RUNTIMES:
        raise EncoderError(f"unknown inference runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "onnx" and not ort_available():
        raise EncoderError(
            "runtime 'onnx' needs onnxruntime and onnx: pip install 'mmrag' (they are core dependencies) "
            "or use runtime 'torch' (MMRAG_RUNTIME=torch)"
        )
    return runtime  # type: ignore[return-value]


def min_cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """Smallest row-wise cosine similarity of two equally shaped arrays (flattened per row)."""
    a2 = a.reshape(len(a), -1).astype(np.float64)
    b2 = b.reshape(len(b), -1).astype(np.float64)
    num = (a2 * b2).sum(1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12))) if len(a2) else 1.0


def export_session(module: torch.nn.Module, example: torch.Tensor, *, threads: int, spin: bool = True) -> Any:
    """Export ``module`` (eval mode) to ONNX in memory and open an ONNX Runtime CPU session.

    Args:
        module: A module taking one ``(n, ...)`` float tensor and returning one tensor.
        example: An input of the right dtype and rank (every axis is dynamic: batch size, and
            sequence length for token ids).
        threads: Intra-op threads of the session (the caller's torch thread count).
        spin: Whether idle intra-op threads spin (ONNX Runtime's default: lowest latency when the
            session has the cores to itself; ``False`` where other threads need them, e.g. image
            decoding beside the image tower: 1792 px JPEGs, 2 threads, 96.2 -> 109.2 images/s).
    """
    return open_session(export_onnx(module, example), threads=max(1, threads), spin=spin)


def jit_trace(net: Any, args: tuple[Any, ...], name: str) -> Any:
    """``torch.jit.trace(net, args)`` under the process's export lock, its warnings (the deprecation
    notice, HF's tracer warnings) logged at debug level as ``name``'s. Raises what tracing raises;
    the caller checks the trace against eager (the bf16 text tower's copy, :mod:`mmrag.rerank.traced`)."""
    import torch

    with TORCH_EXPORT_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(net, args, check_trace=False)  # type: ignore[no-untyped-call]
    for w in caught:
        log.debug("%s: while tracing: %s", name, w.message)
    return traced


def export_onnx(module: torch.nn.Module, example: torch.Tensor | Mapping[str, torch.Tensor]) -> bytes:
    """``module`` (eval mode) as an ONNX model with one output ``y``: one input ``x`` (``example`` a
    tensor), or named inputs passed positionally in their order (``example`` a mapping, e.g. a
    cross-encoder's ``input_ids`` / ``attention_mask``). Every input axis is dynamic (axis ``i`` of
    every input shares the name ``d{i}``: one batch size, one length), as is the output's batch axis."""
    import torch

    inputs = {"x": example} if isinstance(example, torch.Tensor) else dict(example)
    buf = io.BytesIO()
    with TORCH_EXPORT_LOCK, warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript-based exporter warns about constant folding and deprecations; it is the
        # one that needs no onnxscript and exports the timm/open_clip towers exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            buf,  # type: ignore[arg-type]  # a file object works: the exporter writes bytes to it
            input_names=list(inputs),
            output_names=["y"],
            dynamic_axes={
                **{n: {i: f"d{i}" for i in range(t.dim())} for n, t in inputs.items()},
                "y": {0: "d0"},
            },
            dynamo=False,
        )
    return buf.getvalue()


def open_session(model: bytes | str, *, threads: int, spin: bool = True) -> Any:
    """An ONNX Runtime CPU session on ``model`` (bytes or a file path), fully optimised.

    ``threads`` 0 leaves the intra-op count to ONNX Runtime (one per physical core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, threads)
    opts.inter_op_num_threads = 1
    if not spin:  # idle pool threads sleep instead of spinning: other work needs the cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # ORT's own warnings go to stderr, not logging
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _feed(x: torch.Tensor) -> np.ndarray[Any, Any]:
    """The input as ONNX Runtime takes it: float tensors as float32, token ids as they are."""
    arr = x.detach().cpu().numpy()
    return arr if arr.dtype.kind in "iu" else arr.astype(np.float32, copy=False)


class FastForward:
    """Run a torch module through ONNX Runtime when that is exact enough, else through torch.

    Args:
        module: The module (e.g. an image tower); its own ``forward`` stays untouched.
        runtime: ``auto`` (ONNX Runtime when installed and within parity), ``onnx`` (required:
            raises when it cannot be used), or ``torch``; ``None``: :func:`default_runtime`.
        name: What the module is, for log messages.
        spin: Whether the session's idle threads spin (:func:`export_session`).

    Example:
        >>> fwd = FastForward(encoder.model.visual, name="image tower")   # doctest: +SKIP
        >>> feats = fwd(batch)            # a torch tensor, as module(batch) would return
    """

    def __init__(
        self, module: torch.nn.Module, *, runtime: str | None = None, name: str = "module", spin: bool = True
    ) -> None:
        self.module = module
        self.spin = spin
        self.runtime: Runtime = check_runtime(runtime or default_runtime())
        self._ort = self.runtime != "torch" and ort_available()
        self.name = name
        self._session: Any = None
        self._key: tuple[int, ...] | None = None
        self._fallback_key: tuple[int, ...] | None = None  # weights whose export failed parity
        self.parity: float | None = None  # the last export's measured min cosine
        self._lock = threading.Lock()

    @property
    def active(self) -> str:
        """The runtime the next call will use (``onnx`` or ``torch``)."""
        if not self._ort or self.module.training:
            return "torch"
        return "torch" if self._fallback_key is not None and self._fallback_key == self._key else "onnx"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if not self._ort or self.module.training:
            return self.module(x)  # type: ignore[no-any-return]
        with self._lock:
            key = weights_fingerprint(self.module)
            if key == self._fallback_key:
                return self.module(x)  # type: ignore[no-any-return]
            if key != self._key:
                return self._export_and_check(x, key)
            session = self._session
        y = session.run(None, {"x": _feed(x)})[0]
        return torch.from_numpy(y)

    def _export_and_check(self, x: torch.Tensor, key: tuple[int, ...]) -> torch.Tensor:
        import torch

        ref = self.module(x)
        try:
            session = export_session(self.module, x[:1], threads=torch.get_num_threads(), spin=self.spin)
            y = session.run(None, {"x": _feed(x)})[0]
        except Exception as exc:  # the exporter raises many types (torch, onnx, ORT errors)
            if self.runtime == "onnx":
                raise EncoderError(f"cannot run the {self.name} in ONNX Runtime: {exc}") from exc
            log.warning("%s: ONNX export failed (%s); running it in torch", self.name, exc)
            self._fallback_key, self._key = key, key
            return ref  # type: ignore[no-any-return]
        self.parity = min_cosine(y, ref.float().numpy())
        if self.parity < PARITY_MIN:
            msg = f"{self.name}: ONNX Runtime output has cosine {self.parity:.5f} < {PARITY_MIN} to torch's"
            if self.runtime == "onnx":
                raise EncoderError(msg)
            log.warning("%s; running it in torch", msg)
            self._fallback_key, self._key = key, key
            return ref  # type: ignore[no-any-return]
        log.debug("%s: ONNX Runtime session ready (parity %.6f)", self.name, self.parity)
        self._session, self._key, self._fallback_key = session, key, None
        return torch.from_numpy(y)  # every call after parity returns ONNX Runtime's numbers
