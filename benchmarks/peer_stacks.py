"""The three stacks of ``bench_peers.py``, each built in its framework's own idiom over one shared corpus.

Every system gets the same precomputed corpus vectors and the same mmrag encoder object for queries (through a
LangChain ``Embeddings`` adapter and Haystack ``@component`` embedders), and the same cross-encoder folder, so
``bench_peers.py`` compares frameworks, not models.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

TOP = 10  # results per query after reranking


@dataclass
class Corpus:
    """The SciFact slice under test and its precomputed dense vectors (one row per chunk)."""

    ids: list[str]  # chunk ids (uuid5, as mmrag makes them)
    doc_ids: list[str]
    texts: list[str]
    vectors: np.ndarray[Any, Any]
    chunks: list[Any]

    def known(self) -> dict[str, np.ndarray[Any, Any]]:
        return dict(zip(self.texts, self.vectors, strict=True))


@dataclass
class System:
    """One stack under test: ``build`` indexes the corpus; the callables work on the last build."""

    name: str
    build: Callable[[], None]  # timed: index the corpus into a fresh store
    connect: Callable[[], None]  # untimed: wire the query side to the last build
    dense: Callable[[str, int], list[str]]  # doc ids, best first
    rerank: Callable[[str], list[str]]  # top 10 doc ids after reranking the pool
    stages: Callable[[str], dict[str, float]]  # seconds per stage of dense + rerank
    state: dict[str, Any] = field(default_factory=dict)


def mmrag_system(name: str, encoder: Any, corpus: Corpus, reranker: Any, pool: int, hybrid: bool) -> System:
    from mmrag.retriever import Retriever
    from mmrag.store import QdrantStore

    st: dict[str, Any] = {}

    def build() -> None:
        if "tmp" in st:
            st["store"].close()
            st["tmp"].cleanup()
        st["tmp"] = tempfile.TemporaryDirectory(prefix="mmrag-bench-peers-")
        store = st["store"] = QdrantStore.open(st["tmp"].name)
        from mmrag.encoders.base import vector_spec

        vector = store.ensure_vector(vector_spec(encoder))
        t0 = time.perf_counter()
        for start in range(0, len(corpus.chunks), 256):  # as mmrag.eval.corpus.index_corpus writes
            store.upsert_chunks(
                corpus.chunks[start : start + 256], corpus.vectors[start : start + 256], vector
            )
        t1 = time.perf_counter()
        store.optimize()  # builds the HNSW graph (the peers' local mode has none to build)
        st.setdefault("index_split", []).append({"write": t1 - t0, "optimize": time.perf_counter() - t1})

    def connect() -> None:
        depth = 100 if hybrid else None  # hybrid: 100 candidates per branch, as bench_rerank
        st["r"] = Retriever(
            encoder,
            st["store"],
            pool=pool,
            hybrid=hybrid,
            dense_pool=depth,
            sparse_pool=depth,
            reranker=reranker,
        )

    def ids(hits: list[Any]) -> list[str]:
        return [str(h.chunk.metadata["doc_id"]) for h in hits]

    def stages(q: str) -> dict[str, float]:
        t = st["r"].search_with_timings(q, k=min(TOP, pool), pool=pool, rerank=True).timings
        return {
            "encode": t["encode"],
            "first_stage": t["total"] - t["encode"] - t["rerank"],
            "rerank": t["rerank"],
        }

    return System(
        name,
        build,
        connect,
        lambda q, k: ids(st["r"].search(q, k=k, pool=k if not hybrid else pool, rerank=False)),
        lambda q: ids(st["r"].search(q, k=min(TOP, pool), pool=pool, rerank=True)),
        stages,
        st,
    )


def langchain_system(encoder: Any, corpus: Corpus, ce_path: str, max_length: int, pool: int) -> System:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_community.cross_encoders import HuggingFaceCrossEncoder
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore

    known = corpus.known()

    class MmragEmbeddings(Embeddings):
        """mmrag's encoder behind LangChain's interface; corpus texts come from the precomputed vectors."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            missing = [t for t in texts if t not in known]
            if missing:
                known.update(zip(missing, encoder.encode_text(missing), strict=True))
            return [known[t].tolist() for t in texts]

        def embed_query(self, text: str) -> list[float]:
            vec: list[float] = encoder.encode_text([text])[0].tolist()
            return vec

    emb = MmragEmbeddings()
    ce = HuggingFaceCrossEncoder(model_name=ce_path, model_kwargs={"max_length": max_length, "device": "cpu"})
    compressor = CrossEncoderReranker(model=ce, top_n=TOP)
    st: dict[str, Any] = {}

    def build() -> None:
        st["vs"] = QdrantVectorStore.from_texts(
            corpus.texts,
            embedding=emb,
            metadatas=[{"doc_id": d} for d in corpus.doc_ids],
            ids=corpus.ids,
            location=":memory:",
            collection_name="scifact",
            batch_size=256,  # mmrag writes 256 per batch too
        )

    def connect() -> None:
        st["dense"] = {}
        st["rr"] = ContextualCompressionRetriever(
            base_compressor=compressor, base_retriever=st["vs"].as_retriever(search_kwargs={"k": pool})
        )

    def dense(q: str, k: int) -> list[str]:
        if k not in st["dense"]:
            st["dense"][k] = st["vs"].as_retriever(search_kwargs={"k": k})
        return [str(d.metadata["doc_id"]) for d in st["dense"][k].invoke(q)]

    def stages(q: str) -> dict[str, float]:
        t0 = time.perf_counter()
        vec = emb.embed_query(q)
        t1 = time.perf_counter()
        docs = st["vs"].similarity_search_by_vector(vec, k=pool)
        t2 = time.perf_counter()
        compressor.compress_documents(docs, q)
        return {"encode": t1 - t0, "first_stage": t2 - t1, "rerank": time.perf_counter() - t2}

    return System(
        "langchain",
        build,
        connect,
        dense,
        lambda q: [str(d.metadata["doc_id"]) for d in st["rr"].invoke(q)],
        stages,
        st,
    )


