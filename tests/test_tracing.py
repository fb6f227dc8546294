"""OpenTelemetry spans per retrieval stage, read back with the SDK's in-memory exporter, on both
store backends; and :func:`mmrag.tracing.span` as a no-op without OpenTelemetry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mmrag import tracing
from mmrag.encoders.base import vector_spec
from mmrag.retriever import Retriever, SearchRequest
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


def test_span_is_a_no_op_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_trace_api", lambda: None)
    with tracing.span("encode", queries=1) as s:
        s.set(hits=3, missing=None)  # accepted and dropped
    assert s._otel is None
