"""QdrantStore behaviour that must be identical on Qdrant Edge and on qdrant-client (``:memory:``)."""

from __future__ import annotations

import numpy as np
import pytest
from store_fakes import SOURCES, FakeEncoder, make_chunks, unit_vectors

from mmrag.encoders.base import vector_name, vector_spec
from mmrag.errors import ConfigError, DimensionMismatchError, StoreError
from mmrag.store import QdrantStore, SearchOptions
from mmrag.types import Chunk

N = 30


@pytest.fixture
def filled(store: QdrantStore, encoder: FakeEncoder) -> tuple[QdrantStore, list[Chunk], np.ndarray]:
    """A store holding N chunks (half text, half image) under the fake encoder's vector."""
    name = store.ensure_vector(vector_spec(encoder))
    chunks = make_chunks(N)
    vectors = unit_vectors(N, encoder.dim)
    assert store.upsert_chunks(chunks, vectors, name) == N
    return store, chunks, vectors


# -- vectors and encoders ---------------------------------------------------------------------
def test_open_rejects_empty_location() -> None:
    with pytest.raises(ConfigError, match="empty"):
        QdrantStore.open("")


def test_fresh_store_is_empty(store: QdrantStore) -> None:
    assert store.vectors == {}
    assert store.default_vector is None
    assert store.default_spec is None
    assert store.count() == 0
    assert list(store.iter_records()) == []
    assert store.get(["00000000-0000-0000-0000-000000000000"]) == []


def test_ensure_encoder_creates_the_default_vector(store: QdrantStore, encoder: FakeEncoder) -> None:
    name = store.ensure_vector(vector_spec(encoder))
    assert name == vector_name(encoder.id)
    assert store.default_vector == name
    assert store.default_spec == encoder.spec
    assert store.vectors == {name: {"dim": 8, "spec": "fake:v1", "encoder_id": encoder.id, "aligned": False}}
    assert store.vector_for(vector_spec(encoder)) == name


