"""Dynamic micro-batching: concurrent searches share one text-encoder pass and one rerank batch.

A :class:`SearchBatcher` runs :class:`~mmrag.retriever.request.SearchRequest`\\ s for many callers
(the API's clients, LangChain's ``abatch``) on its own threads, through a view of the retriever
whose encoder and reranker are *gathering* wrappers: text-encoder calls that arrive within
``max_wait_ms`` of each other (up to ``max_batch`` texts) become one forward pass, and the rerank
calls of those searches become one scoring pass over all their (query, document) pairs. The store
searches and the fusion still run per query, so every request keeps its own ``k``, pool, filters,
tenant and stages, and its hits equal what :meth:`Retriever.run` gives alone (up to float rounding
of padded batches). Batching at the model calls, not around the pipeline, means every stage the
retriever runs (now or later) runs unchanged.

A gathering wait ends early once as many calls wait as searches are admitted (up to
``max_batch``), so one client alone never waits ``max_wait_ms``. :meth:`SearchBatcher.run_many`
(a caller's own batch, e.g. LangChain's ``batch``) encodes all its texts in one call up front, so
its encoder pass does not depend on timing. The queue is bounded: with ``queue_size``
searches admitted (running or waiting), :meth:`SearchBatcher.submit` raises
:class:`~mmrag.errors.OverloadedError` at once (the API answers ``503`` with ``Retry-After``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from mmrag.errors import ConfigError, MmragError, OverloadedError

if TYPE_CHECKING:
    from PIL import Image

    from mmrag.encoders.base import DualEncoder, FloatArray
    from mmrag.retriever.base import Reranker
    from mmrag.retriever.core import Retriever, SearchResult
    from mmrag.retriever.request import SearchRequest
    from mmrag.types import Hit

__all__ = ["BatchSettings", "Gather", "SearchBatcher"]

I = TypeVar("I")  # noqa: E741 - an item gathered into a batch
O = TypeVar("O")  # noqa: E741 - its result


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """How searches are gathered and how many may wait.

    Attributes:
        max_batch: Most texts per encoder pass and most rerank pools per scoring pass; also the
            number of searches run at once (1: no batching, searches still share the bounded queue).
        max_wait_ms: How long the first call of a batch waits for others (0: never waits).
        queue_size: Searches admitted at once, running or waiting; one more is refused with
            :class:`~mmrag.errors.OverloadedError`. ``None``: no bound (a caller's own batch).

    Example:
        >>> BatchSettings(max_batch=16, max_wait_ms=2.0).queue_size
        256
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue_size: int | None = 256

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"max_wait_ms must be between 0 and 1000, got {self.max_wait_ms}")
        if self.queue_size is not None and self.queue_size < 1:
            raise ConfigError(f"queue_size must be >= 1, got {self.queue_size}")


class _Call(Generic[I, O]):
    """One caller's items and, once its batch has run, their results or the error."""

    __slots__ = ("done", "error", "items", "out")

    def __init__(self, items: list[I]) -> None:
        self.items = items
        self.out: list[O] | None = None
        self.error: BaseException | None = None
        self.done = False


