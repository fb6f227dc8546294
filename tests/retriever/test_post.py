"""Grouping by document, context expansion, MMR and composed queries on both store backends
(Qdrant Edge in tmp_path, qdrant-client ``:memory:``), through :meth:`Retriever.run`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError
from mmrag.retriever import Retriever, SearchRequest, SearchResult, expand, post
from mmrag.retriever.post import group_hits, mmr_order
from mmrag.store import QdrantStore
from mmrag.tenancy import with_tenant
from mmrag.types import Chunk, Citation, Hit, chunk_id
from tests.fakes import HashEncoder

# a.pdf: six text chunks on three pages, then a figure on pages 1 and 2 (positions run on, text first).
PDF = [
    ("solar panels convert sunlight into energy", 1),
    ("solar energy output depends on panel angle", 1),
    ("solar panel energy storage uses batteries", 2),
    ("the battery chemistry of storage systems", 2),
    ("solar panel energy from wind turbines and more", 3),
    ("grid operators balance solar energy supply", 3),
]
FIGURES = [("figure: solar panel array on a roof", 1), ("figure: battery energy storage rack", 2)]
OTHERS = {
    "b.txt": ["solar energy policy in europe", "tax credits for rooftop panels"],
    "c.md": ["energy prices and solar adoption", "history of photovoltaics"],
    "d.txt": ["cats sleep on warm windows"],
}
QUERY = "solar panel energy"


def _chunks() -> list[Chunk]:
    out = [
        Chunk(chunk_id("a.pdf", t, i), "text", "a.pdf", t, None, {"position": i, "page": p})
        for i, (t, p) in enumerate(PDF)
    ]
    for j, (cap, p) in enumerate(FIGURES):
        pos = len(PDF) + j
        ref = f"a.pdf#page={p}&image={j + 1}"
        out.append(
            Chunk(chunk_id("a.pdf", ref, pos), "image", "a.pdf", cap, ref, {"position": pos, "page": p})
        )
    for src, texts in OTHERS.items():
        out += [
            Chunk(chunk_id(src, t, i), "text", src, t, None, {"position": i}) for i, t in enumerate(texts)
        ]
    return out


@pytest.fixture(params=["edge", "memory"])
def retriever(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Retriever]:
    enc = HashEncoder(dim=128)
    location = str(tmp_path / "edge") if request.param == "edge" else ":memory:"
    with QdrantStore.open(location) as store:
        name = store.ensure_vector(vector_spec(enc))
        chunks = _chunks()
        store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), name)
        yield Retriever(enc, store, pool=20)


def _sources(hits: Sequence[Hit]) -> list[str]:
    return [h.chunk.source for h in hits]


class ReverseReranker:
    """Reverses its pool: the final order is then the opposite of the first stage's."""

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        return [replace(h, rerank=float(h.ann_rank), final_rank=i + 1) for i, h in enumerate(reversed(hits))]


def test_group_by_source_counts_documents(retriever: Retriever) -> None:
    plain = retriever.run(SearchRequest(text=QUERY, k=3)).hits
    assert _sources(plain) == ["a.pdf"] * 3  # one PDF fills the plain top 3
    grouped = retriever.run(SearchRequest(text=QUERY, k=3, group_by="source")).hits
    assert len(grouped) == 3 and len(set(_sources(grouped))) == 3
    assert grouped[0].chunk.id == plain[0].chunk.id  # each document ranks where its best hit ranks
    assert [h.final_rank for h in grouped] == [1, 2, 3]
    two = retriever.run(SearchRequest(text=QUERY, k=3, group_by="source", group_size=2)).hits
    srcs = _sources(two)
    assert len(set(srcs)) == 3 and all(srcs.count(s) <= 2 for s in srcs) and srcs.count("a.pdf") == 2
    assert srcs == sorted(srcs, key=srcs.index)  # a document's hits sit next to each other


