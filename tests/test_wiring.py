"""The one wiring of the front doors: store from settings, model resolution, retriever."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag import wiring
from mmrag.config import Settings
from mmrag.encoders import bf16 as bf16_module
from mmrag.encoders import vector_spec
from mmrag.encoders.bf16 import EAGER_MIN_BATCH
from mmrag.encoders.packing import PACK_MAX_TOKENS
from mmrag.encoders.warmup import WARM_LONG, WARM_PACKED, WARM_ROW, WarmsUp, warm_encoder
from mmrag.retriever import Retriever
from tests.fakes import HashEncoder
from tests.runtimes import running


def test_open_store_keeps_tenancy(tmp_path: Path) -> None:
    with wiring.open_store(Settings(store=str(tmp_path / "s"), tenancy=True)) as store:
        assert store.tenancy
    with wiring.open_store(Settings(store=str(tmp_path / "plain"))) as store:
        assert not store.tenancy


def test_model_resolution_and_retriever(tmp_path: Path) -> None:
    s = Settings(store=str(tmp_path / "s"))
    assert wiring.encoder_spec(s) == "lite"
    enc = HashEncoder()
    with wiring.open_store(s) as store:
        assert wiring.encoder_spec(s, store) == "lite"  # an empty store has no model yet
        store.ensure_vector(vector_spec(enc))
        assert wiring.encoder_spec(s, store) == enc.spec  # the store's model
        assert wiring.encoder_spec(s.with_(model="openclip:x/y"), store) == "openclip:x/y"  # settings win
        models = wiring.resolve_models(s, store, encoder=enc)
        assert models == wiring.LoadedModels(enc, None)  # no reranker configured: no second stage
        r = wiring.build_retriever(models, store, pool=7)
        assert isinstance(r, Retriever) and r.pool == 7 and r.reranker is None
        assert r.capabilities["rerank"] is False
        assert enc.text_calls == 0  # resolving does not encode
        wiring.resolve_models(s, store, encoder=enc, warm=True)  # a server: one query, a pair, batches
        assert enc.text_calls == 1 + 2 + len(WARM_PACKED) + 1 + len(WARM_ROW)


def test_a_warmed_lite_encoder_has_its_text_paths_ready() -> None:
    enc = wiring.resolve_models(Settings(text_precision="bf16"), warm=True).encoder
    assert isinstance(enc, WarmsUp)  # its own warm-up: the long text as many times as bf16 takes
    fwd, bf16 = enc.text_forward, enc.text_bf16  # type: ignore[attr-defined]
    assert fwd.active == "onnx" and fwd.parity is not None  # the one-query session is exported
    assert bf16 is not None and bf16.parity is not None  # the batch copy is made and checked
    packed = enc.text_packed  # type: ignore[attr-defined]
    assert packed is not None and packed.forward.parity is not None  # and the packed one
    # Both are checked on inputs long enough that no user's text or packed row needs another check:
    # a check runs on an input over twice as long as any checked (mmrag.encoders.bf16).
    context = enc.tokenizer.context_length  # type: ignore[attr-defined]
    assert 2 * bf16._checked_len >= context and 2 * packed.forward._checked_len >= PACK_MAX_TOKENS
    assert enc.tokenizer([WARM_LONG]).shape[-1] == 128  # type: ignore[attr-defined]


def test_an_eager_bf16_copy_gets_its_long_check_at_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the copy cannot be traced it runs eagerly and takes only batches of EAGER_MIN_BATCH, which
    is known once the copy is made: the long warm-up text goes in that many copies, else it would run
    in fp32 and leave the copy's long check to a user's first long query."""

    def untraceable(*args: object) -> object:
        raise RuntimeError("no tracing here")

    monkeypatch.setattr(bf16_module, "jit_trace", untraceable)
    enc = wiring.resolve_models(Settings(text_precision="bf16")).encoder
    with running(enc, "bf16"):  # fresh copies, made (eagerly) by the warm-up's first texts
        warm_encoder(enc)
        bf16 = enc.text_bf16  # type: ignore[attr-defined]
        assert bf16 is not None and not bf16.traced and bf16.min_batch == EAGER_MIN_BATCH
        assert 2 * bf16._checked_len >= enc.tokenizer.context_length  # type: ignore[attr-defined]


def test_ui_store_keeps_tenancy(tmp_path: Path) -> None:
    pytest.importorskip("streamlit", reason="the 'ui' extra (streamlit) is not installed")
    from mmrag.ui.service import open_store

    with open_store(Settings(store=str(tmp_path / "s"), tenancy=True)) as store:
        assert store.tenancy  # the app used to drop MMRAG_TENANCY


def test_a_configured_reranker_that_is_the_recorded_one_keeps_its_options(tmp_path: Path) -> None:
    """MMRAG_RERANKER naming the store's own reranker must not drop its recorded int8 / weights."""
    from mmrag.encoders.base import vector_spec
    from mmrag.types import RerankerSpec
    from tests.fakes import HashEncoder

    folder = tmp_path / "ckpt"
    folder.mkdir()
    recorded = RerankerSpec(str(folder.resolve()), int8=True, fusion_weights={"text": 0.3})
    with wiring.open_store(Settings(store=str(tmp_path / "s"))) as store:
        store.ensure_vector(vector_spec(HashEncoder()))
        store.meta.set_reranker(recorded)
        assert wiring.reranker_spec(Settings(reranker=str(folder)), store) == recorded
        other = wiring.reranker_spec(Settings(reranker="cross-encoder/other"), store)
        assert other == RerankerSpec("cross-encoder/other")  # another model: its own defaults
        assert wiring.reranker_spec(Settings(), store, int8=False) == RerankerSpec(
            recorded.model, int8=False, fusion_weights={"text": 0.3}
        )


class _Calibrated:
    """A reranker whose checkpoint says which first stage its fusion weight was learned behind."""

    def __init__(self) -> None:
        self.id = "rr-old"
        self.meta = {"first_stage": "hybrid rrf k=60 (BM25 + dense lite-untrained-v1)"}

    def rerank(self, query: str, hits: list[object]) -> list[object]:
        return hits


def test_a_reranker_calibrated_behind_another_fusion_is_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    enc = HashEncoder()
    with wiring.open_store(Settings(store=str(tmp_path / "s"))) as store:
        store.ensure_vector(vector_spec(enc))
        models = wiring.LoadedModels(enc, _Calibrated())  # type: ignore[arg-type]
        with caplog.at_level("WARNING", logger="mmrag.wiring"):
            wiring.build_retriever(models, store, hybrid=True, fusion="rrf")
            assert not caplog.records  # the fusion it was calibrated behind: nothing to say
            r = wiring.build_retriever(models, store, hybrid=True)
            wiring.build_retriever(models, store, hybrid=True)  # the app builds one per search: said once
        assert r.fusion == "dbsf"
        (rec,) = caplog.records
        assert "calibrated behind hybrid rrf k=60" in rec.getMessage() and "--fusion rrf" in rec.getMessage()
