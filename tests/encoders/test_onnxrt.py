"""The image tower in ONNX Runtime: parity with torch, stale-weight re-export, fallbacks, settings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.runtimes import running
from torch import nn

from mmrag.config import Settings
from mmrag.encoders import load_encoder
from mmrag.encoders.onnxrt import (
    PARITY_MIN,
    TORCH_EXPORT_LOCK,
    FastForward,
    check_runtime,
    export_session,
    min_cosine,
)
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError, EncoderError


def test_onnx_image_embeddings_match_torch(lite: OpenClipEncoder, image_paths: list[Path]) -> None:
    assert lite.image_forward.runtime == "auto"
    fast = lite.encode_image(image_paths)
    assert lite.image_forward.active == "onnx"
    assert lite.image_forward.parity is not None and lite.image_forward.parity >= PARITY_MIN
    with running(lite, runtime="torch"):
        ref = lite.encode_image(image_paths)
        assert lite.describe()["image_runtime"] == "torch"
    assert min_cosine(fast, ref) >= PARITY_MIN
    # Same ranking of the three images for every row, not just close vectors.
    assert np.array_equal(np.argsort(-(fast @ fast.T), axis=1), np.argsort(-(ref @ ref.T), axis=1))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def test_reexports_when_weights_change_in_place() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    fwd = FastForward(net, runtime="onnx", name="net")
    x = torch.randn(5, 3, 12, 12)
    with torch.inference_mode():
        before = fwd(x).numpy()
    with torch.no_grad():
        net.conv.weight.mul_(-2.0)  # what an optimizer step does: in place
    with torch.inference_mode():
        after = fwd(x).numpy()
        want = net(x).numpy()
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, want, rtol=1e-4, atol=1e-5)


def test_train_mode_runs_in_torch() -> None:
    net = _Net().train()
    fwd = FastForward(net, runtime="onnx", name="net")
    assert fwd.active == "torch"
    out = fwd(torch.randn(4, 3, 12, 12))
    assert out.requires_grad  # torch's graph, so training can backpropagate through it


class _Branchy(nn.Module):
    """Data-dependent control flow: the traced export keeps only the branch of its example."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if float(x.sum()) > 0 else -x


def test_parity_failure_falls_back_to_torch_in_auto(caplog: pytest.LogCaptureFixture) -> None:
    fwd = FastForward(_Branchy().eval(), runtime="auto", name="branchy")
    x = torch.ones(3, 4)
    x[1:] = -1.0  # x[:1] (the export example) takes the other branch than the whole batch
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.onnxrt"):
        out = fwd(x)
    assert torch.equal(out, -x)
    assert fwd.active == "torch"
    assert "running it in torch" in caplog.text
    assert torch.equal(fwd(x), -x)  # no second export attempt for the same weights


def test_parity_failure_is_an_error_when_onnx_is_required() -> None:
    fwd = FastForward(_Branchy().eval(), runtime="onnx", name="branchy")
    x = torch.ones(3, 4)
    x[1:] = -1.0
    with pytest.raises(EncoderError, match="cosine"):
        fwd(x)


def test_runtime_names_are_checked() -> None:
    with pytest.raises(EncoderError, match="choose one of"):
        check_runtime("tensorrt")
    with pytest.raises(EncoderError, match="choose one of"):
        load_encoder("lite", runtime="gpu")
    with pytest.raises(ConfigError, match="MMRAG_RUNTIME"):
        Settings.from_env({"MMRAG_RUNTIME": "fast"})
    assert Settings.from_env({"MMRAG_RUNTIME": "torch"}).runtime == "torch"


def test_process_default_runtime_reaches_modules_built_without_one() -> None:
    from mmrag.encoders.onnxrt import default_runtime, set_default_runtime

    assert default_runtime() == "auto"
    set_default_runtime("torch")  # what the CLI does with MMRAG_RUNTIME=torch
    try:
        assert FastForward(_Net().eval()).runtime == "torch"
        assert FastForward(_Net().eval(), runtime="onnx").runtime == "onnx"  # explicit wins
    finally:
        set_default_runtime("auto")
    with pytest.raises(EncoderError, match="choose one of"):
        set_default_runtime("fast")