def test_ensure_encoder_again_is_a_no_op(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, _, vectors = filled
    before = (store.vectors, store.default_vector, store.location)
    assert store.ensure_vector(vector_spec(encoder)) == vector_name(encoder.id)
    assert (store.vectors, store.default_vector, store.location) == before
    assert store.count() == N
    [[(_, score)]] = store.search(vector_name(encoder.id), vectors[:1], 1)
    assert score == pytest.approx(1.0, abs=1e-5)


def test_second_encoder_adds_a_vector_beside_the_first(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, vectors = filled
    first = vector_name(encoder.id)
    other = FakeEncoder(id="other-encoder", dim=5, spec="fake:other", aligned=True)
    second = store.ensure_vector(vector_spec(other))
    assert second == "other-encoder" != first
    assert set(store.vectors) == {first, second}
    assert store.vectors[second]["dim"] == 5 and store.vectors[second]["aligned"] is True
    assert store.default_vector == first  # unchanged: adding a model never switches search to it
    assert store.count() == N
    # The old vector still answers, with the old scores.
    hits = store.search(first, vectors[3:4], 1)
    assert hits[0][0][0].id == chunks[3].id
    assert hits[0][0][1] == pytest.approx(1.0, abs=1e-5)
    # Old points carry no vector for the new encoder until it is written.
    assert store.search(second, unit_vectors(1, 5), 3) == [[]]
    new_vectors = unit_vectors(N, 5, seed=1)
    store.upsert_chunks(chunks, new_vectors, second)
    assert store.count() == N
    assert store.search(second, new_vectors[7:8], 1)[0][0][0].id == chunks[7].id


def test_same_id_different_dim_is_a_mismatch(store: QdrantStore, encoder: FakeEncoder) -> None:
    store.ensure_vector(vector_spec(encoder))
    bigger = FakeEncoder(id=encoder.id, dim=encoder.dim * 2)
    with pytest.raises(DimensionMismatchError, match="dimension 8"):
        store.ensure_vector(vector_spec(bigger))
    with pytest.raises(DimensionMismatchError):
        store.vector_for(vector_spec(bigger))
    assert store.vectors[vector_name(encoder.id)]["dim"] == encoder.dim


def test_vector_for_unknown_encoder_lists_what_is_held(store: QdrantStore, encoder: FakeEncoder) -> None:
    with pytest.raises(StoreError, match="holds nothing"):
        store.vector_for(vector_spec(encoder))
    store.ensure_vector(vector_spec(encoder))
    with pytest.raises(StoreError, match=r"holds fake-encoder-v1 \(model fake:v1\)"):
        store.vector_for(vector_spec(FakeEncoder(id="never-ingested")))


def test_set_default_vector(store: QdrantStore, encoder: FakeEncoder) -> None:
    store.ensure_vector(vector_spec(encoder))
    other = store.ensure_vector(vector_spec(FakeEncoder(id="second", dim=4, spec="fake:second")))
    store.set_default_vector(other)
    assert store.default_vector == other
    assert store.default_spec == "fake:second"
    with pytest.raises(StoreError, match="no vector 'missing'"):
        store.set_default_vector("missing")


# -- writes -----------------------------------------------------------------------------------
def test_upsert_is_idempotent(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, vectors = filled
    assert store.upsert_chunks(chunks, vectors, vector_name(encoder.id)) == N
    assert store.count() == N
    assert len(list(store.iter_records())) == N


def test_upsert_overwrites_the_vector(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, _ = filled
    name = vector_name(encoder.id)
    replacement = unit_vectors(1, encoder.dim, seed=42)
    store.upsert_chunks(chunks[:1], replacement, name)
    [[(chunk, score)]] = store.search(name, replacement, 1)
    assert chunk.id == chunks[0].id and score == pytest.approx(1.0, abs=1e-5)
    assert store.count() == N


def test_upsert_checks_its_arguments(store: QdrantStore, encoder: FakeEncoder) -> None:
    chunks = make_chunks(3)
    with pytest.raises(StoreError, match="ensure_vector"):
        store.upsert_chunks(chunks, unit_vectors(3, 8), "no-such-vector")
    name = store.ensure_vector(vector_spec(encoder))
    with pytest.raises(ValueError, match="3 chunks but 2 vectors"):
        store.upsert_chunks(chunks, unit_vectors(2, 8), name)
    with pytest.raises(DimensionMismatchError):
        store.upsert_chunks(chunks, unit_vectors(3, 4), name)
    assert store.upsert_chunks([], np.zeros((0, 8), dtype=np.float32), name) == 0
    assert store.count() == 0


def test_get_round_trips_chunks(filled: tuple[QdrantStore, list[Chunk], np.ndarray]) -> None:
    store, chunks, _ = filled
    wanted = [chunks[0], chunks[1], chunks[5]]
    got = {c.id: c for c in store.get([c.id for c in wanted])}
    assert set(got) == {c.id for c in wanted}
    for c in wanted:
        assert got[c.id] == c  # every field, metadata included
    assert store.get([]) == []


def test_existing_ids(filled: tuple[QdrantStore, list[Chunk], np.ndarray]) -> None:
    store, chunks, _ = filled
    unknown = [c.id for c in make_chunks(3, start=1000)]
    assert store.existing_ids([chunks[0].id, chunks[9].id, *unknown]) == {chunks[0].id, chunks[9].id}
    assert store.existing_ids(unknown) == set()
    assert store.existing_ids([]) == set()


def test_delete(filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder) -> None:
    store, chunks, vectors = filled
    store.delete([chunks[0].id, chunks[1].id])
    assert store.count() == N - 2
    assert store.existing_ids([chunks[0].id, chunks[1].id, chunks[2].id]) == {chunks[2].id}
    top = store.search(vector_name(encoder.id), vectors[:1], 1)[0][0][0]
    assert top.id != chunks[0].id
    store.delete([])
    store.delete([c.id for c in make_chunks(2, start=500)])  # unknown ids are ignored
    assert store.count() == N - 2


# -- reads ------------------------------------------------------------------------------------
def test_search_finds_the_exact_vector(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, vectors = filled
    name = vector_name(encoder.id)
    results = store.search(name, vectors[[2, 11, 29]], 5)
    assert len(results) == 3
    for row, i in zip(results, (2, 11, 29), strict=True):
        assert len(row) == 5
        top, score = row[0]
        assert top == chunks[i]
        assert score == pytest.approx(1.0, abs=1e-5)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
    # A single 1-d query is one row.
    single = store.search(name, vectors[4], 3)
    assert len(single) == 1 and single[0][0][0].id == chunks[4].id


def test_search_scores_are_cosines(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, vectors = filled
    query = unit_vectors(1, encoder.dim, seed=7)
    expected = vectors @ query[0]
    [row] = store.search(vector_name(encoder.id), query * 3.0, N)  # cosine ignores the query's norm
    by_id = {c.id: i for i, c in enumerate(chunks)}
    assert [by_id[c.id] for c, _ in row][:5] == list(np.argsort(-expected)[:5])
    for chunk, score in row:
        assert score == pytest.approx(float(expected[by_id[chunk.id]]), abs=1e-4)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_search_modality_filter(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder, modality: str
) -> None:
    store, _, vectors = filled
    [row] = store.search(vector_name(encoder.id), vectors[:1], N, modality=modality)
    assert len(row) == N // 2
    assert {c.modality for c, _ in row} == {modality}


def test_search_payload_filters(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, vectors = filled
    name = vector_name(encoder.id)
    [row] = store.search(name, vectors[:1], N, filters={"source": SOURCES[1]})
    assert {c.source for c, _ in row} == {SOURCES[1]}
    assert len(row) == sum(c.source == SOURCES[1] for c in chunks)
    # A list of values matches any of them; keys combine with AND, modality included.
    [row] = store.search(name, vectors[:1], N, modality="image", filters={"source": [SOURCES[0], SOURCES[2]]})
    expected = {c.id for c in chunks if c.modality == "image" and c.source in (SOURCES[0], SOURCES[2])}
    assert {c.id for c, _ in row} == expected
    assert store.search(name, vectors[:1], 5, filters={"source": "nowhere"}) == [[]]


def test_search_limit(filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder) -> None:
    store, _, vectors = filled
    name = vector_name(encoder.id)
    assert [len(r) for r in store.search(name, vectors[:2], 1)] == [1, 1]
    assert [len(r) for r in store.search(name, vectors[:2], 7)] == [7, 7]
    assert len(store.search(name, vectors[:1], N + 100)[0]) == N
    with pytest.raises(ConfigError, match="limit"):
        store.search(name, vectors[:1], 0)
    with pytest.raises(ConfigError, match="limit"):
        store.search(name, vectors[:1], -3)


def test_search_rejects_bad_modality_and_vector(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, _, vectors = filled
    with pytest.raises(ConfigError, match="modality"):
        store.search(vector_name(encoder.id), vectors[:1], 3, modality="video")
    with pytest.raises(StoreError, match=r"no vector 'missing'.*fake-encoder-v1"):
        store.search("missing", vectors[:1], 3)


@pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning")
def test_search_options(filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder) -> None:
    store, chunks, vectors = filled
    name = vector_name(encoder.id)
    for options in (
        SearchOptions(exact=True),
        SearchOptions(hnsw_ef=16),
        SearchOptions(hnsw_ef=128, exact=False),
    ):
        [row] = store.search(name, vectors[5:6], 3, options=options)
        assert row[0][0].id == chunks[5].id


def test_search_with_no_queries(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, _, _ = filled
    assert store.search(vector_name(encoder.id), np.zeros((0, encoder.dim), dtype=np.float32), 3) == []


def test_search_with_a_query_of_the_wrong_dimension(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, _, _ = filled
    with pytest.raises(DimensionMismatchError):
        store.search(vector_name(encoder.id), unit_vectors(1, encoder.dim + 3), 3)


def test_search_on_an_empty_store_says_to_ingest(store: QdrantStore) -> None:
    with pytest.raises(StoreError, match="ingest"):
        store.search(vector_name(FakeEncoder().id), unit_vectors(1, 8), 3)


def test_count_by_modality(filled: tuple[QdrantStore, list[Chunk], np.ndarray]) -> None:
    store, _, _ = filled
    assert store.count() == N
    assert store.count("text") == N // 2
    assert store.count("image") == N // 2
    assert store.count(None) == N


def test_stats(filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder) -> None:
    store, _, _ = filled
    stats = store.stats()
    assert stats["location"] == store.location
    assert stats["points"] == N
    assert stats["by_modality"] == {"text": N // 2, "image": N // 2}
    assert stats["sources"] == len(SOURCES)
    assert stats["default_vector"] == vector_name(encoder.id)
    assert set(stats["vectors"]) == {vector_name(encoder.id)}


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_iter_records_yields_every_point(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], batch: int
) -> None:
    store, chunks, _ = filled
    records = list(store.iter_records(batch=batch))
    assert sorted(r.id for r in records) == sorted(c.id for c in chunks)
    assert all(r.payload["modality"] in ("text", "image") for r in records)
    assert all(r.vectors == {} for r in records)


def test_iter_records_with_filters_and_vectors(
    filled: tuple[QdrantStore, list[Chunk], np.ndarray], encoder: FakeEncoder
) -> None:
    store, chunks, vectors = filled
    name = vector_name(encoder.id)
    records = list(store.iter_records(filters={"modality": "image"}, batch=4, with_vectors=True))
    assert sorted(r.id for r in records) == sorted(c.id for c in chunks if c.modality == "image")
    index = {c.id: i for i, c in enumerate(chunks)}
    for r in records:
        # Stored cosine vectors are normalised; ours already are, so they come back as written.
        np.testing.assert_allclose(r.vectors[name], vectors[index[r.id]], atol=1e-5)


def test_second_encoder_writes_beside_the_first_without_dropping_it(store: QdrantStore) -> None:
    """Re-embedding stored chunks with a new encoder adds its vector; the old vector stays searchable."""
    from mmrag.types import chunk_id

    first, second = FakeEncoder(), FakeEncoder(id="fake-b", dim=6)
    chunks = [Chunk(chunk_id("s", f"t{i}", i), "text", "s.txt", f"t{i}", None, {}) for i in range(5)]
    a, b = unit_vectors(5, first.dim, seed=1), unit_vectors(5, second.dim, seed=2)
    name_a = store.ensure_vector(vector_spec(first))
    store.upsert_chunks(chunks, a, name_a)
    name_b = store.ensure_vector(vector_spec(second))
    assert store.existing_ids([c.id for c in chunks], name_b) == set()
    assert store.existing_ids([c.id for c in chunks], name_a) == {c.id for c in chunks}
    store.upsert_chunks(chunks, b, name_b)
    assert store.count() == 5
    for name, vecs in ((name_a, a), (name_b, b)):
        [row] = store.search(name, vecs[3:4], 1)
        assert row[0][0].id == chunks[3].id and row[0][1] == pytest.approx(1.0, abs=1e-5)
