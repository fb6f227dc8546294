"""Micro-batched searches (issue #16): concurrent searches share one encoder pass and one rerank
batch, and every search's hits equal what it gets alone: same ids and ranks, scores within 1e-5.

The batches are formed deterministically, never by timing: the first search's encoder (and rerank)
call is held on an Event until every other search is waiting to join the next batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from mmrag.encoders import load_encoder
from mmrag.encoders.base import DualEncoder, FloatArray, vector_spec
from mmrag.errors import ConfigError, OverloadedError, SearchAbandonedError
from mmrag.eval.datasets import BeirDataset
from mmrag.rerank import CrossEncoderReranker
from mmrag.retriever import RetrievalMode, Retriever, SearchRequest, SearchResult
from mmrag.retriever.backlog import DrainRate
from mmrag.retriever.batching import BatchSettings, SearchBatcher
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit, chunk_id
from tests.fakes import HashEncoder
from tests.runtimes import running
from tests.waiting import wait_until

N_DOCS = 120


class HeldEncoder:
    """Wraps an encoder; its text call ``i`` waits for ``gates[i]`` (when there is one); records
    each call's size."""

    def __init__(self, inner: DualEncoder, held: int = 1) -> None:
        self.inner = inner
        self.id, self.dim, self.spec, self.aligned = inner.id, inner.dim, inner.spec, inner.aligned
        self.gates = [threading.Event() for _ in range(held)]
        self.sizes: list[int] = []

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        self.sizes.append(len(texts))
        if len(self.sizes) <= len(self.gates):
            assert self.gates[len(self.sizes) - 1].wait(60)
        return self.inner.encode_text(texts, batch_size=batch_size)

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> FloatArray:
        return self.inner.encode_image(images, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class HeldReranker:
    """Wraps a CrossEncoderReranker the same way (its first ``rerank_many`` call is held)."""

    def __init__(self, inner: CrossEncoderReranker) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.sizes: list[int] = []

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        return self.rerank_many([(query, hits)])[0]

    def rerank_many(self, pools: Sequence[tuple[str, Sequence[Hit]]]) -> list[list[Hit]]:
        self.sizes.append(len(pools))
        if len(self.sizes) == 1:
            assert self.release.wait(60)
        return self.inner.rerank_many(pools)


@pytest.fixture(scope="module")
def models(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DualEncoder, CrossEncoderReranker, QdrantStore, list[str]]]:
    """The real ``lite`` encoder and the offline MiniLM cross-encoder over SciFact abstracts."""
    before = torch.get_num_threads()
    enc = load_encoder("lite", threads=1)
    # the reranker in fp32: in bf16 (auto on AMX and AVX512-BF16 CPUs) a pool scored beside others, padded
    # to their length, moves by a bf16 step (2.4e-4 on an AMX host); tests/rerank covers bf16
    rr = CrossEncoderReranker(None, max_length=64, precision="fp32")
    ds = BeirDataset.load(data_dir / "scifact", "train")
    docs = list(ds.corpus)[:N_DOCS]
    chunks = [Chunk(chunk_id("sf", ds.doc_text(d), d), "text", d, ds.doc_text(d), None, {}) for d in docs]
    # queries of very different lengths: the batched passes pad, the single ones do not
    queries = sorted((ds.queries[q] for q in list(ds.queries)[:40]), key=len)[::6][:7]
    # the encoder in fp32 for every batch size, so batched and single searches must agree to float
    # rounding; on bf16 hardware (MMRAG_TEXT_PRECISION=auto) they agree to bf16's (test_bf16.py)
    with running(enc, "fp32"), QdrantStore.open(str(tmp_path_factory.mktemp("batching"))) as store:
        name = store.ensure_vector(vector_spec(enc))
        store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), name)
        yield enc, rr, store, queries
    torch.set_num_threads(before)