def test_grouping_widens_a_pool_with_too_few_documents(
    retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(post, "GROUP_FETCH", 1)  # fetch exactly k candidates first
    fetched: list[int] = []
    run = retriever._run

    def counting(req: SearchRequest) -> SearchResult:
        fetched.append(req.k)
        return run(req)

    monkeypatch.setattr(retriever, "_run", counting)
    hits = retriever.run(SearchRequest(text=QUERY, k=4, pool=2, group_by="source")).hits
    assert len(set(_sources(hits))) == 4
    assert fetched == [4, 4 * post.WIDEN]  # the first 4 candidates were all from a.pdf


def test_grouping_uses_the_final_order_after_rerank(retriever: Retriever) -> None:
    r = Retriever(retriever.encoder, retriever.store, pool=20, reranker=ReverseReranker())
    first = retriever.run(SearchRequest(text=QUERY, k=20)).hits
    grouped = r.run(SearchRequest(text=QUERY, k=2, group_by="source")).hits
    assert grouped[0].chunk.id == first[-1].chunk.id  # the reranker's best, not the first stage's
    assert grouped[0].rerank is not None


def test_mmr_diversifies_the_pool(retriever: Retriever) -> None:
    # two copies of one text in two files: the same vector, both at the top of the plain ranking
    enc, store = retriever.encoder, retriever.store
    copies = [Chunk(chunk_id(src, QUERY, 0), "text", src, QUERY, None, {"position": 0}) for src in ("x", "y")]
    store.upsert_chunks(copies, enc.encode_text([QUERY, QUERY]), retriever.vector)
    plain = retriever.run(SearchRequest(text=QUERY, k=4)).hits
    assert sorted(_sources(plain[:2])) == ["x", "y"]
    same = retriever.run(SearchRequest(text=QUERY, k=4, mmr_lambda=1.0)).hits
    # λ = 1: relevance alone, the plain ranking's scores (equal scores may come in either order)
    assert [h.dense for h in same] == pytest.approx([h.dense for h in plain])
    assert {h.chunk.id for h in same[:2]} == {h.chunk.id for h in plain[:2]}
    diverse = retriever.run(SearchRequest(text=QUERY, k=4, mmr_lambda=0.5)).hits
    assert diverse[0].chunk.source in {"x", "y"}
    assert len({"x", "y"} & set(_sources(diverse))) == 1  # the copy is redundant: it drops out
    assert [h.final_rank for h in diverse] == [1, 2, 3, 4]


def test_mmr_order_on_plain_vectors() -> None:
    v = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]])
    assert mmr_order(np.array([1.0, 0.9, 0.1]), v, 1.0) == [0, 1, 2]
    assert mmr_order(np.array([1.0, 0.9, 0.1]), v, 0.5) == [0, 2, 1]  # the near-duplicate goes last
    assert mmr_order(np.array([]), np.zeros((0, 2)), 0.5) == []


def test_group_hits_keeps_k_groups() -> None:
    def h(i: int, src: str) -> Hit:
        return Hit(Chunk(str(i), "text", src, "t", None), 1.0, None, None, None, i, i)

    hits = [h(1, "a"), h(2, "b"), h(3, "a"), h(4, "c"), h(5, "b"), h(6, "a")]
    assert [x.chunk.id for x in group_hits(hits, 2, 2)] == ["1", "3", "2", "5"]
    assert [x.chunk.id for x in group_hits(hits, 5, 1)] == ["1", "2", "4"]


def test_expand_attaches_reading_order_context(retriever: Retriever) -> None:
    hits = retriever.run(SearchRequest(text="battery chemistry storage systems", k=1, expand=1)).hits
    hit = hits[0]
    assert hit.chunk.metadata["position"] == 3 and len(hits) == 1  # context is not counted in k
    ctx = [(c.modality, c.metadata["position"]) for c in hit.context]
    # the text before and after it, then the figure on its page (page 2)
    assert ctx == [("text", 2), ("text", 4), ("image", 7)]
    assert hit.to_dict()["context"][0]["text"] == PDF[2][0]
    wide = retriever.run(SearchRequest(text="battery chemistry storage systems", k=1, expand=2)).hits[0]
    assert [c.metadata["position"] for c in wide.context] == [1, 2, 4, 5, 7]


def test_expand_gives_a_figure_its_page_text(retriever: Retriever) -> None:
    req = SearchRequest(text="figure solar panel array roof", k=1, modality="image", expand=1)
    fig = retriever.run(req).hits[0]
    assert fig.chunk.modality == "image" and fig.chunk.metadata["page"] == 1
    assert [c.text for c in fig.context] == [PDF[0][0], PDF[1][0]]


def test_expand_stays_in_the_document(retriever: Retriever) -> None:
    hits = retriever.run(SearchRequest(text=QUERY, k=5, group_by="source", expand=3)).hits
    for h in hits:
        assert all(c.source == h.chunk.source for c in h.context)
        assert h.chunk.id not in {c.id for c in h.context}
    cat = retriever.run(SearchRequest(text="cats sleep", k=1, expand=2)).hits[0]
    assert cat.chunk.source == "d.txt" and cat.context == ()  # a one-chunk document


