"""MmragRetriever: LangChain invoke / ainvoke / batch over real Qdrant Edge and qdrant-client stores."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
qdrant_client = pytest.importorskip("qdrant_client", reason="the server extra is not installed")

from langchain_core.documents import Document  # noqa: E402

from mmrag.encoders.base import vector_spec  # noqa: E402
from mmrag.errors import ConfigError, TenancyError  # noqa: E402
from mmrag.langchain import MmragRetriever  # noqa: E402
from mmrag.retriever import Retriever  # noqa: E402
from mmrag.store import QdrantStore  # noqa: E402
from mmrag.store.client import ClientBackend  # noqa: E402
from mmrag.tenancy import with_tenant  # noqa: E402
from mmrag.types import Chunk, chunk_id  # noqa: E402
from tests.fakes import HashEncoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "dense passage retrieval with dual encoders",
    "cats sleep on warm windows",
    "qdrant is a vector database",
    "bm25 is a sparse lexical ranking function",
]


class CountingEncoder(HashEncoder):
    """HashEncoder that counts encoder passes (not texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes = 0

    def encode_text(self, texts: Any, *, batch_size: int | None = None) -> Any:
        self.passes += 1
        return super().encode_text(texts, batch_size=batch_size)


def fill(store: QdrantStore, enc: HashEncoder, tmp_path: Path, tenant: str | None = None) -> Path:
    vector = store.ensure_vector(vector_spec(enc))
    chunks = [
        Chunk(chunk_id("t", t, i), "text", f"doc{i}.txt", t, None, {"page": i + 1})
        for i, t in enumerate(TEXTS)
    ]
    img = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(img)
    chunks.append(Chunk(chunk_id("i", str(img), 0), "image", str(img), "a red square", str(img), {}))
    vecs = np.concatenate([enc.encode_text(TEXTS), enc.encode_image([img])])
    if tenant is not None:
        chunks = with_tenant(chunks, tenant)
    store.upsert_chunks(chunks, vecs, vector)
    return img


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[MmragRetriever, CountingEncoder, Path]]:
    enc = CountingEncoder()
    store = QdrantStore.open(str(tmp_path / "store"))
    img = fill(store, enc, tmp_path)
    yield MmragRetriever(retriever=Retriever(enc, store, pool=5), k=2), enc, img
    store.close()


def test_invoke_documents_carry_text_and_every_score(
    edge: tuple[MmragRetriever, CountingEncoder, Path],
) -> None:
    lc, _, img = edge
    docs = lc.invoke("dense passage retrieval")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.page_content == TEXTS[0]
    m = top.metadata
    assert m["source"] == "doc0.txt" and m["modality"] == "text" and m["page"] == 1 and m["image"] is None
    assert {"id", "dense", "sparse", "fused", "rerank", "ann_rank", "final_rank"} <= set(m)
    assert m["final_rank"] == 1 and m["ann_rank"] == 1 and m["dense"] > docs[1].metadata["dense"]
    assert top.id == m["id"]
    # image query and an image's caption as page_content
    docs = lc.invoke("", image=img, k=1)
    assert docs[0].metadata["image"] == str(img) and docs[0].page_content == "a red square"
    # filters (mmrag's key -> value(s) form), per call and per instance
    docs = lc.invoke("dense passage retrieval", filters={"source": ["doc2.txt", "doc3.txt"]})
    assert {d.metadata["source"] for d in docs} <= {"doc2.txt", "doc3.txt"}
    # text and image together: a composed query (here all weight on the image)
    assert lc.invoke("cats", image=img, image_weight=1.0, k=1)[0].metadata["image"] == str(img)
    with pytest.raises(ConfigError, match="rerank"):
        MmragRetriever(retriever=lc.retriever, rerank=True).invoke("cats")


def test_batch_is_one_encoder_pass(edge: tuple[MmragRetriever, CountingEncoder, Path]) -> None:
    lc, enc, _ = edge
    singles = [lc.invoke(q) for q in TEXTS]
    enc.passes = 0
    batched = lc.batch(TEXTS)
    assert enc.passes == 1
    assert [[d.metadata["id"] for d in ds] for ds in batched] == [
        [d.metadata["id"] for d in ds] for ds in singles
    ]
    assert lc.batch([]) == []