class Gather(Generic[I, O]):
    """Gathers the calls of many threads into one call of ``fn`` over all their items.

    No thread of its own: the oldest waiting caller leads, waits up to ``max_wait_ms`` for more
    (less when ``ready(calls waiting)`` says nobody else is coming), runs ``fn`` once for the
    batch and hands each caller its slice. One batch runs at a time; calls arriving meanwhile
    form the next one. If a batch of several calls fails, each call is retried alone so one bad
    input fails only its own caller.

    Args:
        fn: Items in, one result per item out, in order.
        settings: ``max_batch`` (items per ``fn`` call; a larger single call runs alone) and
            ``max_wait_ms``.
        ready: ``ready(n)`` is true when ``n`` waiting calls are all that can come; default:
            never (wait the full ``max_wait_ms``).

    Example:
        >>> double = Gather(lambda xs: [2 * x for x in xs], BatchSettings(max_wait_ms=0))
        >>> double([1, 2])
        [2, 4]
    """

    def __init__(
        self,
        fn: Callable[[list[I]], Sequence[O]],
        settings: BatchSettings,
        ready: Callable[[int], bool] | None = None,
    ) -> None:
        self._fn = fn
        self.max_batch = settings.max_batch
        self.max_wait = settings.max_wait_ms / 1000.0
        self._ready = ready or (lambda _: False)
        self._cond = threading.Condition()
        self._pending: deque[_Call[I, O]] = deque()
        self._busy = False
        self.batches = 0  # fn calls so far (batches run), for stats and tests
        self.calls = 0  # caller calls served

    @property
    def waiting(self) -> int:
        """Calls gathered but not yet run."""
        with self._cond:
            return len(self._pending)

    def poke(self) -> None:
        """Re-check a leader's wait (e.g. a search finished, so fewer calls can still come)."""
        with self._cond:
            self._cond.notify_all()

    def __call__(self, items: Sequence[I]) -> list[O]:
        call: _Call[I, O] = _Call(list(items))
        with self._cond:
            self._pending.append(call)
            self._cond.notify_all()
            while not call.done and (self._busy or self._pending[0] is not call):
                self._cond.wait()
            batch = None if call.done else self._take_locked()
        if batch is not None:
            self._run(batch)
        if call.error is not None:
            raise call.error
        assert call.out is not None  # set by the batch that ran it
        return call.out

    def _take_locked(self) -> list[_Call[I, O]]:
        """As the leader (holding the lock): wait for more calls, then take one batch."""
        deadline = time.monotonic() + self.max_wait
        while True:
            size = sum(len(c.items) for c in self._pending)
            left = deadline - time.monotonic()
            if size >= self.max_batch or self._ready(len(self._pending)) or left <= 0:
                break
            self._cond.wait(left)
        batch: list[_Call[I, O]] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0].items) <= self.max_batch):
            batch.append(self._pending.popleft())
            size += len(batch[-1].items)
        self._busy = True
        return batch

    def _run(self, batch: list[_Call[I, O]]) -> None:
        try:
            items = [x for c in batch for x in c.items]
            try:
                self._split(batch, self._fn(items))
            except Exception as exc:  # noqa: BLE001 - handed to the callers, who raise it
                if len(batch) == 1:
                    batch[0].error = exc
                else:  # one bad input must not fail the others: each call alone, its own error
                    for c in batch:
                        try:
                            self._split([c], self._fn(c.items))
                        except Exception as one:  # noqa: BLE001 - raised by its own caller
                            c.error = one
        finally:
            with self._cond:
                for c in batch:
                    if c.out is None and c.error is None:
                        c.error = MmragError("the batch this call was in was interrupted; retry")
                    c.done = True
                self.batches += 1
                self.calls += len(batch)
                self._busy = False
                self._cond.notify_all()

    @staticmethod
    def _split(batch: list[_Call[I, O]], out: Sequence[O]) -> None:
        if len(out) != sum(len(c.items) for c in batch):
            raise MmragError(f"a batched call returned {len(out)} results for {len(batch)} calls' items")
        start = 0
        for c in batch:
            c.out = list(out[start : start + len(c.items)])
            start += len(c.items)


class BatchReranker(Protocol):
    """A reranker that can score several queries' pools in one pass (``CrossEncoderReranker``)."""

    def rerank_many(self, pools: Sequence[tuple[str, Sequence[Hit]]]) -> list[list[Hit]]: ...


