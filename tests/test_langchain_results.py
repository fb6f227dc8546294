"""MmragRetriever with grouping, context, MMR and composed queries, on Qdrant Edge and qdrant-client
``:memory:``: what a LangChain app gets in ``Document.metadata``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
qdrant_client = pytest.importorskip("qdrant_client", reason="the server extra is not installed")

from langchain_core.runnables import RunnableLambda  # noqa: E402

from mmrag.encoders.base import vector_spec  # noqa: E402
from mmrag.langchain import MmragRetriever  # noqa: E402
from mmrag.retriever import Retriever  # noqa: E402
from mmrag.store import QdrantStore  # noqa: E402
from mmrag.store.client import ClientBackend  # noqa: E402
from mmrag.types import Chunk, Citation, chunk_id  # noqa: E402
from tests.fakes import HashEncoder  # noqa: E402

PAPER = [  # distinct scores for "solar panel" (no ties whose order a backend may choose)
    "solar panel sunlight conversion",
    "solar panel efficiency and tilt angle",
    "solar panel storage with batteries",
    "battery chemistry",
]
OTHER = {"b.txt": "solar policy in europe", "c.txt": "history of solar cells"}


def _cite(i: int) -> Citation:
    """The citation of a.pdf's chunk ``i``: two chunks a page, one line box each."""
    box = (72.0, 700.0 - 50 * (i % 2), 540.0, 712.0 - 50 * (i % 2))
    return Citation(page=1 + i // 2, bbox=box, boxes=(box,), page_size=(612.0, 792.0))


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[QdrantStore, Path]]:
    enc = HashEncoder()
    if request.param == "edge":
        s = QdrantStore.open(str(tmp_path / "edge"))
    else:  # the server code path, with an async client so ainvoke could await it
        sync = qdrant_client.QdrantClient(location=":memory:")
        s = QdrantStore(ClientBackend(":memory:", client=sync))
        aclient = qdrant_client.AsyncQdrantClient(location=":memory:")
        aclient._client.collections = sync._client.collections  # one "server" seen by both clients
        aclient._client.aliases = sync._client.aliases
        s.backend.async_client = aclient  # type: ignore[attr-defined]
        assert s.supports_async
    name = s.ensure_vector(vector_spec(enc))
    chunks = [
        Chunk(
            chunk_id("a.pdf", t, i), "text", "a.pdf", t, None, {"position": i, "page": 1 + i // 2}, _cite(i)
        )
        for i, t in enumerate(PAPER)
    ]
    chunks += [Chunk(chunk_id(src, t, 0), "text", src, t, None, {"position": 0}) for src, t in OTHER.items()]
    img = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(img)
    chunks.append(Chunk(chunk_id("img", str(img), 0), "image", str(img), "a red square", str(img), {}))
    texts = enc.encode_text([c.text or "" for c in chunks[:-1]])
    import numpy as np

    s.upsert_chunks(chunks, np.concatenate([texts, enc.encode_image([img])]), name)
    yield s, img
    s.close()


def _lc(store: QdrantStore, **kw: object) -> MmragRetriever:
    return MmragRetriever(retriever=Retriever(HashEncoder(), store, pool=10), **kw)  # type: ignore[arg-type]


def test_documents_grouped_with_context(store: tuple[QdrantStore, Path]) -> None:
    s, _ = store
    plain = _lc(s, k=3).invoke("solar panel")
    assert [d.metadata["source"] for d in plain] == ["a.pdf"] * 3 and "context" not in plain[0].metadata
    docs = _lc(s, k=3, group_by="source", expand=1).invoke("solar panel")
    assert len({d.metadata["source"] for d in docs}) == 3
    top = docs[0]
    assert top.metadata["source"] == "a.pdf"
    ctx = top.metadata["context"]
    pos = top.metadata["position"]
    texts = [c["text"] for c in ctx]
    assert texts == [PAPER[p] for p in (pos - 1, pos + 1) if 0 <= p < len(PAPER)]
    assert {c["source"] for c in ctx} == {"a.pdf"} and all("page" in c for c in ctx)
    # each context entry carries its own citation, to cite it as the hit is cited
    assert [c["citation"] for c in ctx] == [_cite(c["position"]).to_dict() for c in ctx]
    assert top.metadata["bbox"] == list(_cite(pos).bbox or ())


def test_mmr_and_batch(store: tuple[QdrantStore, Path]) -> None:
    s, _ = store
    relevance = _lc(s, k=3, mmr_lambda=1.0).invoke("solar panel")
    assert [d.id for d in relevance] == [d.id for d in _lc(s, k=3).invoke("solar panel")]
    lc = _lc(s, k=2, group_by="source", expand=1)
    batched = lc.batch(["solar panel", "battery chemistry"])  # reshaped results: one run per input
    assert [[d.id for d in ds] for ds in batched] == [
        [d.id for d in lc.invoke(q)] for q in ("solar panel", "battery chemistry")
    ]


def test_composed_query_per_call_bound_and_async(store: tuple[QdrantStore, Path]) -> None:
    s, img = store
    lc = _lc(s, k=1)
    assert lc.invoke("solar panel", image=img, image_weight=0.0)[0].metadata["source"] == "a.pdf"
    assert lc.invoke("solar panel", image=img, image_weight=1.0)[0].metadata["image"] == str(img)
    # in a chain: bind the image (LangChain hands bound keyword arguments to every call)
    chain = lc.bind(image=str(img), image_weight=1.0) | RunnableLambda(lambda d: d[0].metadata["image"])
    assert chain.invoke("solar panel") == str(img)
    docs = asyncio.run(lc.ainvoke("solar panel", image=img, image_weight=1.0))
    assert docs[0].metadata["image"] == str(img)  # a composed query never takes the text-only async path
    grouped = asyncio.run(_lc(s, k=3, group_by="source").ainvoke("solar panel"))
    assert len({d.metadata["source"] for d in grouped}) == 3
