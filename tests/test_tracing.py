"""OpenTelemetry spans per retrieval stage, read back with the SDK's in-memory exporter, on both
store backends; and :func:`mmrag.tracing.span` as a no-op without OpenTelemetry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmrag import tracing
from mmrag.encoders.base import vector_spec
from mmrag.retriever import Retriever, SearchRequest
from mmrag.retriever.batching import BatchSettings, SearchBatcher
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit, chunk_id
from tests.fakes import HashEncoder

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="the tracing extra (opentelemetry-sdk)")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

TEXTS = [f"solar energy note {i} about panels" for i in range(6)] + ["cats on windows", "dogs in parks"]


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """One provider for the process (OpenTelemetry allows setting it once), one exporter to read."""
    exp = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, sdk_trace.TracerProvider):
        provider = sdk_trace.TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return exp


class Reverse:
    id = "reverse"

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        return [replace(h, rerank=float(h.ann_rank), final_rank=i + 1) for i, h in enumerate(reversed(hits))]


@pytest.fixture(params=["edge", "memory"])
def retriever(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Retriever]:
    enc = HashEncoder()
    location = str(tmp_path / "edge") if request.param == "edge" else ":memory:"
    with QdrantStore.open(location) as store:
        name = store.ensure_vector(vector_spec(enc))
        chunks = [
            Chunk(chunk_id("s", t, i), "text", f"doc{i % 3}.txt", t, None, {"position": i // 3})
            for i, t in enumerate(TEXTS)
        ]
        store.upsert_chunks(chunks, enc.encode_text(TEXTS), name)
        yield Retriever(enc, store, pool=6, hybrid=True, reranker=Reverse())


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_every_stage_is_a_span_with_counts(retriever: Retriever, exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    req = SearchRequest(text="solar panels", k=2, group_by="source", expand=1, mmr_lambda=0.5)
    hits = retriever.run(req).hits
    spans = {s.name: s for s in exporter.get_finished_spans()}
    stages = ["encode", "ann", "bm25", "fuse", "rerank", "mmr", "group", "expand", "search"]
    assert set(spans) == {f"mmrag.{s}" for s in stages}
    root = spans["mmrag.search"]
    for stage in stages[:-1]:
        s = spans[f"mmrag.{stage}"]
        assert s.parent is not None and s.parent.span_id == root.context.span_id  # one trace per search
        assert _attrs(s)["mmrag.ms"] >= 0.0
    assert _attrs(spans["mmrag.ann"])["mmrag.hits"] >= 6
    assert _attrs(spans["mmrag.bm25"])["mmrag.hits"] >= 1
    assert _attrs(spans["mmrag.rerank"])["mmrag.pool"] == 6
    assert _attrs(spans["mmrag.group"])["mmrag.groups"] == 2
    assert _attrs(spans["mmrag.expand"])["mmrag.context"] == sum(len(h.context) for h in hits) > 0
    assert _attrs(root)["mmrag.hits"] == len(hits) and _attrs(root)["mmrag.k"] == 2


def test_a_plain_search_has_no_post_spans(retriever: Retriever, exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    retriever.run(SearchRequest(text="solar panels", k=2, mode="dense", rerank=False))
    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "mmrag.ann",
        "mmrag.encode",
        "mmrag.search",
    ]


def _one_trace(exporter: InMemorySpanExporter, parent: Any = None) -> tuple[Any, set[str]]:
    """The finished spans as one ``mmrag.search`` (a root, or a child of ``parent``) and the names
    of its children; fails when any span sits outside that tree."""
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "mmrag.search"]
    assert len(roots) == 1, [s.name for s in spans]
    root = roots[0]
    want = None if parent is None else parent.get_span_context().span_id
    assert (root.parent.span_id if root.parent else None) == want
    children = [s for s in spans if s is not root]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in children)
    return root, {s.name for s in children}


def test_every_search_method_is_one_trace(
    retriever: Retriever, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    img = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(img)
    hybrid = {"mmrag.encode", "mmrag.ann", "mmrag.bm25", "mmrag.fuse", "mmrag.rerank"}
    calls: list[tuple[Any, set[str], dict[str, Any]]] = [
        (lambda: retriever.search("solar panels", k=2), hybrid, {"mmrag.k": 2, "mmrag.hits": 2}),
        (lambda: retriever.search_with_timings("solar", k=3), hybrid, {"mmrag.hits": 3}),
        (lambda: retriever.search(image=img, k=2), {"mmrag.encode", "mmrag.ann"}, {"mmrag.image": True}),
        (
            lambda: retriever.search_batch(["solar", "cats"], k=2),
            hybrid,
            {"mmrag.queries": 2, "mmrag.hits": 4},
        ),
        (lambda: retriever.search_images([img, img], k=1), {"mmrag.encode", "mmrag.ann"}, {"mmrag.hits": 2}),
    ]
    for call, stages, attrs in calls:
        exporter.clear()
        call()
        root, children = _one_trace(exporter)
        assert children == stages
        assert attrs.items() <= _attrs(root).items()


def test_the_micro_batcher_keeps_the_callers_trace(
    retriever: Retriever, exporter: InMemorySpanExporter
) -> None:
    # searches run on the batcher's threads: their spans still join the caller's trace (a web
    # request's span, a chain's), not start traces of their own
    batcher = SearchBatcher(retriever, BatchSettings(max_batch=2, max_wait_ms=0))
    try:
        for run in (
            lambda: batcher.run(SearchRequest(text="solar panels", k=2)),
            lambda: batcher.run_many([SearchRequest(text="cats", k=1)]),
        ):
            exporter.clear()
            with trace.get_tracer("app").start_as_current_span("app.request") as app:
                run()
            spans = [s for s in exporter.get_finished_spans() if s.name != "app.request"]
            exporter.clear()
            for s in spans:
                exporter.export([s])  # the app's own span left out: the rest is one search
            _, children = _one_trace(exporter, parent=app)
            assert {"mmrag.encode", "mmrag.ann", "mmrag.rerank"} <= children
    finally:
        batcher.close()


@pytest.mark.parametrize("awaited", [True, False])
def test_langchain_async_searches_are_traced(
    awaited: bool, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    qdrant_client = pytest.importorskip("qdrant_client", reason="the server extra is not installed")
    from mmrag.langchain import MmragRetriever
    from mmrag.store.client import ClientBackend

    enc = HashEncoder()
    sync = qdrant_client.QdrantClient(location=":memory:")
    # a server store: ainvoke awaits the async client (mmrag.retriever.aio); Edge has no async
    # API: there ainvoke runs Retriever.run on the micro-batcher
    store = (
        QdrantStore(ClientBackend(":memory:", client=sync)) if awaited else QdrantStore.open(str(tmp_path))
    )
    with store:
        name = store.ensure_vector(vector_spec(enc))
        chunks = [Chunk(chunk_id("s", t, i), "text", "a.txt", t, None, {}) for i, t in enumerate(TEXTS)]
        store.upsert_chunks(chunks, enc.encode_text(TEXTS), name)
        if awaited:
            aclient = qdrant_client.AsyncQdrantClient(location=":memory:")
            aclient._client.collections = sync._client.collections  # one "server" seen by both clients
            aclient._client.aliases = sync._client.aliases
            store.backend.async_client = aclient  # type: ignore[attr-defined]
        assert store.supports_async is awaited
        lc = MmragRetriever(retriever=Retriever(enc, store, pool=4), k=2)
        exporter.clear()
        docs = asyncio.run(lc.ainvoke("solar panels"))
        root, children = _one_trace(exporter)
        assert len(docs) == 2 and _attrs(root)["mmrag.hits"] == 2
        assert children == {"mmrag.encode", "mmrag.ann"}
        assert _attrs(root).get("mmrag.awaited", False) is awaited


def test_span_is_a_no_op_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_trace_api", lambda: None)
    with tracing.span("encode", queries=1) as s:
        s.set(hits=3, missing=None)  # accepted and dropped
    assert s._otel is None


def test_span_skips_opentelemetry_until_a_provider_is_installed(
    monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    """A fresh process has OpenTelemetry's proxy provider, whose spans record nothing: no tracer is asked."""

    def no_tracer(*_: Any, **__: Any) -> Any:
        raise AssertionError("get_tracer called while no provider is installed")

    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    monkeypatch.setattr(trace, "get_tracer", no_tracer)
    with tracing.span("encode", queries=1) as s:
        s.set(hits=3)
    assert s._otel is None
    monkeypatch.undo()  # the provider this module installed is found again on the next call
    with tracing.span("encode", queries=1) as s:
        pass
    assert s._otel is not None
