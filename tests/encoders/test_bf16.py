"""Texts on a bf16 copy of the tower: parity, stale weights, fallback, settings."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from tests.runtimes import running
from torch import nn

from mmrag.config import Settings
from mmrag.encoders.bf16 import (
    BF16_MIN_BATCH,
    CHECK_ROWS,
    EAGER_MIN_BATCH,
    PARITY_MIN,
    Bf16Forward,
    bf16_hardware,
    bf16_is_fast,
    set_default_text_precision,
    texts_in_bf16,
)
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError

QUERIES = [
    "a dog runs on the grass",
    "Vitamin D deficiency raises the risk of fractures.",
    "two children play football in a park",
    "Aspirin lowers the risk of heart attacks in older adults.",
    "a man rides a red bicycle down a street",
    "a woman in a blue coat walks past a shop window at night",
    "Smoking during pregnancy lowers birth weight.",
    "birds",
]


def test_lite_texts_match_fp32(lite: OpenClipEncoder) -> None:
    with running(lite, "bf16"):
        lite.text_packed = None  # the padded copy is tested here; packed batches in test_packing.py
        assert lite.text_bf16 is not None
        fast = lite.encode_text(QUERIES)
        assert lite.text_bf16.parity is not None and lite.text_bf16.parity >= PARITY_MIN
        single = lite.encode_text(QUERIES[:1])  # a lone query runs on the copy too (BF16_MIN_BATCH 1)
    with running(lite, "fp32"):
        assert lite.text_bf16 is None
        ref = lite.encode_text(QUERIES)
        ref_single = lite.encode_text(QUERIES[:1])
    assert float(single[0] @ ref_single[0]) >= PARITY_MIN and not np.array_equal(single, ref_single)
    assert len(QUERIES) >= BF16_MIN_BATCH
    assert fast.dtype == np.float32 and np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)
    assert float((fast * ref).sum(axis=1).min()) >= PARITY_MIN
    # the same nearest query for every query, not just close vectors
    assert np.array_equal(
        np.argsort(-(fast @ fast.T), axis=1)[:, :3], np.argsort(-(ref @ ref.T), axis=1)[:, :3]
    )


def test_lite_bf16_copy_is_traced_and_pads_like_eager(lite: OpenClipEncoder) -> None:
    """The copy runs as one TorchScript call (one GIL release, no Python per op), and the trace
    took the attention-mask path: a text gets the same vector whatever it is padded to."""
    import copy

    if not hasattr(torch.jit, "trace"):
        pytest.skip("this torch has no torch.jit.trace: the eager copy runs (tested below)")
    with running(lite, "bf16"):
        lite.text_packed = None  # the padded copy is tested here; packed batches in test_packing.py
        fwd = lite.text_bf16
        assert fwd is not None
        together = lite.encode_text(QUERIES)  # one batch: the short texts padded to the longest
        assert isinstance(fwd._copy, torch.jit.ScriptModule) and fwd.traced
        assert fwd.min_batch == BF16_MIN_BATCH == 1 and lite.describe()["text_bf16_traced"]
        pairs = np.concatenate([lite.encode_text([q, "birds"])[:1] for q in QUERIES])  # other padding
        tokens = lite.tokenizer(QUERIES)
        eager = copy.deepcopy(lite.model.text).to(torch.bfloat16).eval()
        with torch.inference_mode():
            traced_out, eager_out = fwd(tokens), eager(tokens).float()
    assert float((together * pairs).sum(axis=1).min()) >= PARITY_MIN
    assert torch.allclose(traced_out, eager_out, atol=1e-2)


class _Signed(nn.Module):
    """A data-dependent branch: a trace keeps the branch its example took."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) if bool(x.sum() > 0) else -self.lin(x)  # type: ignore[no-any-return]


def test_an_untraceable_module_runs_its_eager_copy(caplog: pytest.LogCaptureFixture) -> None:
    def broken_example() -> torch.Tensor:
        raise RuntimeError("no example today")

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    fwd = Bf16Forward(net, name="mlp", example=broken_example)
    x = torch.randn(6, 16)
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"), torch.inference_mode():
        y, ref = fwd(x), net(x)
    assert "cannot trace the copy (no example today)" in caplog.text
    assert not fwd.traced and fwd._copy is not None and fwd.min_batch == EAGER_MIN_BATCH
    assert torch.nn.functional.cosine_similarity(y, ref).min() >= PARITY_MIN
    traced = Bf16Forward(net, name="mlp", example=lambda: torch.randn(2, 16))
    with torch.inference_mode():
        assert torch.allclose(traced(x), y, atol=1e-6)
    assert isinstance(traced._copy, torch.jit.ScriptModule)


