"""Dynamic micro-batching: concurrent searches share one text-encoder pass and one rerank batch.

A :class:`SearchBatcher` runs :class:`~mmrag.retriever.request.SearchRequest`\\ s for many callers
(the API's clients, LangChain's ``abatch``) on its own threads, through a view of the retriever
whose encoder and reranker are *gathering* wrappers: text-encoder calls that arrive within
``max_wait_ms`` of each other (up to ``max_batch`` texts) become one forward pass, and the rerank
calls of those searches become one scoring pass over their (query, document) pairs (up to
``rerank_pairs``: on CPU a bigger rerank batch costs the same per pair, see BatchSettings). The store
searches and the fusion still run per query, so every request keeps its own ``k``, pool, filters,
tenant and stages, and its hits equal what :meth:`Retriever.run` gives alone (up to float rounding
of padded batches; where gathered text batches run on the tower's bf16 copy, i.e.
``MMRAG_TEXT_PRECISION=auto`` on CPUs with AMX or AVX512-BF16, up to bf16 rounding: query vectors
within cosine 0.999, scores within ~1e-3, at about half the CPU per query; ``fp32`` keeps them bit-stable).
Batching at the model calls, not around the pipeline, means every stage the
retriever runs (now or later) runs unchanged.

A gathering wait ends early once as many calls wait (or run in a batch) as searches are admitted (up
to ``max_batch``), so one client alone never waits ``max_wait_ms``; the text gather counts only the
searches running on a thread that still need a query vector (not those queued for a thread, past it,
searching the store or reranking, or without text), as only those can join it. Up
to ``lanes`` batches run at once, one per forward pass the cores fit beside each other (2 on 2 cores
at 1 torch thread), and the calls waiting when a batch is taken are shared out over the free lanes
(free of the process's other forward passes too: a rerank pass or an ingest batch holds one). A
lone text waits up to ``max_wait_ms`` for a second while another pass runs (its searches come back
soon): in-process, 8 callers, 3 alternating rounds, mean text batch 2.4 -> 2.8, median 223 -> 246
queries/s.
:meth:`SearchBatcher.run_many` (a caller's own batch, e.g. LangChain's ``batch``) encodes all its
texts in one call up front, so its encoder pass does not depend on timing. The queue is bounded:
with ``queue_size`` searches admitted (running or waiting), or when those would take over
``max_queue_wait_s`` to finish at the rate searches have been finishing
(:mod:`mmrag.retriever.backlog`), :meth:`SearchBatcher.submit` raises
:class:`~mmrag.errors.OverloadedError` at once (the API answers ``503`` with ``Retry-After``)
instead of letting the search wait into a timeout.
"""

from __future__ import annotations

import contextvars
import copy
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from mmrag.encoders.lanes import FORWARDS
from mmrag.errors import ConfigError, MmragError, OverloadedError
from mmrag.retriever.backlog import DrainRate
from mmrag.retriever.gather import Gather

if TYPE_CHECKING:
    from PIL import Image

    from mmrag.encoders.base import DualEncoder, FloatArray
    from mmrag.retriever.base import Reranker
    from mmrag.retriever.core import Retriever, SearchResult
    from mmrag.retriever.request import SearchRequest
    from mmrag.types import Hit

__all__ = ["BatchSettings", "SearchBatcher"]

