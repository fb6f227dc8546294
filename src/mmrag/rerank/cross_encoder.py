"""Cross-encoder reranking on CPU: cached tokenization, length-bucketed batches, optional int8.

Any Hugging Face sequence-classification model with one output works: a hub name
(``cross-encoder/ms-marco-MiniLM-L-6-v2``, ``BAAI/bge-reranker-base``), a local folder, a checkpoint
written by ``mmrag train-reranker``, or ``None`` / ``"minilm"`` for the offline all-MiniLM-L6-v2
weights with a fresh (untrained) scoring head.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from functools import partial
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
from mmrag.rerank.pairs import (
    PREFIX_CHARS_PER_TOKEN,
    Batch,
    PairScorer,
    PairTemplate,
    RerankStats,
    word_prefix,
)
from mmrag.rerank.traced import TracedLogits

__all__ = [
    "CONFIG_FILE",
    "PREFIX_CHARS_PER_TOKEN",
    "CrossEncoderReranker",
    "RerankStats",
    "resolve_model",
    "resolve_precision",
    "word_prefix",
]

log = logging.getLogger(__name__)
CONFIG_FILE = "mmrag_rerank.json"  # written by train-reranker: learned fusion weights, provenance
OFFLINE = ("minilm", "@minilm")


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bf16`` where :func:`bf16_is_fast`, else ``fp32``; other names are checked."""
    if precision not in RERANK_PRECISIONS:
        names = ", ".join(RERANK_PRECISIONS)
        raise ConfigError(f"reranker precision must be one of {names}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_is_fast() else "fp32"
    return precision


def resolve_model(model: str | Path | None) -> str:
    if model is None or str(model) in OFFLINE:
        from mmrag.encoders.lite import minilm_path

        return minilm_path()
    return str(model)


class CrossEncoderReranker(PairScorer):
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
        trace: Run fp32 and bf16 forward passes as one TorchScript call (:mod:`mmrag.rerank.traced`:
            the same logits, the GIL released once per pass); ``False`` for a model that will be
            trained in place (each change of weights would be traced again). int8 never is.

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
        trace: bool = True,
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
        fuse: Callable[[], object] | None = None
        if self.precision == "bf16":
            net = net.to(torch.bfloat16)
            use_cpu_attention(net)  # torch's CPU sdpa kernel is slow in bf16 at these shapes
            # traced (below), else eager with linear + GELU in one oneDNN call (3-4% of a search,
            # docs/speed.md; a trace cannot record that kernel)
            fuse = partial(fuse_gelu_ffn, net)
            if not trace:
                fuse()
        self._traced: TracedLogits | None = None
        if trace and self.precision in ("bf16", "fp32"):
            self._traced = TracedLogits(
                net,
                ["input_ids", "attention_mask"]
                + (["token_type_ids"] if "token_type_ids" in self.tokenizer.model_input_names else []),
                self._probe,
                on_failure=fuse,
                name=f"reranker {self.source}",
            )
        self.model = net
        self.int8 = int8
        self.meta = self._read_meta(self.source)
        self.max_length = int(max_length or self.meta.get("max_length") or 256)
        self.batch_size = batch_size
        self.template = PairTemplate.of(self.tokenizer)
        self.types = "token_type_ids" in self.tokenizer.model_input_names
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self._init_cache(cache_size)
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

    # -- the torch model (PairScorer does the rest) ------------------------------------------
    def _backend(self) -> Any:
        return getattr(self.tokenizer, "backend_tokenizer", None)

    def _truncation_side(self) -> str:
        return str(getattr(self.tokenizer, "truncation_side", "right"))

    def _encode_slow(self, texts: list[str]) -> list[list[int]]:
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)
        return [list(ids) for ids in enc["input_ids"]]

    def _lane(self) -> Any:
        return FORWARDS  # shares the cores' lanes with the encoder (mmrag.encoders.lanes)

    def _lanes_for_split(self) -> int:
        return FORWARDS.limit()

    @property
    def traced(self) -> bool:
        """Whether forward passes run as one TorchScript call (fp32 and bf16, after the first pass)."""
        return self._traced is not None and self._traced.active

    def _probe(self) -> dict[str, Any]:
        """A padded batch of two pairs to trace the model on (not counted in :attr:`stats`)."""
        import torch

        pairs = self.encode_pairs(
            ["probe", "probe"], ["short", "a longer probe text, so that the first pair is padded"]
        )
        return {k: torch.from_numpy(v) for k, v in self._pad(pairs).items()}

    def _logits(self, batch: Batch) -> np.ndarray[Any, np.dtype[np.float32]]:
        import torch

        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
            out = self._traced(inputs) if self._traced is not None else None
            if out is None:
                out = self.model(**inputs).logits
        return out.reshape(-1).float().numpy()

    def collate(self, pairs: Any) -> dict[str, Any]:
        """Pad token-id pairs (from :meth:`encode_pairs`) into one torch batch (training's input);
        counts the work done."""
        import torch

        return {k: torch.from_numpy(v) for k, v in self.pad_pairs(pairs).items()}
