"""Micro-batched searches (issue #16): concurrent searches share one encoder pass and one rerank
batch, and every search's hits equal what it gets alone: same ids and ranks, scores within 1e-5.

The batches are formed deterministically, never by timing: the first search's encoder (and rerank)
call is held on an Event until every other search is waiting to join the next batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from mmrag.encoders import load_encoder
from mmrag.encoders.base import DualEncoder, FloatArray, vector_spec
from mmrag.errors import ConfigError, MmragError, OverloadedError, SearchAbandonedError
from mmrag.eval.datasets import BeirDataset
from mmrag.rerank import CrossEncoderReranker
from mmrag.retriever import RetrievalMode, Retriever, SearchRequest, SearchResult
from mmrag.retriever.backlog import DrainRate
from mmrag.retriever.batching import BatchSettings, SearchBatcher
from mmrag.retriever.gather import Gather
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit, chunk_id
from tests.fakes import HashEncoder

N_DOCS = 120


def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Wait for a state (not a timing assertion: the bound only turns a hang into a failure)."""
    deadline = time.monotonic() + 60
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.005)


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
    # fp32 for every batch size, so batched and single searches must agree to float rounding; with
    # bf16 batches (MMRAG_TEXT_PRECISION=auto on AMX CPUs) they agree to bf16's (tests/encoders/test_bf16.py)
    enc.set_runtime("auto", "fp32")  # type: ignore[attr-defined]
    rr = CrossEncoderReranker(None, max_length=64)
    ds = BeirDataset.load(data_dir / "scifact", "train")
    docs = list(ds.corpus)[:N_DOCS]
    chunks = [Chunk(chunk_id("sf", ds.doc_text(d), d), "text", d, ds.doc_text(d), None, {}) for d in docs]
    # queries of very different lengths: the batched passes pad, the single ones do not
    queries = sorted((ds.queries[q] for q in list(ds.queries)[:40]), key=len)[::6][:7]
    with QdrantStore.open(str(tmp_path_factory.mktemp("batching"))) as store:
        name = store.ensure_vector(vector_spec(enc))
        store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), name)
        yield enc, rr, store, queries
    enc.set_runtime("auto")  # type: ignore[attr-defined]
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


def first_batch_held(release: threading.Event, sizes: list[int]) -> Callable[[list[int]], list[int]]:
    """A batched square that records each batch's size and holds the first inside until ``release``."""

    def square(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        if len(sizes) == 1:
            assert release.wait(60)
        return [x * x for x in xs]

    return square


def test_gather_fails_only_the_bad_call() -> None:
    def square(xs: list[int]) -> list[int]:
        if any(x < 0 for x in xs):
            raise ValueError("negative")
        return [x * x for x in xs]

    g: Gather[int, int] = Gather(square, max_batch=8, max_wait_ms=50, ready=lambda n: n >= 3)
    out: dict[int, Any] = {}

    def call(x: int) -> None:
        try:
            out[x] = g([x])
        except MmragError as exc:  # pragma: no cover - would be the wrong error type
            out[x] = exc
        except ValueError as exc:
            out[x] = exc

    threads = [threading.Thread(target=call, args=(x,)) for x in (2, -1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out[2] == [4] and out[3] == [9] and isinstance(out[-1], ValueError)
    assert g.calls == 3


@pytest.mark.parametrize("lanes", [1, 2])
def test_gather_runs_up_to_lanes_batches_at_once(lanes: int) -> None:
    """The first batch is held inside ``fn``: with a second lane the next calls form a batch and
    finish meanwhile; with one they wait for it. A leader's wait counts the calls running."""
    release = threading.Event()
    sizes: list[int] = []
    admitted = [0]  # calls started and not returned, as SearchBatcher counts its searches
    lock = threading.Lock()
    square = first_batch_held(release, sizes)

    def all_here(n: int) -> bool:
        with lock:
            return n >= admitted[0]

    # max_wait 60 s: batches form when every admitted call waits or runs, never by timing
    g: Gather[int, int] = Gather(square, 8, 60_000, ready=all_here, lanes=lambda: lanes)
    out: dict[int, list[int]] = {}

    def call(x: int) -> None:
        out[x] = g([x])
        with lock:
            admitted[0] -= 1
        g.poke()

    def start(xs: tuple[int, ...]) -> list[threading.Thread]:
        with lock:
            admitted[0] += len(xs)
        threads = [threading.Thread(target=call, args=(x,)) for x in xs]
        for t in threads:
            t.start()
        return threads

    threads = start((1,))
    wait_until(lambda: sizes == [1], "the first call runs alone")
    threads += start((2, 3))
    if lanes == 1:
        wait_until(lambda: g.waiting == 2, "the other calls wait for the only lane")
        assert sizes == [1] and not out
    else:
        wait_until(lambda: out.get(2) == [4] and out.get(3) == [9], "a second lane served them")
        assert 1 not in out  # the first batch is still held
    release.set()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9]} and sizes == [1, 2]
    assert g.batches == 2 and g.calls == 3


@pytest.mark.parametrize(
    ("lanes", "busy", "sizes"), [(1, 0, [4]), (2, 0, [2, 2]), (3, 0, [2, 2]), (2, 1, [4]), (3, 1, [2, 2])]
)
def test_waiting_calls_are_shared_out_over_the_free_lanes(lanes: int, busy: int, sizes: list[int]) -> None:
    """Four calls waiting with two free lanes run as two batches of two side by side, not one
    batch of four with the second lane idle; one free lane takes all, and no batch is split
    below two calls (a third lane stays free). A lane other work holds (``busy``: a rerank pass)
    is not free: the four run as one batch rather than two halves one after the other."""
    seen: list[int] = []
    four_here = threading.Barrier(len(sizes), timeout=10)

    def square(xs: list[int]) -> list[int]:
        seen.append(len(xs))
        four_here.wait()  # with lanes > 1, every batch waits until all run at once
        return [x * x for x in xs]

    # never ready by timing (60 s): the leader takes its batch once all four calls wait
    g: Gather[int, int] = Gather(
        square, 8, 60_000, ready=lambda n: n >= 4, lanes=lambda: lanes, busy=lambda: busy
    )
    out: dict[int, list[int]] = {}

    def call(x: int) -> None:
        out[x] = g([x])

    threads = [threading.Thread(target=call, args=(x,)) for x in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9], 4: [16]}
    assert sorted(seen, reverse=True) == sizes and g.batches == len(sizes)


