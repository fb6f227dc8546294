"""SearchRequest / RetrievalMode and running a request (text, image, text + image) on a real Edge store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.encoders.base import l2_normalize, vector_spec
from mmrag.errors import ConfigError
from mmrag.retriever import Retriever
from mmrag.retriever.request import RetrievalMode, SearchRequest
from mmrag.store import QdrantStore
from mmrag.types import Chunk, chunk_id
from tests.fakes import HashEncoder

TEXTS = ["red harbour lights", "blue tides and ships", "a note about storms"]


@pytest.fixture
def retriever(tmp_path: Path) -> Iterator[Retriever]:
    enc = HashEncoder()
    store = QdrantStore.open(str(tmp_path / "store"))
    vector = store.ensure_vector(vector_spec(enc))
    chunks = [
        Chunk(chunk_id("t", t, i), "text", f"doc{i}.txt", t, None, {"tenant": "acme" if i else "globex"})
        for i, t in enumerate(TEXTS)
    ]
    img = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(img)
    chunks.append(Chunk(chunk_id("i", str(img), 0), "image", str(img), None, str(img), {"tenant": "acme"}))
    vecs = np.concatenate([enc.encode_text(TEXTS), enc.encode_image([img])])
    store.upsert_chunks(chunks, vecs, vector)
    yield Retriever(enc, store, pool=4)
    store.close()


def test_request_checks_its_fields_and_merges_the_tenant() -> None:
    req = SearchRequest(text="q", filters={"source": "a.pdf"}, tenant="acme", mode="hybrid")  # type: ignore[arg-type]
    assert req.mode is RetrievalMode.HYBRID and req.hybrid is True
    assert req.search_filters() == {"source": "a.pdf", "tenant": "acme"}
    assert SearchRequest(text="q").search_filters() is None and SearchRequest(text="q").hybrid is None
    assert SearchRequest(text="q", mode=RetrievalMode.DENSE).hybrid is False
    assert SearchRequest(text="q", image="x.png").composed
    for bad in ({"k": 0}, {"pool": 0}, {"modality": "video"}, {"mode": "bm42"}):
        with pytest.raises(ConfigError):
            SearchRequest(text="q", **bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="another tenant"):
        SearchRequest(text="q", filters={"tenant": "globex"}, tenant="acme").search_filters()


def test_run_equals_search_with_timings(retriever: Retriever, tmp_path: Path) -> None:
    req = SearchRequest(text="blue tides", k=2, tenant="acme")
    got = retriever.run(req)
    want = retriever.search_with_timings("blue tides", k=2, filters={"tenant": "acme"})
    assert [h.chunk.id for h in got.hits] == [h.chunk.id for h in want.hits]
    assert got.hits[0].chunk.text == "blue tides and ships"
    assert set(got.timings) == set(want.timings)
    image = retriever.run(SearchRequest(image=tmp_path / "red.png", k=1))
    assert image.hits[0].chunk.modality == "image"


def test_composed_query_is_the_normalised_sum_dense_only(retriever: Retriever, tmp_path: Path) -> None:
    img = tmp_path / "red.png"
    res = retriever.run(SearchRequest(text="red harbour", image=img, k=4))
    enc = retriever.encoder
    qvec = l2_normalize(enc.encode_text(["red harbour"]) + enc.encode_image([img]))
    want = retriever.search_vectors(qvec, k=4, modality=None, filters=None, pool=None)[0]
    assert [h.chunk.id for h in res.hits] == [h.chunk.id for h in want]
    assert set(res.timings) == {"encode", "ann", "total"}
    for stage in ({"mode": RetrievalMode.HYBRID}, {"rerank": True}):
        with pytest.raises(ConfigError, match="text query alone"):
            retriever.run(SearchRequest(text="red", image=img, **stage))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="empty"):
        retriever.run(SearchRequest(text="  ", image=img))
