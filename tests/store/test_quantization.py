"""int8 scalar quantization with rescoring: recorded, applied on Edge, switchable, on both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from store_fakes import FakeEncoder, make_chunks, unit_vectors

from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError
from mmrag.store import QdrantStore, SearchOptions


def _fill(store: QdrantStore, n: int, dim: int, seed: int = 0) -> tuple[str, np.ndarray]:
    enc = FakeEncoder(dim=dim)
    name = store.ensure_vector(vector_spec(enc))  # type: ignore[arg-type]
    vecs = unit_vectors(n, dim, seed)
    store.upsert_chunks(make_chunks(n), vecs, name)
    return name, vecs


def _ids(results: list[list[tuple[object, float]]]) -> list[list[str]]:
    return [[c.id for c, _ in res] for res in results]  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_quantization_is_recorded_and_switchable(backend: str, tmp_path: Path) -> None:
    location = str(tmp_path / "s") if backend == "edge" else ":memory:"
    store = QdrantStore.open(location, quantization="int8")
    try:
        assert store.quantization == "int8"
        name, vecs = _fill(store, 60, 16)
        assert store.quantization == "int8"  # survives the collection's creation
        queries = vecs[:5]
        exact = store.search(name, queries, 10, options=SearchOptions(exact=True))
        assert _ids(store.search(name, queries, 10)) == _ids(exact)  # rescored: same top 10 here
        store.set_quantization(None)
        assert store.quantization is None and store.count() == 60
        assert _ids(store.search(name, queries, 10)) == _ids(exact)
        store.set_quantization("int8")
        assert store.quantization == "int8" and store.count() == 60
        assert store.meta.default_vector == name  # the store's own record is kept through switches
    finally:
        store.close()
    if backend == "edge":
        with QdrantStore.open(location) as again:
            assert again.quantization == "int8" and again.count() == 60


def test_edge_searches_the_int8_index_and_rescoring_restores_float_scores(tmp_path: Path) -> None:
    # A low indexing threshold makes optimize() build the HNSW and int8 index for 3,000 points.
    store = QdrantStore.open(str(tmp_path / "q"), quantization="int8", indexing_threshold_kb=16)
    try:
        name, vecs = _fill(store, 3000, 64, seed=1)
        store.optimize()
        queries = unit_vectors(20, 64, seed=2)
        exact = store.search(name, queries, 10, options=SearchOptions(exact=True))
        rescored = store.search(name, queries, 10, options=SearchOptions(rescore=True, oversampling=2.0))
        raw = store.search(name, queries, 10, options=SearchOptions(rescore=False))
        recall = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(_ids(exact), _ids(rescored), strict=True)]
        )
        assert recall >= 0.9
        # Rescored hits carry float32 cosine scores; without rescoring, the int8 approximations.
        for res, q in zip(rescored, queries, strict=True):
            for c, s in res:
                assert abs(s - float(vecs[int(c.metadata["position"])] @ q)) < 1e-4
        gaps = [
            abs(s - float(vecs[int(c.metadata["position"])] @ q))
            for res, q in zip(raw, queries, strict=True)
            for c, s in res
        ]
        assert max(gaps) > 1e-4  # the int8 index really answered
    finally:
        store.close()


def test_bad_quantization_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quantization must be none or int8"):
        QdrantStore.open(str(tmp_path / "x"), quantization="int4")
    with QdrantStore.open(str(tmp_path / "y"), quantization="none") as store:
        assert store.quantization is None


def test_a_failed_switch_leaves_the_record_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with QdrantStore.open(str(tmp_path / "s")) as store:
        _fill(store, 20, 8)

        def disk_full(dims: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store.backend, "_rebuild", disk_full)
        with pytest.raises(OSError, match="No space"):
            store.set_quantization("int8")
        assert store.quantization is None
        store.meta.save()  # a later meta write must not persist the switch that never happened
    with QdrantStore.open(str(tmp_path / "s")) as again:
        assert again.quantization is None and again.count() == 20


def test_a_long_lived_process_keeps_another_process_quantization() -> None:
    from qdrant_client import QdrantClient

    from mmrag.store.client import ClientBackend

    shared = QdrantClient(location=":memory:")
    api = QdrantStore(ClientBackend(":memory:", client=shared))  # e.g. the API server, opened first
    _fill(api, 10, 8)
    cli = QdrantStore(ClientBackend(":memory:", client=shared))  # `mmrag ingest --quantization int8`
    cli.set_quantization("int8")
    api.meta.save()  # the server saves its (older) copy of the meta later
    fresh = QdrantStore(ClientBackend(":memory:", client=shared))
    assert fresh.quantization == "int8" and api.quantization == "int8"
