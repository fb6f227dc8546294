"""Cross-encoder reranking on CPU: cached tokenization, length-bucketed batches, optional int8.

Any Hugging Face sequence-classification model with one output works: a hub name
(``cross-encoder/ms-marco-MiniLM-L-6-v2``, ``BAAI/bge-reranker-base``), a local folder, a checkpoint
written by ``mmrag train-reranker``, or ``None`` / ``"minilm"`` for the offline all-MiniLM-L6-v2
weights with a fresh (untrained) scoring head.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrag._lazy import require
from mmrag.config import RERANK_PRECISIONS
from mmrag.encoders.bf16 import bf16_is_fast
from mmrag.encoders.fused import fuse_gelu_ffn
from mmrag.encoders.lanes import FORWARDS
from mmrag.errors import ConfigError, EncoderError
from mmrag.rerank.attention import use_cpu_attention
from mmrag.rerank.fusion import ScoreFusion
from mmrag.types import Hit

log = logging.getLogger(__name__)
CONFIG_FILE = "mmrag_rerank.json"  # written by train-reranker: learned fusion weights, provenance
OFFLINE = ("minilm", "@minilm")
# Characters of a long text tokenized per token kept (see CrossEncoderReranker._tokenize).
PREFIX_CHARS_PER_TOKEN = 8


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


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bf16`` where :func:`bf16_is_fast`, else ``fp32``; other names are checked."""
    if precision not in RERANK_PRECISIONS:
        names = ", ".join(RERANK_PRECISIONS)
        raise ConfigError(f"reranker precision must be one of {names}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast() else "fp32"
    return precision


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
class _PairTemplate:
    """Where a tokenizer puts its special tokens around a (query, document) pair, learned once by
    tokenizing a sample pair, so cached token ids can be joined for BERT- and XLM-R-style models."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    type_a: int
    type_b: int

    @classmethod
    def of(cls, tok: Any) -> _PairTemplate:
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


def resolve_model(model: str | Path | None) -> str:
    if model is None or str(model) in OFFLINE:
        from mmrag.encoders.lite import minilm_path

        return minilm_path()
    return str(model)


class CrossEncoderReranker:
    """Scores (query, candidate text) pairs and re-orders a candidate pool.

    Args:
        model: HF name or folder (see module docstring); ``None`` = offline MiniLM, untrained head.
        max_length: Tokens per pair (query gets at most half; the document is truncated); default
            the length the checkpoint was trained with, else 256.
        batch_size: Pairs per forward pass; pairs are sorted by length first so a batch pads little.
        int8: Quantize the Linear layers to int8 (torch dynamic quantization; wins over
            ``precision``). Measured: ranking noticeably off (rank correlation ~0.92 to fp32).
        precision: ``auto`` (bf16 on CPUs with AMX or AVX512-BF16, else fp32), ``fp32`` or
            ``bf16``: the dtype of the weights and activations (scores are returned as float32 either way).
        threads: ``torch.set_num_threads`` (process-wide) when given.
        fusion: How rerank and first-stage scores combine; default: the weights saved with the
            checkpoint (``mmrag_rerank.json``), else 0.5 for every modality.
        cache_size: Documents whose token ids are kept (LRU), keyed by text.

    Example:
        >>> rr = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")   # doctest: +SKIP
        >>> hits = rr.rerank("what is bm25", retriever.search("what is bm25", rerank=False))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        int8: bool = False,
        threads: int | None = None,
        fusion: ScoreFusion | None = None,
        cache_size: int = 20_000,
        precision: str = "auto",
    ) -> None:
        if max_length is not None and max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {max_length}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        torch = require("torch", "core")
        transformers = require("transformers", "core")
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.source = resolve_model(model)
        self.untrained = model is None or str(model) in OFFLINE
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.source)
            config = transformers.AutoConfig.from_pretrained(self.source)
            # A bare encoder (e.g. MiniLM) gets a fresh 1-output head; a cross-encoder keeps its own.
            is_ranker = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
            torch.manual_seed(0)  # a fresh head (offline MiniLM) is then the same in every run
            net = transformers.AutoModelForSequenceClassification.from_pretrained(
                self.source, **({} if is_ranker else {"num_labels": 1})
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise EncoderError(
                f"cannot load cross-encoder {self.source!r}: {exc}. Pass a local folder, a checkpoint from "
                "`mmrag train-reranker`, or a hub name with network access (HF_HUB_OFFLINE unset)"
            ) from exc
        if net.config.num_labels != 1:
            raise EncoderError(f"{self.source} has {net.config.num_labels} outputs; a reranker needs 1")
        net.eval()
        if self.untrained:
            log.warning(
                "cross-encoder from offline MiniLM has an untrained head: train it (mmrag train-reranker)"
            )
        if int8:
            with warnings.catch_warnings():
                # torch 2.14 flags eager dynamic quantization as deprecated (moving to torchao); it
                # still runs and is measured against fp32 in benchmarks/bench_rerank.py.
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
        self.precision = "int8" if int8 else resolve_precision(precision)
        if self.precision == "bf16":
            net = net.to(torch.bfloat16)
            use_cpu_attention(net)  # torch's CPU sdpa kernel is slow in bf16 at these shapes
            fuse_gelu_ffn(net)  # linear + GELU in one oneDNN call: 3-4% of a search (docs/speed.md)
        self.model = net
        self.int8 = int8
        self.meta = self._read_meta(self.source)
        self.max_length = int(max_length or self.meta.get("max_length") or 256)
        self.batch_size = batch_size
        self.template = _PairTemplate.of(self.tokenizer)
        self._types = "token_type_ids" in self.tokenizer.model_input_names
        self._cache: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()
        self._rust: tuple[tuple[int, str], Any] | None = None  # ((max_length, side), copy): _rust_tokenizer
        self.cache_size = cache_size
        self.stats = RerankStats()
        self.fusion = fusion or ScoreFusion(
            dict(self.meta.get("fusion_weights") or {}), default=float(self.meta.get("fusion_default", 0.5))
        )

    @staticmethod
    def _read_meta(source: str) -> dict[str, Any]:
        path = Path(source) / CONFIG_FILE
        if not path.is_file():
            return {}
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta

    @property
    def id(self) -> str:
        return f"{self.source}{'' if self.precision == 'fp32' else '#' + self.precision}"

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
        if getattr(self.tokenizer, "truncation_side", "right") != "right":
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
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)
        return [list(ids) for ids in enc["input_ids"]]

    def _rust_tokenizer(self) -> Any:
        """A copy of the fast tokenizer's Rust backend that truncates to ``max_length`` and does not
        pad; None for a tokenizer without one (it is then called as usual)."""
        key = (self.max_length, getattr(self.tokenizer, "truncation_side", "right"))  # as the wrapper cuts
        made = self._rust
        if made is None or made[0] != key:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
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

    # -- scoring ------------------------------------------------------------------------------
    def score_pairs(
        self, queries: Sequence[str], texts: Sequence[str]
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Raw relevance logits of ``(queries[i], texts[i])``, in input order."""
        if len(queries) != len(texts):
            raise ValueError(f"{len(queries)} queries but {len(texts)} texts")
        if not texts:
            return np.zeros(0, dtype=np.float32)
        import torch

        t0 = time.perf_counter()
        pairs = self.encode_pairs(queries, texts)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        scores = np.zeros(len(pairs), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                inputs = self.collate([pairs[i] for i in idx])
                with FORWARDS:  # shares the cores' lanes with the encoder (mmrag.encoders.lanes)
                    scores[idx] = self.model(**inputs).logits.reshape(-1).float().numpy()
        self.stats.pairs += len(pairs)
        self.stats.seconds += time.perf_counter() - t0
        return scores

    def collate(self, pairs: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
        """Pad token-id pairs (from :meth:`encode_pairs`) into one model batch; counts the work done."""
        import torch

        width = max(len(p[0]) for p in pairs)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(pairs), width), pad, dtype=torch.long)
        types = torch.zeros((len(pairs), width), dtype=torch.long)
        mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for row, (pid, ptype) in enumerate(pairs):
            ids[row, : len(pid)] = torch.tensor(pid)
            types[row, : len(pid)] = torch.tensor(ptype)
            mask[row, : len(pid)] = 1
            self.stats.tokens += len(pid)
        self.stats.batches += 1
        self.stats.padded_tokens += len(pairs) * width
        self.stats.attention_cells += len(pairs) * width * width
        inputs = {"input_ids": ids, "attention_mask": mask}
        if self._types:
            inputs["token_type_ids"] = types
        return inputs

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
