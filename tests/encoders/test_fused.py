"""Feed-forward linear + GELU fused into one oneDNN call for bf16 inference (mmrag.encoders.fused)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mmrag.encoders.fused import fuse_gelu_ffn, fused_kernel_runs, gelu_kind  # noqa: E402

needs_kernel = pytest.mark.skipif(
    not fused_kernel_runs(), reason="this torch build has no oneDNN linear+GELU"
)


def _bert(act: str = "gelu", layers: int = 2) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=200,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=256,
        hidden_act=act,
        initializer_range=0.2,
    )
    return BertModel(cfg).eval()


def _ids() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 200, (3, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a padded row
    return ids, mask


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(
        torch.nn.functional.cosine_similarity(a.float().flatten(0, 1), b.float().flatten(0, 1), dim=-1).min()
    )


@needs_kernel
@pytest.mark.parametrize(("act", "algorithm"), [("gelu", "none"), ("gelu_new", "tanh")])
def test_fused_bf16_model_matches_eager_and_keeps_its_parameter_names(act: str, algorithm: str) -> None:
    fp32 = _bert(act)
    plain = _bert(act).to(torch.bfloat16)
    fused = _bert(act).to(torch.bfloat16)
    keys = list(fused.state_dict())
    assert fuse_gelu_ffn(fused) == 2
    assert list(fused.state_dict()) == keys  # a checkpoint loads into it as into the original
    layer = fused.encoder.layer[0].intermediate
    assert type(layer.dense).__name__ == "FusedDenseGelu" and layer.dense.algorithm == algorithm
    assert isinstance(layer.intermediate_act_fn, torch.nn.Identity)
    ids, mask = _ids()
    with torch.inference_mode():
        ref = fp32(input_ids=ids, attention_mask=mask).last_hidden_state
        a = plain(input_ids=ids, attention_mask=mask).last_hidden_state
        b = fused(input_ids=ids, attention_mask=mask).last_hidden_state
    assert b.dtype == torch.bfloat16
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fused(input_ids=ids, attention_mask=mask)
    ops = {e.key for e in prof.key_averages()}
    assert "mkldnn::_linear_pointwise" in ops and "aten::gelu" not in ops  # the fused kernel ran
    # as close to eager bf16 as bf16 rounding allows, and as close to fp32 as eager bf16 is
    assert _cos(a, b) > 0.999
    assert _cos(ref, b) > 0.999 and abs(_cos(ref, b) - _cos(ref, a)) < 1e-3


def test_only_bf16_inference_models_with_a_gelu_feed_forward_are_fused() -> None:
    assert fuse_gelu_ffn(_bert()) == 0  # fp32: torch's own kernels are the fast ones there
    training = _bert().to(torch.bfloat16).train()
    assert fuse_gelu_ffn(training) == 0  # the fused kernel has no gradient
    relu = _bert("relu").to(torch.bfloat16)
    assert fuse_gelu_ffn(relu) == 0
    assert type(relu.encoder.layer[0].intermediate.dense) is torch.nn.Linear


def test_gelu_kinds() -> None:
    from transformers.activations import ACT2FN

    assert gelu_kind(torch.nn.GELU()) == "none" and gelu_kind(torch.nn.GELU(approximate="tanh")) == "tanh"
    assert gelu_kind(ACT2FN["gelu"]) == "none" and gelu_kind(ACT2FN["gelu_new"]) == "tanh"
    assert gelu_kind(ACT2FN["relu"]) is None and gelu_kind(ACT2FN["gelu_fast"]) is None


@needs_kernel
def test_a_fused_model_trained_after_all_gets_eager_gradients() -> None:
    import warnings

    plain = _bert().to(torch.bfloat16)
    fused = _bert().to(torch.bfloat16)
    assert fuse_gelu_ffn(fused) == 2
    ids, mask = _ids()
    grads = []
    for model in (plain, fused):
        model.train()
        torch.manual_seed(2)  # the same dropout masks
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "backprop through a kernel without autograd"
            model(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean().backward()
        grads.append(model.encoder.layer[0].intermediate.dense.weight.grad)
    assert grads[1] is not None and torch.equal(grads[0], grads[1])
