"""A cross-encoder kept on disk as ONNX for one-off searches: the second stage without torch.

Loading :class:`~mmrag.rerank.cross_encoder.CrossEncoderReranker` imports torch and transformers (whose
model modules pull in ``torch._dynamo``): ~6 s of a ~9 s ``mmrag search`` with both stages, for a
rerank that then takes a fraction of a second. :func:`remember_reranker` (called by ``mmrag ingest
--reranker`` and by the first ``mmrag search`` that loads it) stores the model in fp32 as ONNX with its
tokenizer's ``tokenizer.json``, the pair template and the checkpoint's fusion weights, beside the stored
text towers (:func:`mmrag.encoders.query_tower.cache_root`, ``MMRAG_QUERY_CACHE``). :class:`StoredReranker`
runs it with ONNX Runtime and the ``tokenizers`` library, through the same pair tokenization, batching
and fusion (:class:`~mmrag.rerank.pairs.PairScorer`).

It runs fp32: the same logits as the torch model in fp32 (checked before storing, on probe pairs), not
the bf16 copy a long-lived process runs on bf16 hardware (logits within ~0.1 of fp32; see
``MMRAG_RERANK_PRECISION``). Keyed like the text towers: a local folder by its path and its files' sizes
and modification times, plus the versions of the packages that load and export it. Hub names and int8
rerankers are not stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders import disk_cache
from mmrag.encoders.disk_cache import PACKAGES, cache_root, code_digest, file_stamp
from mmrag.rerank.fusion import ScoreFusion
from mmrag.rerank.pairs import Batch, PairScorer, PairTemplate

if TYPE_CHECKING:
    from mmrag.rerank.cross_encoder import CrossEncoderReranker

log = logging.getLogger(__name__)

FORMAT = 1
PREFIX = "rerank-"  # cache entries beside the text towers
MODEL_FILE, TOKENIZER_FILE, META_FILE = "model.onnx", "tokenizer.json", disk_cache.META_FILE
# mmrag's code that loads a reranker (its seeded fresh head included), exports it and runs it here
CODE = (
    "rerank/cross_encoder.py",
    "rerank/pairs.py",
    "rerank/stored.py",
    "encoders/onnxrt.py",
    "encoders/lite.py",
)
PROBE_QUERIES = ("how do cats sleep", "Über café naïve — 東京 2024: 3.5% of β-blockers")
PROBE_DOCS = (
    "Cats sleep twelve to sixteen hours a day, mostly in short naps.",
    "  The stock market\tfell sharply on Tuesday.  ",
    "Quantum computers use qubits. " * 80,  # past max_length
    "a",
)


def reranker_key(model: str) -> str | None:
    """A key that changes whenever what ``model`` loads may change, found without loading it; ``None``
    for a name that is not a local folder (a hub model) or cannot be read here."""
    try:
        path = _folder(model)
        if path is None:
            return None
        files = sorted(f for f in path.iterdir() if f.is_file())
        parts = {
            "format": FORMAT,
            "versions": disk_cache.package_versions(PACKAGES),
            "code": code_digest(CODE),
            "source": str(path.resolve()),
            "files": [file_stamp(f) for f in files],
        }
    except OSError:
        return None
    return disk_cache.make_key(parts)


def _folder(model: str) -> Path | None:
    """The local folder ``model`` loads from (the offline MiniLM's package folder for ``minilm``)."""
    from mmrag.rerank.cross_encoder import resolve_model

    try:
        path = Path(resolve_model(model)).expanduser()
    except Exception:  # noqa: BLE001 - the offline MiniLM package may be missing: not stored
        return None
    return path if path.is_dir() else None


def open_stored_reranker(
    model: str,
    *,
    threads: int = 0,
    max_length: int | None = None,
    fusion_weights: Mapping[str, float] | None = None,
) -> StoredReranker | None:
    """The stored cross-encoder of ``model``, or ``None`` (none stored, or unreadable: logged, dropped)."""
    from mmrag.errors import ConfigError
    from mmrag.rerank.cross_encoder import resolve_model

    if max_length is not None and max_length < 8:  # as the full reranker says, and before the cache
        raise ConfigError(f"max_length must be >= 8, got {max_length}")
    root = cache_root()
    key = reranker_key(model) if root is not None else None
    if root is None or key is None or not disk_cache.ready(root, PREFIX + key):
        return None
    folder = root / (PREFIX + key)
    given = dict(fusion_weights or {})
    fusion = ScoreFusion(given, default=given.get("text", 0.5)) if given else None
    try:
        return StoredReranker(
            folder, threads=threads, max_length=max_length, fusion=fusion, source=resolve_model(model)
        )
    except Exception as exc:  # noqa: BLE001 - a broken cache entry must never break a query
        log.warning("stored reranker %s unreadable (%s); loading the full reranker", folder, exc)
        disk_cache.drop(folder)
        return None


def remember_reranker(rr: Any) -> Path | None:
    """Store ``rr`` (a :class:`CrossEncoderReranker`) for later processes' searches; a no-op when stored
    already, not storable (hub model, int8) or the cache is off. Returns the folder, or ``None``."""
    from mmrag.encoders.onnxrt import ort_available
    from mmrag.rerank.cross_encoder import CrossEncoderReranker

    root = cache_root()
    if root is None or not isinstance(rr, CrossEncoderReranker) or rr.int8 or not ort_available():
        return None
    key = reranker_key(rr.source)
    if key is None or disk_cache.ready(root, PREFIX + key) or disk_cache.failed(root, PREFIX + key):
        return None
    try:
        return _write(rr, root, key)
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation: never fail the command
        log.warning("could not store the reranker %s for fast searches: %s", rr.source, exc)
        return None


def _export(net: Any, batch: Batch) -> bytes:
    """The cross-encoder ``net`` as ONNX: the batch's inputs in, its logits out."""
    import torch

    from mmrag.encoders.onnxrt import export_onnx

    names = list(batch)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.net(**dict(zip(names, args, strict=True))).logits  # type: ignore[no-any-return]

    return export_onnx(Logits().eval(), {n: torch.from_numpy(batch[n]) for n in names})


def _write(rr: CrossEncoderReranker, root: Path, key: str) -> Path | None:
    from mmrag.rerank.cross_encoder import CrossEncoderReranker

    name = PREFIX + key
    tmp = disk_cache.new_tmp(root, name)  # first: an unwritable cache costs no second model load
    if tmp is None:
        return None
    try:
        # the reference and what is exported: fp32 (a bf16 process loads an fp32 copy once, here)
        ref = (
            rr
            if rr.precision == "fp32"
            else CrossEncoderReranker(rr.source, max_length=rr.max_length, precision="fp32")
        )
        queries = [q for q in PROBE_QUERIES for _ in PROBE_DOCS]
        docs = list(PROBE_DOCS) * len(PROBE_QUERIES)
        (tmp / MODEL_FILE).write_bytes(
            _export(ref.model, ref.pad_pairs(ref.encode_pairs(queries[:2], docs[:2])))
        )
        ref.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
        t = ref.template
        model = "rerank:" + str(Path(rr.source).resolve())  # older entries of the same model are dropped
        meta = {
            "format": FORMAT,
            "key": key,
            "model": model,
            "source": rr.source,
            "untrained": rr.untrained,
            # the reranker's own default, not this process's --max-length (a per-call override)
            "max_length": int(rr.meta.get("max_length") or 256),
            "template": {
                "prefix": t.prefix,
                "middle": t.middle,
                "suffix": t.suffix,
                "type_a": t.type_a,
                "type_b": t.type_b,
            },
            "pad_id": ref.pad_id,
            "types": ref.types,
            "truncation_side": ref._truncation_side(),
            "rerank_meta": ref.meta,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        stored = StoredReranker(tmp, threads=1, batch_size=3, max_length=ref.max_length)  # padded batches
        if [p[0] for p in stored.encode_pairs(queries, docs)] != [
            p[0] for p in ref.encode_pairs(queries, docs)
        ]:
            disk_cache.give_up(root, name, f"{rr.source}: the stored tokenizer differs from the reranker's")
            return None
        want, got = ref.score_pairs(queries, docs), stored.score_pairs(queries, docs)
        gap = float(np.max(np.abs(got - want)))
        if not np.allclose(got, want, atol=2e-3, rtol=1e-3):
            disk_cache.give_up(root, name, f"{rr.source}: stored reranker's logits differ by {gap:.4f}")
            return None
        meta["max_abs_logit_gap"] = gap
        return disk_cache.finish(tmp, root, name, meta, f"the reranker {rr.source}")
    finally:
        disk_cache.drop(tmp)


class StoredReranker(PairScorer):
    """A cross-encoder from the cache, run with ONNX Runtime in fp32 (see the module docstring); the
    same ``rerank`` / ``rerank_many`` / ``score_pairs`` as :class:`CrossEncoderReranker`.

    Args:
        folder: A cache entry written by :func:`remember_reranker`.
        threads: ONNX Runtime intra-op threads (0: one per physical core).
        max_length: Tokens per pair (default: the reranker's when stored).
        batch_size: Pairs per forward pass (length-sorted).
        fusion: Score fusion (default: the checkpoint's weights, as the full reranker's).
        cache_size: Documents whose token ids are kept (LRU).
        source: The model's name in this process (its ``id``; default: as the storing process named it).
    """

    def __init__(
        self,
        folder: Path,
        *,
        threads: int = 0,
        max_length: int | None = None,
        batch_size: int = 32,
        fusion: ScoreFusion | None = None,
        cache_size: int = 20_000,
        source: str | None = None,
    ) -> None:
        import tokenizers

        from mmrag.encoders.onnxrt import open_session
        from mmrag.errors import ConfigError

        if max_length is not None and max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {max_length}")
        stored: dict[str, Any] = json.loads((folder / META_FILE).read_text())
        if stored.get("format") != FORMAT:
            raise ValueError(f"format {stored.get('format')} is not {FORMAT}")
        self.folder = folder
        self.source: str = source or stored["source"]  # as this process names it (its id)
        self.untrained = bool(stored["untrained"])
        if self.untrained:
            log.warning(
                "cross-encoder from offline MiniLM has an untrained head: train it (mmrag train-reranker)"
            )
        self.meta: dict[str, Any] = dict(stored.get("rerank_meta") or {})
        self.precision, self.int8 = "fp32", False
        self.max_length = int(max_length or stored["max_length"])
        self.batch_size = batch_size
        self.template = PairTemplate(**stored["template"])
        self.pad_id = int(stored["pad_id"])
        self.types = bool(stored["types"])
        self._side = str(stored["truncation_side"])
        self._tokenizer = tokenizers.Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._session = open_session(str(folder / MODEL_FILE), threads=threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.fusion = fusion or ScoreFusion(
            dict(self.meta.get("fusion_weights") or {}), default=float(self.meta.get("fusion_default", 0.5))
        )
        self._init_cache(cache_size)

    @property
    def id(self) -> str:
        return self.source  # fp32, as CrossEncoderReranker names its fp32 model

    def _backend(self) -> Any:
        return self._tokenizer

    def _truncation_side(self) -> str:
        return self._side

    def _logits(self, batch: Batch) -> np.ndarray[Any, np.dtype[np.float32]]:
        feed = {k: v for k, v in batch.items() if k in self._inputs}
        return np.asarray(self._session.run(None, feed)[0], dtype=np.float32).reshape(-1)
