"""Text queries without torch: an encoder's text tower kept on disk as ONNX, run with ONNX Runtime and
the ``tokenizers`` library.

``mmrag search`` is one process per query. Loading the full encoder imports open_clip, torch,
torchvision (which pulls in ``torch._dynamo``) and transformers, builds both towers and exports the
text tower to ONNX in memory: ~7 s for a text query on 2 cores, when the search itself takes
milliseconds. A text query needs only the text tower and the tokenizer. So the first process that
loads an encoder through :func:`remember` (a CLI search or ingest) writes them to a cache folder, and
later text queries run from there: :class:`QueryTower` imports neither torch nor open_clip.

The cache is keyed by what the spec loads (:func:`spec_key`): the built ``lite`` family by its spec,
the versions of the packages and a hash of the mmrag code that build it; a checkpoint folder also by
its path and the size, inode and times of its files (:func:`file_stamp`). A rewritten checkpoint, an
upgraded package, edited code or another spec is a new key, so a stale tower is never used. Before a
tower is stored it is checked against the torch tower it came from: the same token ids and cosine >=
:data:`PARITY_MIN` on probe texts, or nothing is written (and a marker keeps it from being tried
again). Only HF-tokenizer text towers (the ``lite`` family and its checkpoints) are kept;
``openclip:`` and ``hf-hub:`` specs load in full as before.

``MMRAG_QUERY_CACHE`` names the folder (default ``~/.cache/mmrag/query-towers``); ``off`` disables it
(:mod:`mmrag.encoders.disk_cache`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders import disk_cache
from mmrag.encoders.base import FloatArray, l2_normalize
from mmrag.encoders.disk_cache import CACHE_ENV, META_FILE, PACKAGES, cache_root, code_digest, file_stamp
from mmrag.encoders.openclip import CONFIG_FILE, MMRAG_FILE, WEIGHTS_FILE, DynamicHFTokenizer

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.encoders.openclip import OpenClipEncoder

log = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "PROBES", "QueryTower", "cache_root", "open_tower", "remember", "spec_key"]

FORMAT = 1  # bump when the folder's layout or the export changes
PARITY_MIN = 0.9999  # per-text cosine of the stored tower's embedding to the torch tower's
MODEL_FILE, TOKENIZER_FILE = "text.onnx", "tokenizer.json"
# mmrag's code that builds a text tower from a spec, exports it and runs it here
CODE = (
    "encoders/lite.py",
    "encoders/openclip.py",
    "encoders/factory.py",
    "encoders/onnxrt.py",
    "encoders/query_tower.py",
)
# Probe texts the stored tower must reproduce: short and long (past the context), odd whitespace,
# accents and other scripts, digits and punctuation, an empty text.
PROBES = (
    "probe",
    "a dog runs through the snow",
    "  Dense   passage\tretrieval\nfor open-domain QA  ",
    "Über café naïve façade — 東京 2024: 3.5% of β-blockers (n=1,204)!",
    "",
    " ".join(["long text that runs past the tower's context length"] * 40),
)


def spec_key(spec: str) -> str | None:
    """A key that changes whenever what ``load_encoder(spec)`` builds may change, found without
    loading it; ``None`` for specs whose text tower is not cached (``openclip:``, ``hf-hub:``)."""
    try:
        return _spec_key(spec)
    except OSError:  # a checkpoint that cannot be read here: loaded (and failing) in full
        return None


def _model(spec: str) -> str:
    """What ``spec`` loads, as one name: ``lite:efficientnet_lite0`` is ``lite``; a folder by its path."""
    spec = spec.strip()
    if spec.startswith("lite:") and spec.partition(":")[2] in ("", "efficientnet_lite0"):
        return "lite"
    return spec if spec == "lite" or spec.startswith("lite:") else str(Path(spec).expanduser().resolve())


def _spec_key(spec: str) -> str | None:
    spec = spec.strip()
    versions = disk_cache.package_versions(PACKAGES)
    parts: dict[str, Any] = {"format": FORMAT, "versions": versions, "code": code_digest(CODE)}
    if spec == "lite" or spec.startswith("lite:"):
        parts.update(spec=_model(spec))
    else:
        path = Path(spec).expanduser()
        files = [path / name for name in (CONFIG_FILE, WEIGHTS_FILE, MMRAG_FILE)]
        if not all(f.is_file() for f in files):
            return None
        try:
            meta = json.loads((path / MMRAG_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict) or meta.get("tokenizer", {}).get("kind") != "hf":
            return None
        stats = [file_stamp(f) for f in files]
        parts.update(spec=_model(spec), files=stats)
    return disk_cache.make_key(parts)


def open_tower(spec: str, *, threads: int = 0, full: Callable[[], DualEncoder]) -> QueryTower | None:
    """The stored text tower of ``spec``, or ``None`` when there is none (or it cannot be read:
    logged, and the caller loads the full encoder). ``full`` loads the whole encoder, for anything
    but text (image queries, ``describe``'s parameter count)."""
    root = cache_root()
    key = spec_key(spec) if root is not None else None
    if root is None or key is None or not disk_cache.ready(root, key):
        return None
    try:
        return QueryTower(root / key, threads=threads, full=full)
    except Exception as exc:  # noqa: BLE001 - a broken cache entry must never break a query
        # removed, so that this run's full encoder stores it again (remember)
        log.warning("query tower cache %s unreadable (%s); loading the full encoder", root / key, exc)
        disk_cache.drop(root / key)
        return None


def remember(encoder: DualEncoder) -> Path | None:
    """Store ``encoder``'s text tower for later processes' text queries (no-op when it is stored
    already, not cacheable, or the cache is off). Returns the folder, or ``None``."""
    root = cache_root()
    key = spec_key(encoder.spec) if root is not None else None
    if root is None or key is None or disk_cache.ready(root, key) or disk_cache.failed(root, key):
        return None
    tokenizer = getattr(encoder, "tokenizer", None)
    if not isinstance(tokenizer, DynamicHFTokenizer) or getattr(encoder, "model", None) is None:
        return None
    from mmrag.encoders.onnxrt import ort_available

    if not ort_available():
        return None
    try:
        return _write(encoder, tokenizer, root, key)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation: never fail the command
        log.warning("could not store the text tower of %s for fast queries: %s", encoder.id, exc)
        return None


def _write(encoder: OpenClipEncoder, tokenizer: DynamicHFTokenizer, root: Path, key: str) -> Path | None:
    import torch

    from mmrag.encoders.onnxrt import export_onnx

    tmp = disk_cache.new_tmp(root, key)
    if tmp is None:
        return None
    tower = encoder.model.text
    try:
        (tmp / MODEL_FILE).write_bytes(export_onnx(tower, tokenizer(["probe", "a longer probe text"])))
        tokenizer.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
        model = "tower:" + _model(encoder.spec)  # older entries of the same model are dropped
        meta = {
            "format": FORMAT,
            "key": key,
            "model": model,
            "id": encoder.id,
            "dim": encoder.dim,
            "spec": encoder.spec,
            "aligned": encoder.aligned,
            "context_length": tokenizer.context_length,
            "pad_id": int(tokenizer.tokenizer.pad_token_id or 0),
            "describe": encoder.describe(),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        stored = QueryTower(tmp, threads=1, full=lambda: encoder)
        texts = list(PROBES)
        for text in texts:
            want = tokenizer([text or " "])[0].tolist()  # as OpenClipEncoder.encode_text tokenizes
            if stored.token_ids([text])[0] != want:
                disk_cache.give_up(root, key, f"{encoder.id}: the stored tokenizer differs on {text!r}")
                return None
        with torch.inference_mode():
            ref = np.stack([tower(tokenizer([t or " "]))[0].float().numpy() for t in texts])
        parity = float(np.min(np.sum(stored.encode_text(texts) * l2_normalize(ref), axis=1)))
        if parity < PARITY_MIN:
            disk_cache.give_up(
                root, key, f"{encoder.id}: stored text tower has cosine {parity:.6f} < {PARITY_MIN}"
            )
            return None
        meta["parity"] = parity
        return disk_cache.finish(tmp, root, key, meta, f"the text tower of {encoder.id}")
    finally:
        disk_cache.drop(tmp)


class QueryTower:
    """A text-query encoder from the cache: ``encode_text`` runs the stored ONNX tower; anything
    else (images, the model itself) loads the full encoder on first use and goes to it.

    Args:
        folder: A cache entry written by :func:`remember`.
        threads: ONNX Runtime intra-op threads (0: one per physical core).
        full: Loads the full encoder.
    """

    def __init__(self, folder: Path, *, threads: int, full: Callable[[], DualEncoder]) -> None:
        import tokenizers

        from mmrag.encoders.onnxrt import open_session

        self.folder = folder
        self.meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"format {self.meta.get('format')} is not {FORMAT}")
        self.id: str = self.meta["id"]
        self.dim: int = int(self.meta["dim"])
        self.spec: str = self.meta["spec"]
        self.aligned: bool = bool(self.meta["aligned"])
        self._tokenizer = tokenizers.Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=int(self.meta["context_length"]))
        self._pad = int(self.meta["pad_id"])
        self._session = open_session(str(folder / MODEL_FILE), threads=threads)
        self._full_loader = full
        self._full: DualEncoder | None = None
        self._lock = threading.Lock()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids as the tower's own tokenizer makes them (whitespace runs collapsed, truncated):
        ``OpenClipEncoder.encode_text`` gives an empty text as ``" "``, which its tokenizer cleans."""
        cleaned = [" ".join((t or " ").split()) for t in texts]
        return [e.ids for e in self._tokenizer.encode_batch(cleaned)]

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        """Embed texts; L2-normalised ``(len(texts), dim)`` float32 rows, as the full encoder's."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding per batch
        bs = batch_size or 32
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            ids = self.token_ids([texts[i] for i in idx])
            batch = np.full((len(ids), max(map(len, ids))), self._pad, dtype=np.int64)
            for row, seq in enumerate(ids):
                batch[row, : len(seq)] = seq
            out[idx] = self._session.run(None, {"x": batch})[0]
        return l2_normalize(out)

    def full(self) -> DualEncoder:
        """The full encoder (loaded on first use)."""
        with self._lock:
            if self._full is None:
                self._full = self._full_loader()
            return self._full

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> FloatArray:
        return self.full().encode_image(images, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        """What the full encoder said when the tower was stored, and where the tower is."""
        return {
            **self.meta["describe"],
            "text_runtime": "onnx (query tower cache)",
            "query_tower": str(self.folder),
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.full(), name)
