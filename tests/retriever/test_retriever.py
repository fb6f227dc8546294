"""Retriever over a real Qdrant Edge store with a fake encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError, StoreError
from mmrag.retriever import Retriever
from mmrag.store import QdrantStore
from mmrag.types import Chunk, chunk_id
from tests.fakes import HashEncoder

TEXTS = [
    "dense passage retrieval with dual encoders",
    "cats sleep on warm windows",
    "qdrant is a vector database",
    "bm25 is a sparse lexical ranking function",
    "dogs run in the park",
]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Retriever, HashEncoder, list[Path]]:
    enc = HashEncoder()
    store = QdrantStore.open(str(tmp_path / "store"))
    vector = store.ensure_vector(vector_spec(enc))
    chunks = [
        Chunk(chunk_id("t", t, i), "text", f"doc{i}.txt", t, None, {"i": i}) for i, t in enumerate(TEXTS)
    ]
    images = []
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (16, 16), colour).save(p)
        images.append(p)
        chunks.append(Chunk(chunk_id("i", str(p), 0), "image", str(p), None, str(p), {"i": 100 + i}))
    vecs = enc.encode_text(TEXTS)
    import numpy as np

    all_vecs = np.concatenate([vecs, enc.encode_image(images)])
    store.upsert_chunks(chunks, all_vecs, vector)
    return Retriever(enc, store, pool=5), enc, images


def test_text_search_ranks_and_scores(setup: tuple[Retriever, HashEncoder, list[Path]]) -> None:
    retriever, _, _ = setup
    hits = retriever.search("dense passage retrieval", k=3)
    assert len(hits) == 3
    assert hits[0].chunk.source == "doc0.txt"
    assert [h.final_rank for h in hits] == [1, 2, 3] == [h.ann_rank for h in hits]
    assert hits[0].dense is not None and hits[0].dense >= (hits[1].dense or 0)
    assert hits[0].sparse is None and hits[0].rerank is None and hits[0].vector == retriever.vector
    d = hits[0].to_dict()
    assert set(d["scores"]) == {"dense", "sparse", "fused", "rerank"} and d["id"] == hits[0].chunk.id


def test_modality_filter_and_image_query(setup: tuple[Retriever, HashEncoder, list[Path]]) -> None:
    retriever, _, images = setup
    only_images = retriever.search("anything at all", k=10, modality="image")
    assert {h.chunk.modality for h in only_images} == {"image"} and len(only_images) == 2
    by_image = retriever.search(image=images[1], k=1, modality="image")
    assert by_image[0].chunk.image == str(images[1])
    assert by_image[0].dense == pytest.approx(1.0, abs=1e-4)
    res = retriever.search_with_timings(image=Image.open(images[0]), k=2)
    assert res.hits[0].chunk.image == str(images[0]) and set(res.timings) == {"encode", "ann", "total"}


def test_pool_is_separate_from_k(setup: tuple[Retriever, HashEncoder, list[Path]]) -> None:
    retriever, _, _ = setup
    assert len(retriever.search("qdrant", k=2, pool=7)) == 2
    assert len(retriever.search("qdrant", k=7, pool=1)) == 7  # pool never smaller than k


def test_batch_equals_single(setup: tuple[Retriever, HashEncoder, list[Path]]) -> None:
    retriever, _, _ = setup
    queries = ["cats", "vector database", "dogs in a park"]
    batch = retriever.search_batch(queries, k=2)
    for q, hits in zip(queries, batch, strict=True):
        assert [h.chunk.id for h in hits] == [h.chunk.id for h in retriever.search(q, k=2)]
    assert retriever.search_batch([], k=2) == []


def test_bad_arguments(setup: tuple[Retriever, HashEncoder, list[Path]], tmp_path: Path) -> None:
    retriever, enc, images = setup
    with pytest.raises(ConfigError):
        retriever.search("x", image=images[0])
    with pytest.raises(ConfigError):
        retriever.search()
    with pytest.raises(ConfigError, match="empty"):
        retriever.search("   ")
    with pytest.raises(ConfigError):
        retriever.search("x", k=0)
    with pytest.raises(ConfigError):
        retriever.search("x", modality="video")
    with pytest.raises(ConfigError):
        Retriever(enc, retriever.store, pool=0)
    for query in ({"query": "x"}, {"image": images[0]}):  # text and image paths both check the pool
        with pytest.raises(ConfigError, match="pool must be >= 1"):
            retriever.search(**query, pool=0)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="no vectors for encoder"):
        Retriever(HashEncoder(encoder_id="other"), retriever.store)


def test_unavailable_stage_is_a_clear_error(tmp_path: Path) -> None:
    enc = HashEncoder()
    with QdrantStore.open(str(tmp_path / "s")) as store:
        store.ensure_vector(vector_spec(enc))
        r = Retriever(enc, store)
        for stage in ("hybrid", "rerank"):
            if not r.capabilities[stage]:
                with pytest.raises(ConfigError, match=stage):
                    r.search("x", **{stage: True})