class _GatheredEncoder:
    """The encoder seen by batched searches: text calls gathered, images passed through."""

    def __init__(
        self, inner: DualEncoder, gather: Gather[str, FloatArray], known: Callable[[str], FloatArray | None]
    ) -> None:
        self.inner = inner
        self._gather = gather
        self._known = known
        self.id, self.dim, self.spec, self.aligned = inner.id, inner.dim, inner.spec, inner.aligned

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        found = [self._known(t) for t in texts]  # encoded up front by run_many
        rows = [f for f in found if f is not None]
        if len(rows) != len(found):
            rows = self._gather(list(texts))
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def encode_image(
        self, images: Sequence[Image.Image | str | Path], *, batch_size: int | None = None
    ) -> FloatArray:
        return self.inner.encode_image(images, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class _GatheredReranker:
    """The reranker seen by batched searches: each query's pool joins one scoring pass."""

    def __init__(self, inner: Reranker, gather: Gather[tuple[str, list[Hit]], list[Hit]]) -> None:
        self.inner = inner
        self.id = getattr(inner, "id", None)
        self._gather = gather

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        return self._gather([(query, list(hits))])[0]


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
        self._encoded: dict[str, tuple[FloatArray, int]] = {}  # run_many's texts: vector, users
        self.texts: Gather[str, FloatArray] = Gather(self._encode, s, self._all_here)
        self.pools: Gather[tuple[str, list[Hit]], list[Hit]] = Gather(self._rerank, s, self._all_here)
        self.retriever = copy.copy(retriever)  # the caller's retriever keeps its own models
        self._inner_encoder = retriever.encoder
        self.retriever.encoder = _GatheredEncoder(retriever.encoder, self.texts, self._known)
        self._inner_reranker = retriever.reranker
        if retriever.reranker is not None:
            self.retriever.reranker = _GatheredReranker(retriever.reranker, self.pools)
        # max_batch threads: enough searches in flight at once to fill one batch at each stage.
        self._pool = ThreadPoolExecutor(s.max_batch, thread_name_prefix="mmrag-search")

    # -- the batched model calls ----------------------------------------------------------
    def _encode(self, texts: list[str]) -> list[FloatArray]:
        # the whole batch in one forward pass (max_batch bounds its size)
        return list(self._inner_encoder.encode_text(texts, batch_size=max(1, len(texts))))

    def _rerank(self, pools: list[tuple[str, list[Hit]]]) -> list[list[Hit]]:
        inner = self._inner_reranker
        assert inner is not None  # only gathered when the retriever has a reranker
        many = getattr(inner, "rerank_many", None)
        if many is not None:
            out: list[list[Hit]] = many(pools)
            return out
        return [inner.rerank(q, hits) for q, hits in pools]

    def _all_here(self, waiting: int) -> bool:
        with self._lock:
            return waiting >= min(self._admitted, self.settings.max_batch)

    def _known(self, text: str) -> FloatArray | None:
        with self._lock:
            hit = self._encoded.get(text)
        return None if hit is None else hit[0]

    # -- running searches -----------------------------------------------------------------
    @property
    def admitted(self) -> int:
        """Searches admitted and not finished (running or waiting for a thread)."""
        with self._lock:
            return self._admitted

    def submit(self, req: SearchRequest, *, bounded: bool = True) -> Future[SearchResult]:
        """Queue one search; its future gives the :class:`SearchResult` (or raises its error).

        Raises:
            OverloadedError: ``queue_size`` searches are already admitted (only when ``bounded``).
        """
        limit = self.settings.queue_size
        with self._lock:
            if bounded and limit is not None and self._admitted >= limit:
                raise OverloadedError(f"{self._admitted} searches are queued (the limit); retry shortly")
            self._admitted += 1
        try:
            fut = self._pool.submit(self.retriever.run, req)
        except BaseException:
            self._release(None)
            raise
        fut.add_done_callback(self._release)  # also when cancelled before it ran (a timed-out client)
        return fut

    def _release(self, _: Future[SearchResult] | None) -> None:
        with self._lock:
            self._admitted -= 1
        # a leader waiting for "every admitted search" may now have them all
        self.texts.poke()
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
        """Searches admitted now, encoder and rerank batches run and the calls they served."""
        return {
            "admitted": self.admitted,
            "encode_batches": self.texts.batches,
            "encode_calls": self.texts.calls,
            "rerank_batches": self.pools.batches,
            "rerank_calls": self.pools.calls,
        }

    def close(self) -> None:
        """Finish the admitted searches and stop the threads."""
        self._pool.shutdown(wait=True)