def test_onnx_text_embeddings_match_torch(lite: OpenClipEncoder) -> None:
    texts = ["a dog", "a much longer sentence about a dog running on the beach at sunset", "cats"]
    fast = lite.encode_text(texts)  # padded batch: the mask must survive the export
    assert isinstance(lite.text_forward, FastForward) and lite.text_forward.active == "onnx"
    single = lite.encode_text(texts[1:2])  # another sequence length than the export's
    with running(lite, runtime="torch"):
        ref, ref_single = lite.encode_text(texts), lite.encode_text(texts[1:2])
    assert min_cosine(fast, ref) >= PARITY_MIN and min_cosine(single, ref_single) >= PARITY_MIN


def test_decode_workers_keep_order_and_errors(
    lite: OpenClipEncoder, image_paths: list[Path], tmp_path: Path
) -> None:
    """Batches decoded on several threads (each a slice of a batch, two batches ahead) come back
    in input order, equal to one thread's, and an unreadable file still fails its call."""
    paths = [image_paths[i % len(image_paths)] for i in range(11)]
    before = lite.decode_workers
    try:
        lite.decode_workers = 1
        one = lite.encode_image(paths, batch_size=4)
        lite.decode_workers = 3
        many = lite.encode_image(paths, batch_size=4)
        starts = [s for s, b in lite.image_batches(paths, 4)]
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"not a jpeg")
        with pytest.raises(EncoderError, match="cannot read image"):
            lite.encode_image([*paths[:9], bad, paths[0]], batch_size=4)
    finally:
        lite.decode_workers = before
    assert starts == [0, 4, 8]
    np.testing.assert_array_equal(one, many)
    assert min_cosine(many[:3], many[3:6]) > 0.9999  # the same photos again, same rows


def test_image_tower_session_does_not_spin(lite: OpenClipEncoder, image_paths: list[Path]) -> None:
    """The image tower's idle ONNX Runtime threads sleep (they share the cores with decoding);
    the text tower keeps ONNX Runtime's spinning default (lower latency for one query)."""
    lite.encode_image(image_paths[:1])
    lite.encode_text(["a dog"])
    image_cfg = lite.image_forward._session.get_session_options().get_session_config_entry
    assert image_cfg("session.intra_op.allow_spinning") == "0"
    text_cfg = lite.text_forward._session.get_session_options().get_session_config_entry  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ORT's default
        text_cfg("session.intra_op.allow_spinning")


def test_closing_image_batches_early_stops_its_threads(
    lite: OpenClipEncoder, image_paths: list[Path]
) -> None:
    import threading

    paths = [image_paths[i % len(image_paths)] for i in range(12)]
    batches = lite.image_batches(paths, 2)
    start, first = next(batches)
    assert start == 0 and first.shape[0] == 2
    batches.close()  # batches 2 and 3 were submitted ahead; their threads must not linger
    assert not [t for t in threading.enumerate() if t.name.startswith("mmrag-img")]


def test_exports_hold_the_process_wide_export_lock() -> None:
    """torch.onnx.export keeps global state: two exports at once (two towers' first calls on two
    lanes) fail, so each runs under TORCH_EXPORT_LOCK (the bf16 trace takes it too)."""
    seen: list[bool] = []

    class Probe(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(TORCH_EXPORT_LOCK.locked())
            return super().forward(x)

    session = export_session(Probe(4, 3).eval(), torch.randn(2, 4), threads=1)
    assert seen and all(seen) and not TORCH_EXPORT_LOCK.locked()
    out = session.run(None, {"x": np.ones((5, 4), dtype=np.float32)})[0]
    assert out.shape == (5, 3)