def same(alone: SearchResult, batched: SearchResult) -> None:
    assert [h.chunk.id for h in batched.hits] == [h.chunk.id for h in alone.hits]
    for a, b in zip(alone.hits, batched.hits, strict=True):
        assert (a.ann_rank, a.final_rank, a.vector) == (b.ann_rank, b.final_rank, b.vector)
        for field in ("dense", "sparse", "fused", "rerank"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None) == (y is None), field
            if x is not None:
                assert y == pytest.approx(x, abs=1e-5), field


STAGES = {
    "dense": {"mode": RetrievalMode.DENSE, "rerank": False},
    "hybrid": {"mode": RetrievalMode.HYBRID, "rerank": False},
    "hybrid+rerank": {"mode": RetrievalMode.HYBRID, "rerank": True},
}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("stages", list(STAGES))
def test_batched_searches_equal_single_ones(
    models: tuple[DualEncoder, CrossEncoderReranker, QdrantStore, list[str]], stages: str
) -> None:
    enc, rr, store, queries = models
    reqs = [
        SearchRequest(text=q, k=5 + i % 3, pool=20, **STAGES[stages])  # type: ignore[arg-type]
        for i, q in enumerate(queries)
    ]
    alone = Retriever(enc, store, reranker=rr)
    expected = [alone.run(r) for r in reqs]

    held_enc, held_rr = HeldEncoder(enc, held=2), HeldReranker(rr)
    # rerank_pairs: room for every pool in one batch (the default, one forward pass, fits one pool)
    # one lane: the held first batch keeps the others waiting (lanes are tested below)
    settings = BatchSettings(max_wait_ms=0, rerank_pairs=1000, lanes=1)
    batcher = SearchBatcher(Retriever(held_enc, store, reranker=held_rr), settings)
    futures = [batcher.submit(reqs[0])]
    wait_until(lambda: held_enc.sizes == [1], "the first search is in the encoder")
    futures += [batcher.submit(r) for r in reqs[1:]]
    n = len(reqs)
    wait_until(lambda: batcher.texts.waiting == n - 1, "the other searches wait at the encoder")
    held_enc.gates[0].set()  # the first search alone, then (rerank) held in the reranker
    if STAGES[stages]["rerank"]:
        wait_until(lambda: held_rr.sizes == [1], "the first search is in the reranker")
    held_enc.gates[1].set()  # the other searches: one encoder pass
    if STAGES[stages]["rerank"]:
        wait_until(lambda: batcher.pools.waiting == n - 1, "the other pools wait at the reranker")
        held_rr.release.set()
    got = [f.result(timeout=120) for f in futures]
    batcher.close()

    assert held_enc.sizes == [1, n - 1]  # one encoder pass for the n - 1 gathered searches
    assert held_rr.sizes == ([1, n - 1] if STAGES[stages]["rerank"] else [])
    for a, b in zip(expected, got, strict=True):
        same(a, b)
    assert batcher.admitted == 0


@pytest.mark.slow
@pytest.mark.integration
def test_run_many_is_one_encoder_pass_with_errors_per_request(
    models: tuple[DualEncoder, CrossEncoderReranker, QdrantStore, list[str]],
) -> None:
    enc, rr, store, queries = models
    held = HeldEncoder(enc, held=0)
    batcher = SearchBatcher(Retriever(held, store, reranker=rr, hybrid=True), BatchSettings(queue_size=1))
    reqs = [SearchRequest(text=q, k=4, pool=12, rerank=True) for q in queries]
    reqs.insert(2, SearchRequest(text=queries[0], mode=RetrievalMode.DENSE, k=3))
    reqs.insert(4, SearchRequest(text="   "))  # fails alone: an empty query
    out = batcher.run_many(reqs)  # more requests than queue_size: a caller's batch is not bounded
    batcher.close()
    assert held.sizes == [len(queries)]  # every distinct text in one pass (the repeat is shared)
    assert isinstance(out[4], ConfigError) and "empty" in str(out[4])
    alone = Retriever(enc, store, reranker=rr, hybrid=True)
    for req, res in zip(reqs, out, strict=True):
        if req.text and req.text.strip():
            assert isinstance(res, SearchResult)
            same(alone.run(req), res)
    assert batcher._encoded == {}  # the up-front vectors are dropped after the batch