# A lone query text waits (up to max_wait_ms) for a second while another encoder pass runs: a pair
# costs less per text than one alone (AVX512-BF16, 1 thread, bf16: 4.6 ms a text for two, 5.4 ms for
# one alone, 8.2 ms in fp32; BENCHMARKS.md "Text path", 2026-12-06).
PAIR = 2


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How searches are gathered and how many may wait.

    Attributes:
        max_batch: Most texts per encoder pass and most rerank pools per scoring pass; also the
            number of searches run at once (1: no batching, searches still share the bounded queue).
        max_wait_ms: How long the first call of a batch waits for others (0: never waits).
        rerank_pairs: Most (query, document) pairs per rerank batch (a larger pool runs alone).
            On CPU a cross-encoder costs the same per pair in any batch, so pools gathered past
            one forward pass (the reranker's ``batch_size``, 32) only make their searches wait for
            each other; raise it where bigger batches are cheaper per pair (a GPU).
        queue_size: Searches admitted at once, running or waiting; one more is refused with
            :class:`~mmrag.errors.OverloadedError`. ``None``: no bound (a caller's own batch).
        max_queue_wait_s: Also refuse a search when the ones admitted would take longer than
            this to finish, at the rate searches have been finishing (``None``: no time bound).
        lanes: Encoder (and rerank) batches that may run at once. ``None``: as many as the cores
            fit at torch's thread count (:func:`~mmrag.encoders.lanes.parallel_lanes`; 2 on 2
            cores with ``MMRAG_THREADS=1``, so the second core is not left idle).

    Example:
        >>> BatchSettings(max_batch=16, max_wait_ms=2.0).queue_size
        256
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    rerank_pairs: int = 32
    queue_size: int | None = 256
    max_queue_wait_s: float | None = None
    lanes: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.rerank_pairs < 1:
            raise ConfigError(f"rerank_pairs must be >= 1, got {self.rerank_pairs}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"max_wait_ms must be between 0 and 1000, got {self.max_wait_ms}")
        if self.queue_size is not None and self.queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.max_queue_wait_s is not None and self.max_queue_wait_s <= 0:
            raise ConfigError(f"max_queue_wait_s must be > 0, got {self.max_queue_wait_s}")
        if self.lanes is not None and self.lanes < 1:
            raise ConfigError(f"lanes must be >= 1, got {self.lanes}")

    def lane_count(self) -> int:
        """:attr:`lanes`, or what the cores fit now when it is ``None``."""
        return self.lanes or FORWARDS.limit()


@runtime_checkable
class BatchReranker(Protocol):
    """A reranker that can score several queries' pools in one pass (``CrossEncoderReranker``)."""

    def rerank_many(self, pools: Sequence[tuple[str, Sequence[Hit]]]) -> list[list[Hit]]: ...


class _GatheredEncoder:
    """The encoder seen by batched searches: text calls gathered, images passed through."""

    def __init__(self, inner: DualEncoder, gather: Gather[str, FloatArray], batcher: SearchBatcher) -> None:
        self.inner = inner
        self._gather = gather
        self._batcher = batcher
        self.id, self.dim, self.spec, self.aligned = inner.id, inner.dim, inner.spec, inner.aligned

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        found = [self._batcher._known(t) for t in texts]  # encoded up front by run_many
        rows = [f for f in found if f is not None]
        if len(rows) != len(found):
            self._batcher._text_done(False)  # (again, for a search that widens: group_by)
            rows = self._gather(list(texts), self._batcher._abandoned())
        self._batcher._text_done()
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def encode_image(
        self, images: Sequence[Image.Image | str | Path], *, batch_size: int | None = None
    ) -> FloatArray:
        return self.inner.encode_image(images, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class _GatheredReranker:
    """The reranker seen by batched searches: each query's pool joins one scoring pass."""

    def __init__(
        self, inner: Reranker, gather: Gather[tuple[str, list[Hit]], list[Hit]], batcher: SearchBatcher
    ) -> None:
        self.inner = inner
        self.id = getattr(inner, "id", None)
        self._gather = gather
        self._batcher = batcher

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        if not hits:  # nothing to score (a filter that matched nothing): no gather, no wait
            return []
        return self._gather([(query, list(hits))], self._batcher._abandoned())[0]


class SearchBatcher:
    """Runs searches for many callers, gathering their encoder and rerank calls into batches.

    Args:
        retriever: The retriever to run (not changed: the batcher searches through a copy whose
            encoder and reranker gather calls).
        settings: Batch size, wait and queue bound (:class:`BatchSettings`).

    Example:
        >>> batcher = SearchBatcher(retriever, BatchSettings(max_batch=16))        # doctest: +SKIP
        >>> futures = [batcher.submit(SearchRequest(text=q)) for q in queries]     # doctest: +SKIP
        >>> [f.result().hits[0].chunk.source for f in futures]                     # doctest: +SKIP
    """

    def __init__(self, retriever: Retriever, settings: BatchSettings | None = None) -> None:
        self.settings = s = settings or BatchSettings()
        self._lock = threading.Lock()
        self._admitted = 0  # running or waiting for a thread; the gathers wait for up to this many
        self._in_run = 0  # searches running on a thread: the only ones that can reach the gathers
        self._past_text: set[threading.Event] = set()  # of those, the ones done with the text gather
        self._encoded: dict[str, tuple[FloatArray, int]] = {}  # run_many's texts: vector, users
        self.drain = DrainRate()  # how fast the queue empties: its time bound and Retry-After
        self._abandon: dict[Future[SearchResult], threading.Event] = {}  # set: its client is gone
        self._local = threading.local()  # the search a thread runs (its abandon flag)
        self.texts: Gather[str, FloatArray] = Gather(
            self._encode, s.max_batch, s.max_wait_ms, self._all_texts_here, lanes=s.lane_count,
            busy=FORWARDS.in_use, min_batch=PAIR,
        )  # fmt: skip
        self.pools: Gather[tuple[str, list[Hit]], list[Hit]] = Gather(
            self._rerank, s.rerank_pairs, s.max_wait_ms, self._all_here, size=lambda pool: len(pool[1]),
            lanes=s.lane_count, busy=FORWARDS.in_use,
        )  # fmt: skip
        self.retriever = copy.copy(retriever)  # the caller's retriever keeps its own models
        self._inner_encoder = retriever.encoder
        self.retriever.encoder = _GatheredEncoder(retriever.encoder, self.texts, self)
        self._inner_reranker = retriever.reranker
        if retriever.reranker is not None:
            self.retriever.reranker = _GatheredReranker(retriever.reranker, self.pools, self)
        # max_batch threads: enough searches in flight at once to fill one batch at each stage.
        self._pool = ThreadPoolExecutor(s.max_batch, thread_name_prefix="mmrag-search")

    # -- the batched model calls ----------------------------------------------------------
    def _encode(self, texts: list[str]) -> list[FloatArray]:
        # the whole batch in one forward pass (max_batch bounds its size)
        return list(self._inner_encoder.encode_text(texts, batch_size=max(1, len(texts))))

    def _rerank(self, pools: list[tuple[str, list[Hit]]]) -> list[list[Hit]]:
        inner = self._inner_reranker
        assert inner is not None  # only gathered when the retriever has a reranker
        if isinstance(inner, BatchReranker):
            return inner.rerank_many(pools)
        return [inner.rerank(q, hits) for q, hits in pools]  # a reranker without the batch hook

    def _all_here(self, waiting: int) -> bool:
        with self._lock:
            return waiting >= min(self._admitted, self.settings.max_batch)

    def _all_texts_here(self, waiting: int) -> bool:
        with self._lock:
            return waiting >= min(self._in_run - len(self._past_text), self.settings.max_batch)

    def _text_done(self, done: bool = True) -> None:
        """The running search has its query vector (``done``), or is about to ask for one: whether
        the text gather waits for it."""
        flag: threading.Event | None = getattr(self._local, "abandon", None)
        if flag is None:
            return
        with self._lock:
            if done:
                self._past_text.add(flag)
            else:
                self._past_text.discard(flag)
        if done:
            self.texts.poke()

    def _known(self, text: str) -> FloatArray | None:
        with self._lock:
            hit = self._encoded.get(text)
        return None if hit is None else hit[0]

    def _abandoned(self) -> Callable[[], bool] | None:
        """The running search's "client gone" check, handed to the gathers with its call."""
        flag: threading.Event | None = getattr(self._local, "abandon", None)
        return None if flag is None else flag.is_set

    # -- running searches -----------------------------------------------------------------
    @property
    def admitted(self) -> int:
        """Searches admitted and not finished (running or waiting for a thread)."""
        with self._lock:
            return self._admitted

    def submit(self, req: SearchRequest, *, bounded: bool = True) -> Future[SearchResult]:
        """Queue one search; its future gives the :class:`SearchResult` (or raises its error).

        Raises:
            OverloadedError: ``queue_size`` searches are already admitted, or the ones admitted
                would take over ``max_queue_wait_s`` to finish (only when ``bounded``).
        """
        with self._lock:
            if bounded:
                self._admit_locked()
            self.drain.started(time.monotonic(), self._admitted)
            self._admitted += 1
        flag = threading.Event()
        try:
            # in the caller's context: its current span (a web request's, a chain's) parents mmrag.search
            fut = self._pool.submit(contextvars.copy_context().run, self._run, req, flag)
        except BaseException:
            self._release(None)
            raise
        with self._lock:
            self._abandon[fut] = flag
        fut.add_done_callback(self._release)  # also when cancelled before it ran (a timed-out client)
        return fut

    def _run(self, req: SearchRequest, flag: threading.Event) -> SearchResult:
        self._local.abandon = flag
        with self._lock:
            self._in_run += 1
            if not (req.text and req.text.strip()):  # nothing to encode: never at the text gather
                self._past_text.add(flag)
        try:
            return self.retriever.run(req)
        finally:
            self._local.abandon = None
            with self._lock:
                self._in_run -= 1
                self._past_text.discard(flag)
            self.texts.poke()

    def abandon(self, fut: Future[SearchResult]) -> None:
        """The client stopped waiting (timed out): never start the search, or drop it from the
        batches it has not joined yet, so its work goes to the searches still waited for."""
        if not fut.cancel():
            with self._lock:
                flag = self._abandon.get(fut)
            if flag is not None:
                flag.set()

    def _admit_locked(self) -> None:
        """Refuse a search when the queue is full or would take too long to reach it."""
        n, limit, max_s = self._admitted, self.settings.queue_size, self.settings.max_queue_wait_s
        if limit is not None and n >= limit:
            retry = self.drain.retry_after(n - limit + 1)
            raise OverloadedError(f"{n} searches are queued (the limit); retry in {retry} s", retry)
        wait = self.drain.wait(n) if max_s is not None else None
        if max_s is not None and wait is not None and wait > max_s:
            retry = max(1, math.ceil(wait - max_s))
            raise OverloadedError(
                f"{n} searches are queued, about {wait:.1f} s of work (the limit is {max_s:g} s); "
                f"retry in {retry} s",
                retry,
            )

    def _release(self, fut: Future[SearchResult] | None) -> None:
        with self._lock:
            self._admitted -= 1
            if fut is not None:
                self._abandon.pop(fut, None)
            ran = fut is not None and not fut.cancelled()
            self.drain.done(time.monotonic(), self._admitted, counted=ran)
        # a rerank leader waiting for "every admitted search" may now have them all (the text
        # gather counts running searches: _run pokes it when one ends)
        self.pools.poke()

    def run(self, req: SearchRequest) -> SearchResult:
        """One search, blocking (bounded queue)."""
        return self.submit(req).result()

    def run_many(self, requests: Sequence[SearchRequest]) -> list[SearchResult | MmragError]:
        """A caller's own batch: every request admitted (no bound), gathered with any others in
        flight; per request its result or its :class:`~mmrag.errors.MmragError`."""
        texts = list(dict.fromkeys(r.text for r in requests if r.text is not None and r.text.strip()))
        vecs = self.texts(texts) if texts else []  # one gathered pass for the whole batch
        with self._lock:
            for t, v in zip(texts, vecs, strict=True):
                self._encoded[t] = (v, self._encoded.get(t, (v, 0))[1] + 1)
        try:
            futures = [self.submit(r, bounded=False) for r in requests]
            out: list[SearchResult | MmragError] = []
            for f in futures:
                try:
                    out.append(f.result())
                except MmragError as exc:
                    out.append(exc)
            return out
        finally:
            with self._lock:
                for t in texts:
                    v, users = self._encoded[t]
                    if users > 1:
                        self._encoded[t] = (v, users - 1)
                    else:
                        del self._encoded[t]

    def stats(self) -> dict[str, int]:
        """Searches admitted now, the lanes in use (batches that may run at once), encoder and
        rerank batches run and the calls they served."""
        return {
            "admitted": self.admitted,
            "lanes_now": self.settings.lane_count(),
            "encode_batches": self.texts.batches,
            "encode_calls": self.texts.calls,
            "rerank_batches": self.pools.batches,
            "rerank_calls": self.pools.calls,
        }

    def close(self) -> None:
        """Finish the admitted searches and stop the threads."""
        self._pool.shutdown(wait=True)