def test_ainvoke_on_edge_uses_the_micro_batcher(edge: tuple[MmragRetriever, CountingEncoder, Path]) -> None:
    lc, enc, _ = edge
    assert not lc.retriever.store.supports_async

    async def main() -> list[list[Document]]:
        return await asyncio.gather(*(lc.ainvoke(q) for q in TEXTS))

    results = asyncio.run(main())
    assert [r[0].page_content for r in results] == TEXTS
    batcher = lc._batcher  # concurrent ainvoke calls share its bounded threads and encoder passes
    assert batcher is not None and batcher._pool._max_workers == lc.max_batch
    assert batcher.texts.calls == len(TEXTS) and batcher.admitted == 0
    enc.passes = 0
    together = asyncio.run(lc.abatch(TEXTS))
    assert enc.passes == 1  # abatch: one micro-batch, one encoder pass
    alone = [lc.invoke(q) for q in TEXTS]
    assert [[(d.id, d.metadata["dense"]) for d in ds] for ds in together] == [
        [(d.id, d.metadata["dense"]) for d in ds] for ds in alone
    ]


def test_ainvoke_on_a_server_store_awaits_the_async_client(tmp_path: Path) -> None:
    enc = CountingEncoder()
    sync = qdrant_client.QdrantClient(location=":memory:")
    store = QdrantStore(ClientBackend(":memory:", client=sync))
    fill(store, enc, tmp_path, tenant="acme")
    store.enable_tenancy()
    # qdrant-client's local mode keeps points per client object: let the async client see the
    # sync one's collections, as two clients of one server would.
    aclient = qdrant_client.AsyncQdrantClient(location=":memory:")
    aclient._client.collections = sync._client.collections
    aclient._client.aliases = sync._client.aliases
    store.backend.async_client = aclient  # type: ignore[attr-defined]
    assert store.supports_async
    calls = {"sync": 0, "async": 0}
    sync_query, async_query = sync.query_batch_points, aclient.query_batch_points

    def counted_sync(*a: Any, **kw: Any) -> Any:
        calls["sync"] += 1
        return sync_query(*a, **kw)

    async def counted_async(*a: Any, **kw: Any) -> Any:
        calls["async"] += 1
        return await async_query(*a, **kw)

    sync.query_batch_points = counted_sync  # type: ignore[method-assign]
    aclient.query_batch_points = counted_async  # type: ignore[method-assign]
    lc = MmragRetriever(retriever=Retriever(enc, store, pool=5), k=2, tenant="acme")
    docs = asyncio.run(lc.ainvoke("qdrant vector database"))
    assert calls == {"sync": 0, "async": 1}
    assert docs[0].page_content == TEXTS[2] and docs[0].metadata["tenant"] == "acme"
    assert [d.metadata["id"] for d in lc.invoke("qdrant vector database")] == [d.metadata["id"] for d in docs]
    assert calls["sync"] == 1
    # a retriever without a tenant cannot read a multi-tenant store, sync or async
    free = MmragRetriever(retriever=lc.retriever, k=2)
    with pytest.raises(TenancyError):
        asyncio.run(free.ainvoke("qdrant"))
    with pytest.raises(ConfigError, match="another tenant"):
        lc.invoke("qdrant", filters={"tenant": "globex"})
    assert MmragRetriever(retriever=lc.retriever, tenant="globex").invoke("qdrant") == []


@pytest.mark.slow
def test_readme_langchain_example_runs_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Runs the README's LangChain example exactly as written (with the real `lite` encoder)."""
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- langchain-example -->\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its LangChain example block"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "dual.txt").write_text(
        "Dual encoders embed passages and queries to retrieve passages."
    )
    (tmp_path / "docs" / "cats.txt").write_text("Cats sleep on warm windows all afternoon.")
    Image.new("RGB", (32, 32), (230, 160, 60)).save(tmp_path / "docs" / "cat.png")  # the composed query's
    monkeypatch.chdir(tmp_path)
    exec(compile(match.group(1), "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Dual encoders embed queries and passages separately."
    source, dense, rank = out[1].split()
    assert source.endswith("dual.txt") and float(dense) > 0 and rank == "1"
    assert out[2].endswith((".txt", "cat.png"))  # the composed query's best document


def test_mode_picks_the_first_stage(edge: tuple[MmragRetriever, CountingEncoder, Path]) -> None:
    lc, _, _ = edge
    assert lc.retriever.store.has_sparse
    hybrid = MmragRetriever(retriever=lc.retriever, mode="hybrid", k=2).invoke("dense passage retrieval")
    assert hybrid[0].metadata["fused"] is not None
    dense = MmragRetriever(retriever=lc.retriever, mode="dense", hybrid=True, k=2)  # mode wins over hybrid
    assert dense.invoke("dense passage retrieval")[0].metadata["fused"] is None
    assert MmragRetriever(retriever=lc.retriever, hybrid=True, k=2).invoke("dense")[0].metadata["fused"]
