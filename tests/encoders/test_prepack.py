"""bf16 linear layers with weights reordered for oneDNN once: same numbers, traced, safe fallbacks."""

from __future__ import annotations

import logging

import pytest
import torch
from tests.runtimes import running
from torch import nn

from mmrag.encoders import bf16 as bf16_module
from mmrag.encoders import prepack
from mmrag.encoders.bf16 import PARITY_MIN, Bf16Forward
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.encoders.prepack import kernels_run, prepack_linears, prepacked_copy

needs_kernels = pytest.mark.skipif(
    not kernels_run(), reason="no oneDNN bf16 linear kernels in this torch build"
)


class _Block(nn.Module):
    """A transformer-ish block: a plain Linear, a Linear subclass that others read the weight of
    (as nn.MultiheadAttention does), and a Linear in a nested container."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(16, 64)
        self.act = nn.GELU()
        self.inner = nn.Sequential(nn.Linear(64, 16, bias=False))
        self.tied = nn.modules.linear.NonDynamicallyQuantizableLinear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(self.act(self.up(x)))
        return y + nn.functional.linear(x, self.tied.weight)  # type: ignore[no-any-return]


def _bf16_block() -> _Block:
    torch.manual_seed(0)
    return _Block().to(torch.bfloat16).eval().requires_grad_(False)


@needs_kernels
def test_prepacked_layers_give_the_same_numbers_eager_and_traced() -> None:
    net = _bf16_block()
    x = torch.randn(3, 7, 16).to(torch.bfloat16)
    with torch.inference_mode():
        ref = net(x)
        assert prepack_linears(net) == 2  # up and inner[0]; the subclass keeps its readable weight
        assert type(net.tied) is nn.modules.linear.NonDynamicallyQuantizableLinear
        assert isinstance(net.up, torch.jit.ScriptModule) and net.up.original_name == "PrepackedLinear"
        assert torch.equal(net(x), ref)
        traced = torch.jit.trace(net, (x,), check_trace=False)
        for shape in ((3, 7, 16), (1, 2, 16), (5, 30, 16)):  # other batch sizes and lengths
            z = torch.randn(*shape).to(torch.bfloat16)
            assert torch.equal(traced(z), net(z))


def test_models_that_train_or_are_not_bf16_stay_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    training = _bf16_block().train()
    assert prepack_linears(training) == 0 and type(training.up) is nn.Linear
    fp32 = _Block().eval()
    assert prepack_linears(fp32) == 0 and type(fp32.up) is nn.Linear
    monkeypatch.setattr(prepack, "kernels_run", lambda: False)  # a build without the kernels
    net = _bf16_block()
    assert prepack_linears(net) == 0 and type(net.up) is nn.Linear


def test_a_build_whose_kernels_fail_the_probe_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(dense: nn.Linear) -> nn.Module:
        out = nn.Linear(dense.in_features, dense.out_features).to(torch.bfloat16)
        nn.init.zeros_(out.weight)  # a kernel that runs but computes something else
        return out

    def raises(dense: nn.Linear) -> nn.Module:
        raise RuntimeError("oneDNN: unsupported platform")

    for fake in (wrong, raises):
        monkeypatch.setattr(prepack, "prepacked", fake)
        kernels_run.cache_clear()
        try:
            assert not kernels_run()
            net = _bf16_block()
            assert prepack_linears(net) == 0 and type(net.up) is nn.Linear
        finally:
            kernels_run.cache_clear()


@needs_kernels
def test_a_layer_that_cannot_be_prepacked_leaves_the_whole_model_plain(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real, calls = prepack.prepacked, []

    def second_fails(dense: nn.Linear) -> nn.Module:
        calls.append(dense)
        if len(calls) == 2:
            raise RuntimeError("odd layer")
        return real(dense)

    monkeypatch.setattr(prepack, "prepacked", second_fails)
    net = _bf16_block()
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.prepack"):
        assert prepack_linears(net) == 0
    assert "cannot prepack its linear layers (odd layer); they run unpacked" in caplog.text
    assert type(net.up) is nn.Linear and type(net.inner[0]) is nn.Linear  # not half switched


@needs_kernels
def test_a_prepacked_copy_shares_the_models_tensors_and_leaves_it_alone() -> None:
    from mmrag.encoders.fingerprint import weights_fingerprint

    net = _bf16_block()
    before = weights_fingerprint(net)
    twin = prepacked_copy(net)
    assert twin is not None and twin is not net
    assert isinstance(twin.up, torch.jit.ScriptModule) and type(net.up) is nn.Linear
    assert twin.tied.weight is net.tied.weight  # not held twice
    assert weights_fingerprint(net) == before  # no retrace on the next call
    x = torch.randn(2, 3, 16).to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(twin(x), net(x))
    assert prepacked_copy(_Block().eval()) is None and prepacked_copy(_bf16_block().train()) is None


@needs_kernels
def test_the_text_towers_bf16_copy_is_prepacked_with_unchanged_vectors(lite: OpenClipEncoder) -> None:
    queries = ["a dog runs on the grass", "Vitamin D deficiency raises the risk of fractures.", "birds"]
    with running(lite, "bf16"):
        lite.text_packed = None  # the padded copy; packed batches build theirs the same way
        fwd = lite.text_bf16
        assert fwd is not None
        packed = lite.encode_text(queries)
        assert fwd.traced and any(isinstance(m, torch.jit.ScriptModule) for m in fwd._eager.modules())
        plain, _ = fwd._new_copy(prepack=False)
        tokens = lite.tokenizer(queries)
        with torch.inference_mode():
            assert torch.equal(fwd._eager(tokens), plain(tokens))
    assert packed.shape == (3, lite.dim)


class _Refuses(nn.Module):
    """A prepacked layer whose kernel refuses inputs the probe did not try: over ``limit`` along ``dim``."""

    def __init__(self, inner: nn.Module, dim: int, limit: int, why: str) -> None:
        super().__init__()
        self.inner, self.dim, self.limit, self.why = inner, dim, limit, why

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[self.dim] > self.limit:
            raise RuntimeError(self.why)
        return self.inner(x)


def test_a_prepacked_copy_that_fails_runs_unpacked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def breaks(model: nn.Module) -> int:
        model[0] = _Refuses(model[0], dim=0, limit=-1, why="no kernel for this shape")  # any input
        return 1

    monkeypatch.setattr(bf16_module, "prepack_linears", breaks)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    fwd = Bf16Forward(net, name="mlp", example=lambda: torch.randn(2, 16))
    x = torch.randn(5, 16)
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"), torch.inference_mode():
        y, again, ref = fwd(x), fwd(x), net(x)
    failed = "the prepacked bf16 copy failed on a (5, 16) input (no kernel for this shape); it runs unpacked"
    assert failed in caplog.text
    assert not any(isinstance(m, _Refuses) for m in fwd._eager.modules())  # the copy in use is the plain one
    assert fwd.traced and torch.equal(y, again)
    assert torch.nn.functional.cosine_similarity(y, ref).min() >= PARITY_MIN


@needs_kernels
def test_the_bf16_reranker_traces_a_prepacked_copy_and_keeps_its_own_layers() -> None:
    from mmrag.rerank.cross_encoder import CrossEncoderReranker

    docs = [
        "Vitamin D and bone fractures in older adults.",
        "A dog runs on the grass.",
        "Aspirin and the heart.",
    ]
    query = "Does vitamin D lower the risk of fractures?"
    half = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="bf16")
    scores = half.score(query, docs)
    assert half.traced and half._traced is not None
    names = [getattr(m, "original_name", "") for m in half._traced._net.modules()]
    assert names.count("PrepackedLinear") >= half.model.config.num_hidden_layers * 6
    assert all(type(m).__name__ != "RecursiveScriptModule" for m in half.model.modules())  # its own: Linear
    batch = half.collate(half.encode_pairs([query] * len(docs), docs))
    with torch.inference_mode():
        eager = half.model(**batch).logits.float().reshape(-1).numpy()
    assert abs(scores - eager).max() <= 1e-6  # the same logits: prepacking changes no number


@needs_kernels
@pytest.mark.parametrize("fault", ["raises", "differs"])
def test_a_prepacked_reranker_copy_that_fails_gives_way_to_a_plain_trace(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    import copy

    from mmrag.rerank import traced as traced_module
    from mmrag.rerank.cross_encoder import CrossEncoderReranker

    class Raises(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("broken kernel")

    def faulty(model: nn.Module) -> nn.Module:
        twin = copy.deepcopy(model)
        if fault == "raises":
            twin.classifier = Raises()
        else:
            with torch.no_grad():
                twin.classifier.bias += 5.0  # runs, but not the model's logits
        return twin

    monkeypatch.setattr(traced_module, "prepacked_copy", faulty)
    docs, query = ["Vitamin D and bone fractures.", "A dog runs on the grass."], "vitamin D and fractures"
    half = CrossEncoderReranker(None, max_length=64, batch_size=2, precision="bf16")
    with caplog.at_level(logging.DEBUG, logger="mmrag.rerank.traced"):
        scores = half.score(query, docs)
    assert half.traced and half._traced is not None and not half._traced.failed
    assert "the prepacked copy:" in caplog.text and "tracing the model itself" in caplog.text
    assert not [r for r in caplog.records if r.name == "mmrag.rerank.traced" and r.levelno >= logging.WARNING]
    batch = half.collate(half.encode_pairs([query] * len(docs), docs))
    with torch.inference_mode():
        eager = half.model(**batch).logits.float().reshape(-1).numpy()
    assert abs(scores - eager).max() <= 1e-2


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "eager"])
def test_a_prepacked_copy_that_fails_on_a_later_batch_runs_unpacked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, traced: bool
) -> None:
    def refuses_big(model: nn.Module) -> int:
        # scripted: a trace keeps its branch, as it keeps a PrepackedLinear
        model[0] = torch.jit.script(_Refuses(model[0], dim=0, limit=4, why="no kernel for this shape"))
        return 1

    monkeypatch.setattr(bf16_module, "prepack_linears", refuses_big)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    example = (lambda: torch.randn(2, 16)) if traced else None
    fwd = Bf16Forward(net, name="mlp", example=example)
    small, big = torch.randn(3, 16), torch.randn(6, 16)
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"), torch.inference_mode():
        fwd(small)  # the prepacked copy is made, checked and used
        assert fwd._packed
        y, again, ref = fwd(big), fwd(big), net(big)
        assert fwd(small).shape == (3, 8)
    assert "the prepacked bf16 copy failed on a (6, 16) input" in caplog.text
    assert "no kernel for this shape" in caplog.text
    assert caplog.text.count("it runs unpacked") == 1  # once: the plain copy is kept
    assert not fwd._packed and "_Refuses" not in str(fwd._eager)
    assert torch.equal(y, again) and fwd.traced == traced
    assert torch.nn.functional.cosine_similarity(y, ref).min() >= PARITY_MIN


def test_a_prepacked_copy_that_fails_on_a_longer_input_check_runs_unpacked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuses_long(model: nn.Module) -> int:
        model[0] = _Refuses(model[0], dim=1, limit=8, why="no kernel for this length")
        return 1

    monkeypatch.setattr(bf16_module, "prepack_linears", refuses_long)
    torch.manual_seed(0)
    head = nn.Sequential(nn.Embedding(50, 16)).eval()  # token ids of any length in
    short, long = torch.randint(0, 50, (3, 4)), torch.randint(0, 50, (3, 12))  # 12 > 2 x 4: checked
    fwd = Bf16Forward(head, name="emb")
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.bf16"), torch.inference_mode():
        fwd(short)
        y, ref = fwd(long), head(long)
    failed = "the prepacked bf16 copy failed on a (3, 12) input (no kernel for this length); it runs unpacked"
    assert failed in caplog.text
    assert not any(isinstance(m, _Refuses) for m in fwd._eager.modules())
    assert torch.nn.functional.cosine_similarity(y.flatten(1), ref.flatten(1)).min() >= PARITY_MIN