def haystack_system(encoder: Any, corpus: Corpus, ce_path: str, max_length: int, pool: int) -> System:
    from haystack import Document, Pipeline, component
    from haystack.components.writers import DocumentWriter
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.rankers.sentence_transformers import (
        SentenceTransformersSimilarityRanker,
    )
    from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    known = corpus.known()

    @component
    class MmragTextEmbedder:
        """Query embedding with mmrag's encoder."""

        @component.output_types(embedding=list[float])
        def run(self, text: str) -> dict[str, list[float]]:
            return {"embedding": encoder.encode_text([text])[0].tolist()}

    @component
    class MmragDocumentEmbedder:
        """Document embeddings with mmrag's encoder; corpus texts come from the precomputed vectors."""

        @component.output_types(documents=list[Document])
        def run(self, documents: list[Document]) -> dict[str, list[Document]]:
            missing = [d.content or "" for d in documents if (d.content or "") not in known]
            if missing:
                known.update(zip(missing, encoder.encode_text(missing), strict=True))
            return {"documents": [replace(d, embedding=known[d.content or ""].tolist()) for d in documents]}

    ranker = SentenceTransformersSimilarityRanker(
        model=ce_path,
        device=ComponentDevice.from_str("cpu"),
        top_k=TOP,
        tokenizer_kwargs={"model_max_length": max_length},
        batch_size=32,  # as mmrag's reranker and sentence-transformers' predict (default 16)
    )
    ranker.warm_up()
    query_embedder = MmragTextEmbedder()
    st: dict[str, Any] = {}

    def build() -> None:
        store = QdrantDocumentStore(
            location=":memory:",
            index="scifact",
            embedding_dim=corpus.vectors.shape[1],
            similarity="cosine",
            recreate_index=True,
            progress_bar=False,
            write_batch_size=256,
        )
        docs = [
            Document(id=d, content=t, meta={"doc_id": d})
            for d, t in zip(corpus.doc_ids, corpus.texts, strict=True)
        ]
        index = Pipeline()
        index.add_component("embedder", MmragDocumentEmbedder())
        index.add_component("writer", DocumentWriter(document_store=store))
        index.connect("embedder.documents", "writer.documents")
        index.run({"embedder": {"documents": docs}})
        st["store"] = store

    def connect() -> None:
        store = st["store"]
        dense = Pipeline()
        dense.add_component("embedder", MmragTextEmbedder())
        dense.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=TOP))
        dense.connect("embedder.embedding", "retriever.query_embedding")
        rr = Pipeline()
        rr.add_component("embedder", MmragTextEmbedder())
        rr.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=pool))
        rr.add_component("ranker", ranker)
        rr.connect("embedder.embedding", "retriever.query_embedding")
        rr.connect("retriever.documents", "ranker.documents")
        st.update(dense=dense, rr=rr, retriever=QdrantEmbeddingRetriever(document_store=store))

    def doc_ids(docs: list[Any]) -> list[str]:
        return [str(d.meta["doc_id"]) for d in docs]

    def dense(q: str, k: int) -> list[str]:
        out = st["dense"].run({"embedder": {"text": q}, "retriever": {"top_k": k}})
        return doc_ids(out["retriever"]["documents"])

    def rerank(q: str) -> list[str]:
        return doc_ids(st["rr"].run({"embedder": {"text": q}, "ranker": {"query": q}})["ranker"]["documents"])

    def stages(q: str) -> dict[str, float]:
        t0 = time.perf_counter()
        vec = query_embedder.run(text=q)["embedding"]
        t1 = time.perf_counter()
        docs = st["retriever"].run(query_embedding=vec, top_k=pool)["documents"]
        t2 = time.perf_counter()
        ranker.run(query=q, documents=docs)
        return {"encode": t1 - t0, "first_stage": t2 - t1, "rerank": time.perf_counter() - t2}

    # connect() runs once: a Haystack component (the ranker) belongs to one pipeline only.
    return System("haystack", build, connect, dense, rerank, stages, st)