@pytest.mark.slow
@pytest.mark.integration
def test_rerank_many_equals_rerank_per_pool(
    models: tuple[DualEncoder, CrossEncoderReranker, QdrantStore, list[str]],
) -> None:
    enc, rr, store, queries = models
    r = Retriever(enc, store, pool=10)
    pools = [(q, r.search(q, k=10, rerank=False)) for q in queries[:4]]
    pools.append((queries[0], []))
    many = rr.rerank_many(pools)
    assert many[-1] == []
    for (q, hits), got in zip(pools[:-1], many[:-1], strict=True):
        one = rr.rerank(q, hits)
        assert [h.chunk.id for h in got] == [h.chunk.id for h in one]
        assert [h.rerank for h in got] == pytest.approx([h.rerank for h in one], abs=1e-5)


def test_full_queue_is_refused_at_once(tmp_path: Path) -> None:
    enc = HashEncoder()
    held = HeldEncoder(enc)
    with QdrantStore.open(str(tmp_path / "store")) as store:
        name = store.ensure_vector(vector_spec(enc))
        cid = chunk_id("t", "cats sleep", 0)
        store.upsert_chunks(
            [Chunk(cid, "text", "a.txt", "cats sleep", None, {})], enc.encode_text(["x"]), name
        )
        batcher = SearchBatcher(Retriever(held, store), BatchSettings(max_batch=2, queue_size=2, lanes=1))
        first = [batcher.submit(SearchRequest(text="cats")) for _ in range(2)]
        wait_until(lambda: len(held.sizes) == 1, "a search holds the encoder")
        with pytest.raises(OverloadedError) as err:
            batcher.submit(SearchRequest(text="cats"))
        assert err.value.retry_after >= 1 and batcher.admitted == 2
        held.gates[0].set()
        assert all(f.result(timeout=60).hits[0].chunk.id == cid for f in first)
        wait_until(lambda: batcher.admitted == 0, "the admitted searches are released")
        assert batcher.run(SearchRequest(text="cats")).hits[0].chunk.id == cid  # room again
        batcher.close()


def test_searches_that_would_wait_too_long_are_refused(tmp_path: Path) -> None:
    enc = HashEncoder()
    held = HeldEncoder(enc)
    with QdrantStore.open(str(tmp_path / "store")) as store:
        store.ensure_vector(vector_spec(enc))
        settings = BatchSettings(max_batch=4, queue_size=100, max_queue_wait_s=1.5, lanes=1)
        batcher = SearchBatcher(Retriever(held, store), settings)
        for t in range(10):  # searches have been finishing one a second while busy
            batcher.drain.done(float(t), still_admitted=5)
        first = batcher.submit(SearchRequest(text="cats"))  # nothing ahead: 0 s
        wait_until(lambda: len(held.sizes) == 1, "a search holds the encoder")
        second = batcher.submit(SearchRequest(text="cats"))  # one ahead: about 1 s
        with pytest.raises(OverloadedError, match=r"about 2\.0 s of work") as err:
            batcher.submit(SearchRequest(text="cats"))  # two ahead: about 2 s > 1.5 s
        assert err.value.retry_after == 1
        held.gates[0].set()
        assert first.result(60).hits == [] and second.result(60).hits == []
        for t in range(10):  # now a slow queue: a caller's own batch is still never refused
            batcher.drain.done(100.0 * t, still_admitted=5)
        assert all(isinstance(r, SearchResult) for r in batcher.run_many([SearchRequest(text="cats")] * 3))
        batcher.close()