@pytest.mark.parametrize("partner", [True, False])
def test_a_lone_text_waits_for_a_partner_while_another_batch_runs(partner: bool) -> None:
    """``min_batch=2``: with a batch running, a call alone in line waits for a second, although
    ``ready`` says all have come (two in one pass cost less each); once nothing runs it goes alone
    at once. Never ready by timing (60 s)."""
    release = threading.Event()
    sizes: list[int] = []
    square = first_batch_held(release, sizes)

    g: Gather[int, int] = Gather(square, 8, 60_000, ready=lambda n: True, lanes=lambda: 2, min_batch=2)
    out: dict[int, list[int]] = {}
    threads: list[threading.Thread] = []

    def start(x: int) -> None:
        threads.append(threading.Thread(target=lambda: out.__setitem__(x, g([x]))))
        threads[-1].start()

    start(1)
    wait_until(lambda: sizes == [1], "the first call runs (nothing else runs: no wait)")
    start(2)
    wait_until(lambda: g.waiting == 1, "the second call waits in line")
    time.sleep(0.2)
    assert sizes == [1] and 2 not in out  # a free lane, yet it waits for a partner
    if partner:
        start(3)
        wait_until(lambda: out.get(2) == [4] and out.get(3) == [9], "the pair ran in the free lane")
        assert sizes == [1, 2]
        release.set()
    else:
        release.set()  # the running batch ends: the lone call goes now, not after max_wait
        wait_until(lambda: out.get(2) == [4], "the lone call ran once nothing else ran")
        assert sizes == [1, 1]
    for t in threads:
        t.join(60)
    assert out[1] == [1]


