"""The store's model set (default vector, hybrid, reranker) persists and reads back on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_fakes import FakeEncoder

from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError, StoreError
from mmrag.store import QdrantStore
from mmrag.types import ModelSet, RerankerSpec, VectorSpec


def test_model_set_of_a_new_store_is_the_first_stage(store: QdrantStore, encoder: FakeEncoder) -> None:
    assert store.meta.model_set() == ModelSet()
    name = store.ensure_vector(vector_spec(encoder))
    ms = store.meta.model_set()
    # Every store mmrag creates holds BM25 vectors, so hybrid is on unless switched off.
    assert ms == ModelSet(vector=name, encoder=encoder.spec, hybrid=True, reranker=None)


def test_reranker_and_hybrid_choices_round_trip(store: QdrantStore, encoder: FakeEncoder) -> None:
    store.ensure_vector(vector_spec(encoder))
    spec = RerankerSpec("checkpoints/rr", max_length=160, int8=True, fusion_weights={"text": 0.4})
    store.meta.set_reranker(spec)
    store.meta.set_hybrid(False)
    ms = store.meta.model_set()
    assert ms.reranker == spec and ms.hybrid is False
    assert ms.to_dict()["reranker"] == spec.to_dict()
    store.meta.set_reranker(None)
    assert store.meta.model_set().reranker is None


def test_model_set_outlives_the_process(tmp_path: Path, encoder: FakeEncoder) -> None:
    spec = RerankerSpec("cross-encoder/ms-marco-MiniLM-L-6-v2")
    with QdrantStore.open(str(tmp_path / "s")) as st:
        st.ensure_vector(vector_spec(encoder))
        st.meta.set_reranker(spec)
    with QdrantStore.open(str(tmp_path / "s")) as st:
        assert st.meta.model_set().reranker == spec


def test_default_vector_errors_name_the_store(store: QdrantStore) -> None:
    with pytest.raises(StoreError, match="no vector"):
        store.set_default_vector("nope")


def test_specs_check_their_fields() -> None:
    with pytest.raises(ConfigError, match="model"):
        RerankerSpec("")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        RerankerSpec("m", fusion_weights={"text": 1.5})
    with pytest.raises(ValueError, match="dimension"):
        VectorSpec.of("x", 0, "fake")
    assert VectorSpec.of("Open CLIP/B 32", 4, "fake").name == "open-clip-b-32"


def test_a_damaged_reranker_record_falls_back_to_the_first_stage(
    store: QdrantStore, encoder: FakeEncoder
) -> None:
    store.ensure_vector(vector_spec(encoder))
    store.meta.data["reranker"] = {"model": "ckpt", "fusion_weights": {"text": 7}}  # hand-edited, invalid
    store.meta.save()
    assert store.meta.model_set().reranker is None