class BlockingReranker:
    """Holds every rerank call until ``release`` is set; keeps the order it was given."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        self.calls += 1
        assert self.release.wait(60)
        return list(hits)


def test_the_text_gather_does_not_wait_for_searches_past_it(tmp_path: Path) -> None:
    """A search held in the reranker will not come back to the encoder: a new search's text call
    is ready to run alone instead of waiting max_wait_ms for it (issue #16); the rerank gather
    still counts it."""
    enc = HashEncoder()
    held = HeldEncoder(enc, held=0)
    rr = BlockingReranker()
    with QdrantStore.open(str(tmp_path / "store")) as store:
        name = store.ensure_vector(vector_spec(enc))
        cid = chunk_id("t", "cats sleep", 0)
        store.upsert_chunks(
            [Chunk(cid, "text", "a.txt", "cats sleep", None, {})], enc.encode_text(["x"]), name
        )
        settings = BatchSettings(max_batch=4, max_wait_ms=1000, lanes=1)
        batcher = SearchBatcher(Retriever(held, store, reranker=rr), settings)
        first = batcher.submit(SearchRequest(text="cats", mode=RetrievalMode.DENSE, rerank=True))
        wait_until(lambda: rr.calls == 1, "the first search is held in the reranker")
        with batcher._lock:  # as if a second search were running, before its text call
            batcher._admitted += 1
            batcher._in_run += 1
        assert batcher._all_texts_here(1) and not batcher._all_here(1)
        with batcher._lock:
            batcher._admitted -= 1
            batcher._in_run -= 1
        second = batcher.submit(SearchRequest(text="dogs", mode=RetrievalMode.DENSE, rerank=False))
        assert second.result(60).hits[0].chunk.id == cid and held.sizes == [1, 1]
        assert not first.done()
        rr.release.set()
        assert first.result(60).hits[0].chunk.id == cid
        wait_until(lambda: batcher.admitted == 0, "both searches are released")
        assert not batcher._past_text  # forgotten with the searches
        batcher.close()


def test_drain_rate() -> None:
    rate = DrainRate(window=4)
    assert rate.wait(10) is None and rate.retry_after(5) == 1  # no estimate yet: no refusal
    rate.started(0.0, admitted_before=0)
    for t in (5.0, 6.0, 7.0, 8.0, 9.0):  # the window keeps the last 4 gaps: 1 s per search
        rate.done(t, still_admitted=3)
    assert rate.seconds_per_search() == 1.0 and rate.wait(3) == 3.0
    rate.done(10.0, still_admitted=0)  # idle from here: the gap to the next busy period is not work
    rate.started(100.0, admitted_before=0)
    rate.done(101.0, still_admitted=1, counted=False)  # cancelled before it ran: no sample
    rate.done(103.0, still_admitted=0)
    assert rate.seconds_per_search() == (1 + 1 + 1 + 2) / 4 and rate.retry_after(2) == 3


def test_abandoned_search_leaves_the_batch(tmp_path: Path) -> None:
    enc = HashEncoder()
    held = HeldEncoder(enc)
    with QdrantStore.open(str(tmp_path / "store")) as store:
        store.ensure_vector(vector_spec(enc))
        batcher = SearchBatcher(Retriever(held, store), BatchSettings(max_batch=4, max_wait_ms=0, lanes=1))
        first = batcher.submit(SearchRequest(text="first"))
        wait_until(lambda: len(held.sizes) == 1, "the first search holds the encoder")
        gone = batcher.submit(SearchRequest(text="gone"))
        wait_until(lambda: batcher.texts.waiting == 1, "the second search waits at the encoder")
        kept = batcher.submit(SearchRequest(text="kept"))
        wait_until(lambda: batcher.texts.waiting == 2, "the third search waits at the encoder")
        batcher.abandon(gone)  # its client timed out while it waited
        held.gates[0].set()
        assert first.result(60).hits == [] and kept.result(60).hits == []
        with pytest.raises(SearchAbandonedError):
            gone.result(60)
        assert held.sizes == [1, 1]  # the next pass encoded only the search still waited for
        batcher.close()


def test_settings_are_checked() -> None:
    assert BatchSettings(lanes=3).lane_count() == 3 and BatchSettings().lane_count() >= 1
    bad_values = ({"max_batch": 0}, {"max_wait_ms": -1}, {"queue_size": 0}, {"max_queue_wait_s": 0})
    for bad in (*bad_values, {"rerank_pairs": 0}, {"lanes": 0}):
        with pytest.raises(ConfigError):
            BatchSettings(**bad)  # type: ignore[arg-type]