def test_a_call_whose_checks_raise_fails_alone() -> None:
    """``size`` raising fails only that caller, before it joins the line; ``cancelled`` raising
    while a batch is taken fails only that call, and the calls taken with it still run (before,
    the error left them taken but never run: their threads hung)."""

    def weight(x: int) -> int:
        if x == 0:
            raise ValueError("no size")
        return 1

    def gone() -> bool:
        raise RuntimeError("cannot tell")

    def square(xs: list[int]) -> list[int]:
        return [x * x for x in xs]

    pair: Gather[int, int] = Gather(square, 8, 60_000, ready=lambda n: n >= 2, size=weight)
    out: dict[int, Any] = {}
    first = threading.Thread(target=lambda: out.__setitem__(4, pair([4])))
    first.start()
    wait_until(lambda: pair.waiting == 1, "a leader waits for a second call")
    with pytest.raises(ValueError, match="no size"):  # raised here, not in the leader's thread
        pair([0])
    assert pair.waiting == 1 and 4 not in out
    assert pair([5]) == [25]  # the second call: the pair runs
    first.join(20)
    assert out[4] == [16] and pair.batches == 1

    g: Gather[int, int] = Gather(square, 8, 60_000, ready=lambda n: n >= 3, size=weight)

    def call(x: int) -> None:
        try:
            out[x] = g([x], cancelled=gone if x == 2 else None)
        except RuntimeError as exc:
            out[x] = exc

    threads = [threading.Thread(target=call, args=(x,)) for x in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert out[1] == [1] and out[3] == [9] and isinstance(out[2], RuntimeError)
    assert g.calls == 2 and g.waiting == 0


def test_an_interrupt_while_a_batch_is_taken_leaves_no_call_hanging() -> None:
    """``cancelled`` raising an interrupt (not an Exception) in the leader's thread: the leader
    raises it, the calls already out of line get an error instead of waiting forever, and the
    call still in line runs (after ``max_wait``: nobody says the batch is complete)."""

    def interrupt() -> bool:
        raise KeyboardInterrupt

    g: Gather[int, int] = Gather(lambda xs: [x * x for x in xs], 8, 300, ready=lambda n: n >= 3)
    out: dict[int, Any] = {}

    def call(x: int) -> None:
        try:
            out[x] = g([x], cancelled=interrupt if x == 2 else None)
        except BaseException as exc:  # noqa: BLE001 - the test records what each caller got
            out[x] = exc

    threads = []
    for x in (1, 2, 3):
        threads.append(threading.Thread(target=call, args=(x,)))
        threads[-1].start()
        if x < 3:
            wait_until(lambda n=x: g.waiting == n, f"{x} call(s) in line")  # type: ignore[misc]
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert isinstance(out[1], KeyboardInterrupt) and isinstance(out[2], MmragError)
    assert out[3] == [9] and g.waiting == 0


def test_calls_left_by_a_shared_out_batch_do_not_wait_again() -> None:
    """With nobody saying the batch is complete (``ready`` never true), the leader waits
    ``max_wait``; the calls it leaves for the second lane have waited as long and lead at once,
    so both batches start together instead of one ``max_wait`` apart."""
    starts: list[float] = []
    go = threading.Event()

    def square(xs: list[int]) -> list[int]:
        starts.append(time.monotonic())
        return [x * x for x in xs]

    g: Gather[int, int] = Gather(square, 8, 2000, ready=lambda n: False, lanes=lambda: 2)
    out: dict[int, list[int]] = {}

    def call(x: int) -> None:
        go.wait(10)
        out[x] = g([x])

    threads = [threading.Thread(target=call, args=(x,)) for x in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9], 4: [16]} and len(starts) == 2
    assert starts[1] - starts[0] < 1.5  # one wait of 2 s in all, not two (generous for a slow host)


def test_a_call_left_in_line_leads_in_the_free_lane_at_once() -> None:
    """A leader that takes a full batch and leaves a call waiting wakes it: with a second lane
    free it runs now, not when the first batch ends (before the fix it slept until then)."""
    release = threading.Event()
    sizes: list[int] = []
    square = first_batch_held(release, sizes)

    # weights 1, 1, 2 against max_batch 3: the leader waits for more until the third call comes,
    # then takes the first two (the third does not fit); never ready by timing (60 s)
    g: Gather[int, int] = Gather(
        square, 3, 60_000, ready=lambda n: False, size=lambda x: 2 if x == 3 else 1, lanes=lambda: 2
    )
    out: dict[int, list[int]] = {}
    threads: list[threading.Thread] = []

    def call(x: int) -> None:
        out[x] = g([x])

    for x in (1, 2, 3):
        threads.append(threading.Thread(target=call, args=(x,)))
        threads[-1].start()
        if x < 3:
            wait_until(lambda n=x: g.waiting == n, f"{x} call(s) wait: the first leads")  # type: ignore[misc]
    wait_until(lambda: out.get(3) == [9], "the call left in line ran in the second lane")
    assert sizes == [2, 1] and 1 not in out
    release.set()
    for t in threads:
        t.join(60)
    assert out == {1: [1], 2: [4], 3: [9]}


def test_settings_are_checked() -> None:
    assert BatchSettings(lanes=3).lane_count() == 3 and BatchSettings().lane_count() >= 1
    bad_values = ({"max_batch": 0}, {"max_wait_ms": -1}, {"queue_size": 0}, {"max_queue_wait_s": 0})
    for bad in (*bad_values, {"rerank_pairs": 0}, {"lanes": 0}):
        with pytest.raises(ConfigError):
            BatchSettings(**bad)  # type: ignore[arg-type]
