"""BM25 sparse vectors in both backends: written at upsert, searched, kept through migrations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fakes import HashEncoder

from mmrag.encoders.base import vector_spec
from mmrag.store import Bm25Encoder, Bm25Settings, QdrantStore, SparseVec
from mmrag.store.base import SPARSE_VECTOR
from mmrag.types import Chunk, chunk_id

TEXTS = [
    "cats sleep on warm windows",
    "a dog chases the cat around the garden",
    "quantum computers use qubits",
    "the stock market fell on Tuesday",
]


def bm25(store: QdrantStore, *texts: str) -> list[SparseVec]:
    """Query vectors the way the retriever makes them: the store's own BM25 settings."""
    return [store.sparse_encoder.embed_query(t) for t in texts]


def _chunks() -> list[Chunk]:
    chunks = [Chunk(chunk_id("t", t, i), "text", f"doc{i}.txt", t, None) for i, t in enumerate(TEXTS)]
    chunks.append(Chunk(chunk_id("i", "a", 0), "image", "cat.jpg", "a photo of two cats", "cat.jpg"))
    chunks.append(Chunk(chunk_id("i", "b", 0), "image", "blank.jpg", None, "blank.jpg"))
    return chunks


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantStore]:
    with QdrantStore.open(str(tmp_path / "s") if request.param == "edge" else ":memory:") as st:
        enc = HashEncoder()
        name = st.ensure_vector(vector_spec(enc))
        chunks = _chunks()
        st.upsert_chunks(chunks, enc.encode_text([c.text or "blank" for c in chunks]), name)
        yield st


def test_sparse_round_trip(store: QdrantStore) -> None:
    assert store.has_sparse and store.meta.bm25 == Bm25Settings()
    ids = [c.id for c in _chunks()]
    records = {r.id: r for r in store.backend.retrieve(ids, with_vectors=True)}
    expected = Bm25Encoder().embed_documents(TEXTS)
    for cid, vec in zip(ids, expected, strict=False):
        assert records[cid].sparse[SPARSE_VECTOR].indices == vec.indices
        assert records[cid].sparse[SPARSE_VECTOR].values == pytest.approx(vec.values)
    assert SPARSE_VECTOR not in records[ids[-1]].sparse  # an image with no text has no BM25 vector


def test_sparse_search(store: QdrantStore) -> None:
    cat, stop, qubit = store.search_sparse(bm25(store, "cat", "the", "qubit"), 10)
    # "cats" and "cat" share a stem; the captioned image is found through its caption
    assert {c.source for c, _ in cat} == {"doc0.txt", "doc1.txt", "cat.jpg"}
    assert all(s > 0 for _, s in cat) and [s for _, s in cat] == sorted((s for _, s in cat), reverse=True)
    assert stop == []  # stop words only: no tokens, no matches
    assert [c.source for c, _ in qubit] == ["doc2.txt"]
    images = store.search_sparse(bm25(store, "cat"), 10, modality="image")[0]
    assert [c.source for c, _ in images] == ["cat.jpg"]


def test_both_backends_score_alike(tmp_path: Path) -> None:
    scores = []
    for loc in (str(tmp_path / "e"), ":memory:"):
        with QdrantStore.open(loc) as st:
            enc = HashEncoder()
            name = st.ensure_vector(vector_spec(enc))
            st.upsert_chunks(_chunks(), enc.encode_text([c.text or "x" for c in _chunks()]), name)
            scores.append([(c.id, round(s, 4)) for c, s in st.search_sparse(bm25(st, "cat garden"), 10)[0]])
    assert scores[0] == scores[1] and len(scores[0]) == 3


def test_sparse_vectors_survive_adding_an_encoder(store: QdrantStore) -> None:
    other = HashEncoder(dim=32, encoder_id="other")
    store.ensure_vector(vector_spec(other))  # copies every point into a new shard / collection
    assert [c.source for c, _ in store.search_sparse(bm25(store, "qubit"), 5)[0]] == ["doc2.txt"]


def test_old_store_without_sparse_gets_backfilled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store created before hybrid search (no sparse vector) gains BM25 when it next migrates."""
    import qdrant_edge as qe

    from mmrag.store.edge import EdgeBackend

    real = EdgeBackend._config

    def old_config(self: EdgeBackend, dims: dict[str, int]) -> object:
        return qe.EdgeConfig(
            vectors={n: qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine) for n, d in dims.items()}
        )

    enc = HashEncoder()
    with monkeypatch.context() as m:
        m.setattr(EdgeBackend, "_config", old_config)
        with QdrantStore.open(str(tmp_path)) as st:
            name = st.ensure_vector(vector_spec(enc))
            st.upsert_chunks(_chunks(), enc.encode_text([c.text or "x" for c in _chunks()]), name)
            assert not st.has_sparse
    assert EdgeBackend._config is real
    with QdrantStore.open(str(tmp_path)) as st:
        st.ensure_vector(vector_spec(HashEncoder(dim=32, encoder_id="other")))
        assert st.has_sparse
        assert [c.source for c, _ in st.search_sparse(bm25(st, "qubit"), 5)[0]] == ["doc2.txt"]
