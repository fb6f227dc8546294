"""Qdrant Edge only: persistence, the single-writer lock, shard migration and HNSW recall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from store_fakes import FakeEncoder, make_chunks, unit_vectors

from mmrag.encoders.base import vector_name, vector_spec
from mmrag.errors import StoreError, StoreLockedError
from mmrag.store import QdrantStore, SearchOptions
from mmrag.store.edge import META_FILE
from mmrag.store.edge_config import DEFAULT_SEARCH_THREADS

N = 40


def _filled(root: Path, encoder: FakeEncoder) -> tuple[QdrantStore, np.ndarray]:
    store = QdrantStore.open(str(root))
    name = store.ensure_vector(vector_spec(encoder))
    vectors = unit_vectors(N, encoder.dim)
    store.upsert_chunks(make_chunks(N), vectors, name)
    return store, vectors


def _shards(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("shard-*") if p.is_dir())


def test_data_persists_across_close_and_reopen(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    root = tmp_path / "store"
    store, vectors = _filled(root, encoder)
    before = store.search(vector_name(encoder.id), vectors[:3], 5)
    store.close()

    with QdrantStore.open(str(root)) as again:
        assert again.count() == N
        assert again.count("image") == N // 2
        assert again.default_vector == vector_name(encoder.id)
        assert again.default_spec == encoder.spec
        assert again.vectors == store.vectors
        assert again.vector_for(vector_spec(encoder)) == vector_name(encoder.id)
        after = again.search(vector_name(encoder.id), vectors[:3], 5)
    assert [[c.id for c, _ in row] for row in after] == [[c.id for c, _ in row] for row in before]
    assert [[c for c, _ in row] for row in after] == [[c for c, _ in row] for row in before]
    np.testing.assert_allclose(
        [[s for _, s in r] for r in after], [[s for _, s in r] for r in before], atol=1e-6
    )


def test_store_json_layout(tmp_path: Path) -> None:
    store, _ = _filled(tmp_path, FakeEncoder())
    store.close()
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["shard"] in _shards(tmp_path)
    assert meta["default_vector"] == "fake-encoder-v1"
    assert meta["vectors"]["fake-encoder-v1"]["dim"] == 8
    assert not (tmp_path / (META_FILE + ".tmp")).exists()


def test_second_open_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    store, _ = _filled(tmp_path, FakeEncoder())
    try:
        with pytest.raises(StoreLockedError, match="open in another process") as err:
            QdrantStore.open(str(tmp_path))
        assert isinstance(err.value, StoreError)
        assert store.count() == N  # the holder is unaffected
    finally:
        store.close()
    with QdrantStore.open(str(tmp_path)) as again:  # released on close
        assert again.count() == N


def test_adding_a_vector_leaves_one_shard(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    store, vectors = _filled(tmp_path, encoder)
    assert len(_shards(tmp_path)) == 1
    first_shard = _shards(tmp_path)[0]
    store.ensure_vector(vector_spec(FakeEncoder(id="second", dim=4)))
    assert len(_shards(tmp_path)) == 1
    assert _shards(tmp_path) != [first_shard]
    assert store.count() == N
    store.ensure_vector(vector_spec(FakeEncoder(id="third", dim=3)))
    assert len(_shards(tmp_path)) == 1
    store.close()
    with QdrantStore.open(str(tmp_path)) as again:
        assert set(again.vectors) == {"fake-encoder-v1", "second", "third"}
        assert again.default_vector == "fake-encoder-v1"
        [[(top, score)]] = again.search("fake-encoder-v1", vectors[9:10], 1)
        assert top.id == make_chunks(N)[9].id and score == pytest.approx(1.0, abs=1e-5)


def test_stale_shard_folders_are_removed_on_open(tmp_path: Path) -> None:
    """A migration that crashed before the switch leaves a folder the next open cleans up."""
    store, _ = _filled(tmp_path, FakeEncoder())
    active = _shards(tmp_path)
    store.close()
    (tmp_path / "shard-99").mkdir()
    (tmp_path / "shard-99" / "junk").write_text("half-copied")
    with QdrantStore.open(str(tmp_path)) as again:
        assert _shards(tmp_path) == active
        assert again.count() == N


def _search_threads(root: Path) -> int | None:
    """The search threads Qdrant Edge persisted for the active shard (its own edge_config.json)."""
    shard = json.loads((root / META_FILE).read_text())["shard"]
    threads: int | None = json.loads((root / shard / "edge_config.json").read_text()).get(
        "max_search_threads"
    )
    return threads


def test_search_threads_are_set_on_every_open(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    store, vectors = _filled(tmp_path, encoder)
    before = [[c.id for c, _ in row] for row in store.search(vector_name(encoder.id), vectors[:4], 5)]
    store.close()
    assert _search_threads(tmp_path) == DEFAULT_SEARCH_THREADS == 1  # created with it
    with QdrantStore.open(str(tmp_path), search_threads=3) as again:
        assert again.count() == N
        after = again.search(vector_name(encoder.id), vectors[:4], 5)
        assert [[c.id for c, _ in row] for row in after] == before
    assert _search_threads(tmp_path) == 3
    with QdrantStore.open(str(tmp_path)) as again:  # the default again: Edge does not keep the 3
        assert again.count() == N
    assert _search_threads(tmp_path) == 1
    with pytest.raises(StoreError, match="search_threads"):
        QdrantStore.open(str(tmp_path), search_threads=0)


def test_a_store_json_without_sparse_names_opens_by_its_dense_vectors(tmp_path: Path) -> None:
    """Older store.json files do not list the sparse vectors: the load names the dense ones instead."""
    store, vectors = _filled(tmp_path, FakeEncoder())
    store.close()
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["sparse"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with QdrantStore.open(str(tmp_path), search_threads=2) as again:
        assert again.count() == N
        [[(top, _)]] = again.search("fake-encoder-v1", vectors[5:6], 1)
        assert top.id == make_chunks(N)[5].id
    assert _search_threads(tmp_path) == 2


def test_a_store_json_that_does_not_match_the_shard_still_opens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, _ = _filled(tmp_path, FakeEncoder())
    store.close()
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["sparse"] = ["not-in-the-shard"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="mmrag.store.edge"), QdrantStore.open(str(tmp_path)) as again:
        assert again.count() == N
    assert "store.json does not match shard" in caplog.text


def test_corrupt_store_json(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_text("{ not json")
    with pytest.raises(StoreError, match="corrupt"):
        QdrantStore.open(str(tmp_path))


def _recall_against_exact(store: QdrantStore, name: str, n: int, dim: int, k: int = 10) -> None:
    vectors = unit_vectors(n, dim, seed=3)
    store.upsert_chunks(make_chunks(n), vectors, name)
    store.optimize()
    assert store.count() == n
    queries = unit_vectors(5, dim, seed=4)
    exact = store.search(name, queries, k, options=SearchOptions(exact=True))
    truth = np.argsort(-(vectors @ queries.T), axis=0)[:k].T
    ids = [c.id for c in make_chunks(n)]
    for q in range(len(queries)):
        assert [c.id for c, _ in exact[q]] == [ids[i] for i in truth[q]]  # exact search is exact
    for options in (SearchOptions(), SearchOptions(hnsw_ef=128)):
        approx = store.search(name, queries, k, options=options)
        for q in range(len(queries)):
            found = {c.id for c, _ in approx[q]} & {c.id for c, _ in exact[q]}
            assert len(found) / k >= 0.9, options


def test_hnsw_after_optimize_agrees_with_exact_search(tmp_path: Path) -> None:
    with QdrantStore.open(str(tmp_path)) as store:
        name = store.ensure_vector(vector_spec(FakeEncoder(id="hnsw-test", dim=32)))
        _recall_against_exact(store, name, n=2000, dim=32)


def test_recall_with_a_built_hnsw_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same check with the graph really built and used.

    With Qdrant's default thresholds (indexing 10 MB) 2,000 x 32-d points are scanned, never
    indexed, so the test above passes on brute force alone; here the thresholds are lowered.
    """
    import qdrant_edge as qe

    from mmrag.store.edge import EdgeBackend

    def config(self: EdgeBackend, dims: dict[str, int]) -> object:
        return qe.EdgeConfig(
            vectors={n: qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine) for n, d in dims.items()},
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=64, full_scan_threshold=1),
        )

    monkeypatch.setattr(EdgeBackend, "_config", config)
    with QdrantStore.open(str(tmp_path)) as store:
        name = store.ensure_vector(vector_spec(FakeEncoder(id="hnsw-test", dim=32)))
        _recall_against_exact(store, name, n=2000, dim=32)
        assert store.backend._shard.info().indexed_vectors_count == 2000  # type: ignore[attr-defined]