def test_composed_query_weights(retriever: Retriever, tmp_path: Path) -> None:
    # noise, not a flat colour: distinct pixel values give distinct scores (no ties to order)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    text_only = retriever.run(SearchRequest(text=QUERY, k=5, mode="dense", rerank=False)).hits
    image_only = retriever.run(SearchRequest(image=img, k=5)).hits
    as_text = retriever.run(SearchRequest(text=QUERY, image=img, k=5, image_weight=0.0)).hits
    as_image = retriever.run(SearchRequest(text=QUERY, image=img, k=5, image_weight=1.0)).hits
    assert [h.chunk.id for h in as_text] == [h.chunk.id for h in text_only]
    assert [h.chunk.id for h in as_image] == [h.chunk.id for h in image_only]
    both = retriever.run(SearchRequest(text=QUERY, image=img, k=3, group_by="source", expand=1)).hits
    assert len(set(_sources(both))) == 3 and any(h.context for h in both)


def test_bad_result_options_are_config_errors() -> None:
    for kw in (
        {"group_by": "page"},
        {"group_size": 2},
        {"group_by": "source", "group_size": 0},
        {"expand": -1},
        {"expand": 99},
        {"mmr_lambda": 1.5},
        {"image_weight": -0.1},
    ):
        with pytest.raises(ConfigError):
            SearchRequest(text="q", **kw)  # type: ignore[arg-type]


def _store(kind: str, tmp_path: Path, **kw: bool) -> QdrantStore:
    return QdrantStore.open(str(tmp_path / "edge") if kind == "edge" else ":memory:", **kw)


@pytest.mark.parametrize("kind", ["edge", "memory"])
@pytest.mark.parametrize("boxes", [False, True])
def test_a_crowded_page_gives_a_figure_the_text_nearest_it(kind: str, boxes: bool, tmp_path: Path) -> None:
    # 60 lines on one page, top to bottom (reading order = position), and a figure at the page's foot:
    # more than MAX_PAGE_CHUNKS, stored in point-id order, which is not reading order.
    n = expand.MAX_PAGE_CHUNKS + 10

    def box(top: float) -> Citation | None:
        return Citation(page=1, bbox=(72.0, top - 10.0, 540.0, top)) if boxes else None

    meta = [{"position": i, "page": 1} for i in range(n + 1)]
    lines = [
        Chunk(
            chunk_id("crowd.pdf", f"l{i}", i),
            "text",
            "crowd.pdf",
            f"line {i}",
            None,
            meta[i],
            box(810.0 - 12 * i),
        )
        for i in range(n)
    ]
    ref = "crowd.pdf#page=1&image=1"
    fig = Chunk(
        chunk_id("crowd.pdf", ref, n), "image", "crowd.pdf", "figure: a chart", ref, meta[n], box(60.0)
    )
    enc = HashEncoder(dim=32)
    with _store(kind, tmp_path) as store:
        name = store.ensure_vector(vector_spec(enc))
        chunks = [*lines, fig]
        store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), name)
        stored = [r.payload["metadata"]["position"] for r in store.iter_records({"modality": "text"})]
        assert stored != sorted(stored)  # the store's own order is not reading order
        ctx = expand.context_of(store, fig, 1, {})
    want = range(n - expand.MAX_PAGE_CHUNKS, n) if boxes else range(expand.MAX_PAGE_CHUNKS)
    # with boxes: the lines nearest the figure (the page's last ones); without: the first ones
    assert [c.metadata["position"] for c in ctx] == list(want)


@pytest.mark.parametrize("kind", ["edge", "memory"])
def test_expand_never_crosses_tenants(kind: str, tmp_path: Path) -> None:
    # Two tenants hold the same document (same source, pages and positions): the context of one
    # tenant's hit is read from that tenant's chunks only, for neighbours, page text and figures.
    enc = HashEncoder(dim=128)
    with _store(kind, tmp_path, tenancy=True) as store:
        name = store.ensure_vector(vector_spec(enc))
        for tenant in ("acme", "globex"):
            chunks = with_tenant(_chunks(), tenant)
            store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), name)
        r = Retriever(enc, store, pool=20)
        for tenant in ("acme", "globex"):
            for modality in ("text", "image"):
                req = SearchRequest(text=QUERY, k=3, modality=modality, tenant=tenant, expand=2)
                hits = r.run(req).hits
                assert hits and all(h.context for h in hits)
                owners = {c.metadata["tenant"] for h in hits for c in (h.chunk, *h.context)}
                assert owners == {tenant}
        # a hit read without a tenant in its metadata still keeps the search's tenant
        hit = r.run(SearchRequest(text=QUERY, k=1, tenant="acme")).hits[0]
        bare = replace(hit, chunk=replace(hit.chunk, metadata={"position": 3, "page": 2}))
        ctx = expand.expand_hits(store, [bare], 1, {"tenant": "acme"})[0].context
        assert ctx and {c.metadata["tenant"] for c in ctx} == {"acme"}
