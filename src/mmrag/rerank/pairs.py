"""What every cross-encoder runtime shares: (query, text) pairs as token ids (cached, truncated, joined
with the model's special tokens), length-sorted padded batches, and the pool re-ordering with fusion.

:class:`PairScorer` is the base of :class:`~mmrag.rerank.cross_encoder.CrossEncoderReranker` (torch)
and :class:`~mmrag.rerank.stored.StoredReranker` (ONNX Runtime, no torch); a subclass supplies the
tokenizer backend and :meth:`PairScorer._logits`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mmrag.encoders.lanes import usable_cores
from mmrag.rerank.fusion import ScoreFusion
from mmrag.types import Hit

# Characters of a long text tokenized per token kept (see PairScorer._tokenize).
PREFIX_CHARS_PER_TOKEN = 8
# Fewest pairs per part when a pool is split over the lanes (PairScorer.score_pairs): below it the
# fixed cost of a forward pass outweighs running side by side.
MIN_SPLIT = 4
_SIDE: ThreadPoolExecutor | None = None  # runs the parts of a split pool beside the caller's own
_SIDE_LOCK = threading.Lock()


def _side_pool() -> ThreadPoolExecutor:
    global _SIDE
    with _SIDE_LOCK:
        if _SIDE is None:
            # one thread per lane beside the caller's: never more parts than lanes
            _SIDE = ThreadPoolExecutor(max(1, usable_cores() - 1), thread_name_prefix="mmrag-rerank")
        return _SIDE


def _forget_side_pool() -> None:
    global _SIDE, _SIDE_LOCK
    _SIDE, _SIDE_LOCK = None, threading.Lock()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_side_pool)


Batch = dict[str, np.ndarray[Any, np.dtype[np.int64]]]


def _cut(idx: list[int], size: int) -> list[list[int]]:
    return [idx[s : s + size] for s in range(0, len(idx), size)]


def word_prefix(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a whitespace boundary (whole words only);
    ``text`` itself when it is no longer than that or has no whitespace to cut at."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if not text[limit].isspace():  # the cut falls inside a word: drop that word
        parts = head.rsplit(None, 1)
        if len(parts) < 2:
            return text
        head = parts[0]
    return head.rstrip() or text


@dataclass(slots=True)
class RerankStats:
    """Work done so far: what the latency and FLOP/s figures are computed from."""

    pairs: int = 0
    batches: int = 0
    tokens: int = 0  # real tokens
    padded_tokens: int = 0  # tokens the model ran on, padding included
    attention_cells: int = 0  # Σ over sequences of padded_len² (attention cost)
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a (query, document) pair, learned once by
    tokenizing a sample pair, so cached token ids can be joined for BERT- and XLM-R-style models."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    type_a: int
    type_b: int

    @classmethod
    def of(cls, tok: Any) -> PairTemplate:
        a, b = "alpha", "omega"
        ia = tok(a, add_special_tokens=False)["input_ids"]
        ib = tok(b, add_special_tokens=False)["input_ids"]
        enc = tok(a, b)
        full: list[int] = list(enc["input_ids"])
        types: list[int] = list(enc.get("token_type_ids") or [0] * len(full))
        pa = next(i for i in range(len(full)) if full[i : i + len(ia)] == ia)
        pb = next(i for i in range(pa + len(ia), len(full)) if full[i : i + len(ib)] == ib)
        return cls(full[:pa], full[pa + len(ia) : pb], full[pb + len(ib) :], types[pa], types[pb])

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def join(self, q: list[int], d: list[int]) -> tuple[list[int], list[int]]:
        ids = self.prefix + q + self.middle + d + self.suffix
        na = len(self.prefix) + len(q) + len(self.middle)
        return ids, [self.type_a] * na + [self.type_b] * (len(ids) - na)


class PairScorer:
    """Tokenization, batching and pool re-ordering of a cross-encoder; subclasses run the model.

    A subclass's ``__init__`` sets ``template``, ``pad_id``, ``types`` (whether the model takes token
    types), ``max_length``, ``batch_size`` and ``fusion``, then calls :meth:`_init_cache`; it
    implements :meth:`_backend`, :meth:`_truncation_side` and :meth:`_logits`.
    """

    template: PairTemplate
    pad_id: int
    types: bool
    max_length: int
    batch_size: int
    fusion: ScoreFusion

    def _init_cache(self, cache_size: int) -> None:
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self._rust: tuple[tuple[int, str], Any] | None = None  # ((max_length, side), copy): _rust_tokenizer
        self.cache_size = cache_size
        self.stats = RerankStats()

    def _backend(self) -> Any:
        """The fast tokenizer's Rust backend (``tokenizers.Tokenizer``), or ``None``."""
        raise NotImplementedError

    def _truncation_side(self) -> str:
        """Which end of a long text the tokenizer keeps: ``right`` keeps the start."""
        raise NotImplementedError

    def _encode_slow(self, texts: list[str]) -> list[list[int]]:
        """Token ids without a Rust backend (only subclasses whose tokenizer may lack one)."""
        raise NotImplementedError

    def _logits(self, batch: Batch) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One padded batch's relevance logits, shape ``(n,)``."""
        raise NotImplementedError

    def _lane(self) -> contextlib.AbstractContextManager[Any]:
        """Held around each forward pass (a lane of the process's cores, for torch models)."""
        return contextlib.nullcontext()

    def _lanes_for_split(self) -> int:
        """Forward passes the cores fit side by side (a fixed number per process; 1: no split)."""
        return 1

    # -- tokenization (cached) ----------------------------------------------------------------
    def _doc_ids(self, texts: Sequence[str]) -> list[list[int]]:
        # One reranker serves every thread of the API, the app and LangChain's ainvoke; the LRU's
        # check-then-move and the fast tokenizer's truncation settings are not thread-safe.
        with self._lock:
            return self._doc_ids_locked(texts)

    def _doc_ids_locked(self, texts: Sequence[str]) -> list[list[int]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for t, ids in zip(missing, self._tokenize(missing), strict=True):
                self._cache[t] = ids
        out = []
        for t in texts:
            self._cache.move_to_end(t)
            out.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_length``.

        Only the first ``max_length`` tokens are kept, so a long text is tokenized from a prefix of
        whole words (:data:`PREFIX_CHARS_PER_TOKEN` characters per token kept): a SciFact abstract
        has ~1,450 characters, and its first 112 tokens need at most ~6.5 per token. The tokenizer splits
        text into words before it splits words into tokens, so when the prefix alone fills
        ``max_length`` its ids are the whole text's; when it does not, the whole text is tokenized.
        A tokenizer that truncates on the left keeps the last tokens instead: it gets whole texts.
        """
        if self._truncation_side() != "right":
            return self._encode(texts)
        limit = self.max_length * PREFIX_CHARS_PER_TOKEN
        heads = [word_prefix(t, limit) for t in texts]
        ids = self._encode(heads)
        short = [i for i, x in enumerate(ids) if len(x) < self.max_length and len(heads[i]) < len(texts[i])]
        for i, x in zip(short, self._encode([texts[i] for i in short]), strict=True):
            ids[i] = x
        return ids

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        rust = self._rust_tokenizer()
        if rust is not None:  # the same ids without the Python wrapper: 7-9 -> 5 ms for 20 abstracts
            return [e.ids for e in rust.encode_batch_fast(texts, add_special_tokens=False)]
        return self._encode_slow(texts)

    def _rust_tokenizer(self) -> Any:
        """A copy of the fast tokenizer's Rust backend that truncates to ``max_length`` and does not
        pad; None for a tokenizer without one (it is then called as usual)."""
        key = (self.max_length, self._truncation_side())  # as the wrapper cuts
        made = self._rust
        if made is None or made[0] != key:
            backend = self._backend()
            rust = None
            if backend is not None and hasattr(backend, "encode_batch_fast"):
                rust = copy.deepcopy(backend)  # the wrapper's own keeps the settings it sets per call
                rust.no_padding()
                rust.enable_truncation(key[0], direction=key[1])
            made = self._rust = (key, rust)
        return made[1]

    def encode_pairs(self, queries: Sequence[str], texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """Token ids and token types of each (query, text) pair, truncated to ``max_length``."""
        qids = {q: ids for q, ids in zip(set(queries), self._doc_ids(list(set(queries))), strict=True)}
        docs = self._doc_ids(texts)
        budget = self.max_length - self.template.specials
        out = []
        for q, d in zip(queries, docs, strict=True):
            qq = qids[q][: budget // 2]
            out.append(self.template.join(qq, d[: budget - len(qq)]))
        return out

    def pad_pairs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> Batch:
        """Token-id pairs (from :meth:`encode_pairs`) padded into one batch of int64 arrays
        (``input_ids``, ``attention_mask``, and ``token_type_ids`` where the model takes them);
        counts the work done."""
        out = self._pad(pairs)
        width = out["input_ids"].shape[1]
        self.stats.tokens += sum(len(p[0]) for p in pairs)
        self.stats.batches += 1
        self.stats.padded_tokens += len(pairs) * width
        self.stats.attention_cells += len(pairs) * width * width
        return out

    def _pad(self, pairs: Sequence[tuple[list[int], list[int]]]) -> Batch:
        """:meth:`pad_pairs` without counting (a probe batch)."""
        width = max(len(p[0]) for p in pairs)
        ids = np.full((len(pairs), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(pairs), width), dtype=np.int64)
        mask = np.zeros((len(pairs), width), dtype=np.int64)
        for row, (pid, ptype) in enumerate(pairs):
            ids[row, : len(pid)] = pid
            types[row, : len(pid)] = ptype
            mask[row, : len(pid)] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if self.types:
            out["token_type_ids"] = types
        return out

    # -- scoring ------------------------------------------------------------------------------
    def score_pairs(
        self, queries: Sequence[str], texts: Sequence[str]
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Raw relevance logits of ``(queries[i], texts[i])``, in input order."""
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        t0 = time.perf_counter()
        pairs = self.encode_pairs(queries, texts)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        # A pool is split over the process's lanes: with MMRAG_THREADS=1 on 2 cores a lone search's
        # 20 pairs run as two passes of 10 side by side (~2x faster), not one pass on one core with
        # the other idle. The split depends only on the lanes the cores fit, never on the load, so
        # the same pool always runs as the same batches (the same scores); under load each part
        # waits for a lane like any forward pass (on CPU 10 pairs cost half of 20, so nothing is
        # lost). Parts take every other pair of the length order (equal work); within a part
        # batches stay length-sorted.
        ways = max(1, min(self._lanes_for_split(), len(order) // MIN_SPLIT))
        parts = [
            [(idx, self.pad_pairs([pairs[i] for i in idx])) for idx in _cut(order[w::ways], self.batch_size)]
            for w in range(ways)
        ]
        scores = np.zeros(len(pairs), dtype=np.float32)

        def run(part: list[tuple[list[int], Batch]]) -> None:
            for idx, batch in part:
                with self._lane():
                    scores[idx] = self._logits(batch)

        side: list[Future[None]] = []
        try:
            side += [_side_pool().submit(run, part) for part in parts[1:]]
            run(parts[0])
        finally:
            wait(side)  # no part still writes into scores once this call returns or raises
        for f in side:
            f.result()  # a part's error is the call's
        self.stats.pairs += len(pairs)
        self.stats.seconds += time.perf_counter() - t0
        return scores

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self.score_pairs([query] * len(texts), texts)

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """Re-order ``hits`` (one query's pool) by the fused score; see :mod:`mmrag.rerank.fusion`.

        Candidates without text (images with no caption / alt / OCR text) are not scored: their
        ``rerank`` stays ``None`` and they keep their first-stage score in the fusion.
        """
        return self.rerank_many([(query, hits)])[0]

    def rerank_many(self, pools: Sequence[tuple[str, Sequence[Hit]]]) -> list[list[Hit]]:
        """:meth:`rerank` for several queries' pools with one :meth:`score_pairs` call over all their
        pairs (the API's micro-batches: length-sorted batches across queries pad less)."""
        where = [
            (p, i)
            for p, (_, hits) in enumerate(pools)
            for i, h in enumerate(hits)
            if (h.chunk.text or "").strip()
        ]
        raw = self.score_pairs(
            [pools[p][0] for p, _ in where], [pools[p][1][i].chunk.text or "" for p, i in where]
        )
        scores: list[list[float | None]] = [[None] * len(hits) for _, hits in pools]
        for (p, i), s in zip(where, raw, strict=True):
            scores[p][i] = float(s)
        out = []
        for (_, hits), rerank in zip(pools, scores, strict=True):
            final = self.fusion.combine(hits, rerank) if hits else []
            order = sorted(range(len(hits)), key=lambda i: (-final[i], hits[i].ann_rank))
            out.append([replace(hits[i], rerank=rerank[i], final_rank=r + 1) for r, i in enumerate(order)])
        return out
