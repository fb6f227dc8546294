"""Hybrid (BM25 + dense) retrieval on real SciFact abstracts, through the Retriever."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError
from mmrag.eval.datasets import BeirDataset
from mmrag.eval.metrics import recall_at_k
from mmrag.retriever import Retriever
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit, chunk_id
from tests.fakes import HashEncoder

N_DOCS = 300


@pytest.fixture(scope="module")
def scifact(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Retriever, BeirDataset]]:
    ds = BeirDataset.load(data_dir / "scifact", "train")
    docs = list(ds.corpus)[:N_DOCS]
    chunks = [
        Chunk(chunk_id("sf", ds.doc_text(d), d), "text", d, ds.doc_text(d), None, {"doc_id": d}) for d in docs
    ]
    enc = HashEncoder(dim=256)
    with QdrantStore.open(str(tmp_path_factory.mktemp("hybrid"))) as store:
        name = store.ensure_vector(vector_spec(enc))
        store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), name)
        yield Retriever(enc, store, pool=30), ds


def _run(r: Retriever, ds: BeirDataset, qids: list[str], **kw: object) -> dict[str, list[str]]:
    res = r.search_batch([ds.queries[q] for q in qids], k=10, **kw)  # type: ignore[arg-type]
    return {q: [str(h.chunk.metadata["doc_id"]) for h in hits] for q, hits in zip(qids, res, strict=True)}


def test_hybrid_hits_carry_every_score(scifact: tuple[Retriever, BeirDataset]) -> None:
    r, ds = scifact
    assert r.capabilities == {"hybrid": True, "rerank": False}
    res = r.search_with_timings(ds.corpus[next(iter(ds.corpus))][0], k=10, hybrid=True)
    assert set(res.timings) == {"encode", "ann", "sparse", "fuse", "total"}
    hits = res.hits
    assert len(hits) == 10 and [h.ann_rank for h in hits] == [h.final_rank for h in hits] == list(
        range(1, 11)
    )
    assert all(h.fused is not None for h in hits)
    assert [h.fused for h in hits] == sorted((h.fused or 0 for h in hits), reverse=True)
    assert all(h.dense is not None or h.sparse is not None for h in hits)
    assert any(h.dense is not None and h.sparse is not None for h in hits)
    assert hits[0].chunk.metadata["doc_id"] == next(iter(ds.corpus))  # a title finds its own abstract


def test_hybrid_recall_on_real_queries(scifact: tuple[Retriever, BeirDataset]) -> None:
    r, ds = scifact
    inside = set(list(ds.corpus)[:N_DOCS])
    qids = [q for q, rel in ds.qrels.items() if set(rel) <= inside]
    assert len(qids) >= 20
    qrels = {q: dict(ds.qrels[q]) for q in qids}
    dense = recall_at_k(qrels, _run(r, ds, qids, hybrid=False), 10)
    rrf = recall_at_k(
        qrels, _run(Retriever(r.encoder, r.store, pool=30, hybrid=True, fusion="rrf"), ds, qids), 10
    )
    bm25_only = Retriever(r.encoder, r.store, pool=30, hybrid=True, dense_pool=1, fusion="rrf")  # ~BM25
    bm25 = recall_at_k(qrels, _run(bm25_only, ds, qids), 10)
    dbsf = recall_at_k(qrels, _run(r, ds, qids, hybrid=True), 10)  # the default fusion
    assert r.fusion == "dbsf"
    # Real BM25 beats hashed bag-of-words on SciFact; fusing keeps most of the better branch.
    assert bm25 > dense
    assert rrf >= min(bm25, dense) and dbsf >= min(bm25, dense)
    assert rrf > 0.5


def test_hybrid_arguments_are_checked(scifact: tuple[Retriever, BeirDataset], tmp_path: Path) -> None:
    r, _ = scifact
    with pytest.raises(ConfigError, match="fusion"):
        Retriever(r.encoder, r.store, fusion="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sparse_pool"):
        Retriever(r.encoder, r.store, sparse_pool=0)
    with pytest.raises(ConfigError, match="rerank"):
        r.search("cells", rerank=True)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    with pytest.raises(ConfigError, match="text query"):
        r.search(image=img, hybrid=True)
    assert r.search(image=img, k=2)[0].sparse is None  # image queries stay dense


class ReverseReranker:
    """A stand-in reranker (the retriever's wiring is the subject): reverses what it is given."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        self.seen.append(len(hits))
        return [replace(h, rerank=float(h.ann_rank), final_rank=i + 1) for i, h in enumerate(reversed(hits))]


def test_rerank_stage_wiring(scifact: tuple[Retriever, BeirDataset]) -> None:
    r, ds = scifact
    rr = ReverseReranker()
    ret = Retriever(r.encoder, r.store, pool=4, hybrid=True, reranker=rr)
    assert ret.capabilities == {"hybrid": True, "rerank": True}
    res = ret.search_with_timings(ds.queries[next(iter(ds.qrels))], k=6)
    assert rr.seen == [4]  # never more than `pool` candidates reach the reranker
    hits = res.hits
    assert [h.ann_rank for h in hits] == [4, 3, 2, 1, 5, 6] and [h.final_rank for h in hits] == list(
        range(1, 7)
    )
    assert [h.rerank for h in hits] == [4.0, 3.0, 2.0, 1.0, None, None]
    assert "rerank" in res.timings and res.timings["total"] >= res.timings["rerank"]
    plain = ret.search(ds.queries[next(iter(ds.qrels))], k=6, rerank=False)
    assert [h.ann_rank for h in plain] == list(range(1, 7)) and rr.seen == [4]
    with pytest.raises(ConfigError, match="reranker"):
        Retriever(r.encoder, r.store, rerank=True)