def test_a_trace_that_differs_or_fails_gives_way_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    """The trace is checked against eager on each batch the copy is checked on (not only on its
    example), and a traced call that raises later runs eagerly from then on."""
    torch.manual_seed(0)
    net = _Signed().eval()
    fwd = Bf16Forward(net, name="signed", example=lambda: torch.ones(2, 8))  # traced: the > 0 branch
    x = -torch.rand(3, 8)  # takes the other branch
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"), torch.inference_mode():
        y = fwd(x)
        ref = net(x)
    assert "the traced copy differs from eager on a (3, 8) input" in caplog.text
    assert not fwd.traced and torch.nn.functional.cosine_similarity(y, ref).min() >= PARITY_MIN

    ok = Bf16Forward(nn.Linear(8, 8).eval(), name="lin", example=lambda: torch.ones(2, 8))
    with torch.inference_mode():
        ok(torch.rand(4, 8))
        assert ok.traced

        def broken(_: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape not supported")

        ok._copy = broken  # a traced graph that fails on a later input
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"):
            out = ok(torch.rand(4, 8))
    assert "the traced copy failed on a (4, 8) input (shape not supported)" in caplog.text
    assert out.shape == (4, 8) and out.dtype == torch.float32 and not ok.traced


def test_copy_follows_weight_updates_and_training_runs_the_module() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    fwd = Bf16Forward(net, name="mlp")
    x = torch.randn(6, 16)
    with torch.inference_mode():
        y = fwd(x)
    assert y.dtype == torch.float32 and fwd.parity is not None and fwd.parity >= PARITY_MIN
    with torch.no_grad():
        net[2].weight.mul_(-1)  # an optimizer step in place: the bf16 copy is stale
    with torch.inference_mode():
        y2, ref2 = fwd(x), net(x)
    assert torch.nn.functional.cosine_similarity(y2, ref2).min() >= PARITY_MIN
    assert torch.nn.functional.cosine_similarity(y2, y).max() < 0  # not the old copy's output
    net.train()
    assert not fwd.usable()
    out = fwd(x)
    out.sum().backward()  # train mode runs the fp32 module itself, with gradients
    assert net[0].weight.grad is not None


class _Cancels(nn.Module):
    """y = a x - b x with a and b almost equal: bf16 keeps only the rounding noise."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8, bias=False)
        self.b = nn.Linear(8, 8, bias=False)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight * (1 + 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) - self.b(x)  # type: ignore[no-any-return]


def test_failed_parity_keeps_fp32(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    net = _Cancels().eval()
    fwd = Bf16Forward(net, name="cancelling net")
    x = torch.randn(9, 8) * 100  # more rows than the check compares: all of them come back fp32
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"), torch.inference_mode():
        y = fwd(x)
        again = fwd(x)
    assert fwd.parity is not None and fwd.parity < PARITY_MIN
    assert "its batches stay in fp32" in caplog.text
    assert not fwd.usable()
    with torch.inference_mode():
        ref = net(x)
    assert torch.equal(y, ref) and torch.equal(again, ref)


def test_the_check_runs_fp32_on_a_few_rows_only() -> None:
    # The fp32 path is ONNX Runtime in an encoder: its arena keeps the largest batch it ran.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).eval()
    seen: list[int] = []

    def fp32(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return net(x)

    fwd = Bf16Forward(net, fallback=fp32, name="small net")
    x = torch.randn(32, 8)
    with torch.inference_mode():
        y = fwd(x)
        ref = net(x)
    assert seen == [CHECK_ROWS] and fwd.usable() and fwd.parity is not None and fwd.parity >= PARITY_MIN
    assert y.shape == ref.shape and float(torch.nn.functional.cosine_similarity(y, ref).min()) >= PARITY_MIN


def test_precision_settings() -> None:
    assert texts_in_bf16("bf16") and not texts_in_bf16("fp32")
    assert texts_in_bf16("auto") == bf16_is_fast()
    with pytest.raises(ConfigError, match="MMRAG_TEXT_PRECISION"):
        texts_in_bf16("fp16")
    with pytest.raises(ConfigError, match="MMRAG_TEXT_PRECISION"):
        set_default_text_precision("int8")
    assert Settings.from_env({"MMRAG_TEXT_PRECISION": "fp32"}).text_precision == "fp32"
    with pytest.raises(ConfigError, match="MMRAG_TEXT_PRECISION"):
        Settings.from_env({"MMRAG_TEXT_PRECISION": "half"})


def test_settings_reach_the_loaded_encoder() -> None:
    from mmrag import wiring

    enc = wiring.load_encoder(Settings(text_precision="fp32"))
    assert enc.text_bf16 is None  # type: ignore[attr-defined]
    assert enc.describe()["text_batch_precision"] == "fp32"
    forced = wiring.load_encoder(Settings(text_precision="bf16"))
    assert forced.text_bf16 is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, True, "amx"), (False, True, "avx512_bf16"), (False, False, None), (True, False, "amx")],
)
def test_bf16_counts_as_fast_with_amx_or_avx512_bf16(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, expected: str | None
) -> None:
    # AVX512-BF16 (AMD Zen 4, Cooper Lake) runs the bf16 copy 1.5x faster than fp32 (docs/speed.md);
    # until 2026-12-01 only AMX counted, so those machines ran every batch in fp32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert bf16_hardware() == expected
    assert bf16_is_fast() is (expected is not None)
    assert texts_in_bf16("auto") is (expected is not None)
