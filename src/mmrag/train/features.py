"""Frozen-tower features, computed once and cached on disk.

Training the projection heads of a ``lite`` model only needs the towers' outputs: the pooled
EfficientNet trunk features of each image and the mean-pooled MiniLM features of each text.
Extracting them is the slow part on a CPU (tens of images per second), so they are computed once
and cached under a key made of the towers' weights and preprocessing plus the content of every
input file (or text): a rerun with the same data loads them in seconds, a changed file or tower
recomputes. Text features follow the process's text precision (``MMRAG_TEXT_PRECISION``, as every large
text batch): on CPUs with bf16 instructions a bf16 copy of the tower, ~1.75x faster and within cosine
0.9999 of fp32, under a cache key of its own, so the same machine always trains on the same features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from torch import Tensor, nn

from mmrag._lazy import require
from mmrag.encoders.bf16 import Bf16Forward, texts_in_bf16
from mmrag.encoders.onnxrt import FastForward
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.train.finetune import block_input_features
from mmrag.train.lite import check_lite
from mmrag.train.tower import Augment, view_block_inputs

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
DEFAULT_CACHE = Path(".cache") / "features"

__all__ = [
    "DEFAULT_CACHE",
    "FeatureCache",
    "TowerKeys",
    "check_lite",
    "features_in_bf16",
    "image_features",
    "text_features",
    "tower_key",
]


class TowerKeys(NamedTuple):
    """Identity of each frozen tower: image features and text features are cached separately, so
    a new image tower (e.g. Lite2) reuses the cached text features and vice versa."""

    image: str
    text: str


def _digest(module: Any, extra: Any) -> str:
    torch = require("torch", "core")
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tower_key(encoder: OpenClipEncoder) -> TowerKeys:
    """Keys of the frozen towers: weights plus image preprocessing / tokenizer settings."""
    check_lite(encoder)
    return TowerKeys(
        image=_digest(encoder.model.visual.trunk, encoder.info.get("preprocess_cfg", {})),
        text=_digest(encoder.model.text.transformer, encoder.info.get("tokenizer", {})),
    )


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _paths_digest(tag: str, paths: Sequence[Path]) -> str:
    """Cache key part of ``tag`` plus the content of every file in ``paths``, in order."""
    h = hashlib.sha256(tag.encode())
    for p in paths:
        h.update(_file_digest(Path(p)).encode())
    return h.hexdigest()[:24]


def image_features(
    encoder: OpenClipEncoder, paths: Sequence[Path], *, batch_size: int = 64, progress: bool = True
) -> F32:
    """Pooled trunk features (before the image head) of every image."""
    torch = require("torch", "core")
    check_lite(encoder)
    from tqdm import tqdm

    # The same ONNX Runtime path as encode_image (~4x eager torch on CPU), parity-checked.
    trunk = FastForward(  # no spinning: image_batches' decoding threads share the cores
        encoder.model.visual.trunk.eval(),
        runtime=encoder.image_forward.runtime,
        name="image trunk",
        spin=False,
    )
    out: list[F32] = []
    with (
        torch.inference_mode(),
        tqdm(
            total=len(paths), desc="image features", unit="img", disable=not progress, dynamic_ncols=True
        ) as bar,
    ):
        for _, batch in encoder.image_batches(list(paths), batch_size):
            out.append(trunk(batch).float().numpy())
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class PooledText(nn.Module):
    """The text tower up to its pooler (the features before the head), as a module of token ids."""

    def __init__(self, text: Any) -> None:
        super().__init__()
        self.text = text

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != self.text.config.pad_token_id).long()
        out = self.text.transformer(input_ids=ids, attention_mask=mask)
        return self.text.pooler(out, mask)  # type: ignore[no-any-return]


# One pooled-text forward per encoder, kept while the encoder lives: its ONNX export (~1 s) is made
# once, not per call (FastForward re-exports by itself when the tower's weights change). Keyed by
# the encoder, which the forward does not refer to, so the entry goes with it.
_POOLED: weakref.WeakKeyDictionary[OpenClipEncoder, FastForward] = weakref.WeakKeyDictionary()


def _pooled_forward(encoder: OpenClipEncoder) -> FastForward:
    runtime = encoder.image_forward.runtime
    forward = _POOLED.get(encoder)
    if forward is None or forward.runtime != runtime or forward.module.text is not encoder.model.text:
        forward = FastForward(PooledText(encoder.model.text), runtime=runtime, name="text tower (features)")
        _POOLED[encoder] = forward
    forward.module.eval()  # frozen-tower features: no dropout, the export's path
    return forward


# The bf16 copy of the same, where text batches run in bf16 (encoders.bf16): checked against the fp32
# forward above on its first batch, re-made when the weights change.
_POOLED_BF16: weakref.WeakKeyDictionary[OpenClipEncoder, Bf16Forward] = weakref.WeakKeyDictionary()


def features_in_bf16(precision: str | None = None) -> bool:
    """Whether text features are extracted on a bf16 copy of the tower: ``precision`` (``auto``,
    ``fp32``, ``bf16``; ``None``: the process default, ``MMRAG_TEXT_PRECISION``) as for an encoder's
    texts (:func:`mmrag.encoders.bf16.texts_in_bf16`). The feature cache keys say which."""
    return texts_in_bf16(precision)


def _pooled_bf16(encoder: OpenClipEncoder) -> Bf16Forward:
    fp32 = _pooled_forward(encoder)
    forward = _POOLED_BF16.get(encoder)
    if forward is None or forward.fallback is not fp32:
        tokens = encoder.tokenizer
        forward = Bf16Forward(
            fp32.module,
            fallback=fp32,
            name="text tower (features)",
            example=lambda: tokens(["probe", "a longer probe text, so that the first one is padded"]),
        )
        _POOLED_BF16[encoder] = forward
    return forward


def text_features(
    encoder: OpenClipEncoder,
    texts: Sequence[str],
    *,
    batch_size: int = 128,
    progress: bool = True,
    precision: str | None = None,
) -> F32:
    """Mean-pooled text-tower features (before the text head) of every text.

    ``precision`` as :func:`features_in_bf16`: on CPUs with bf16 instructions the default runs a traced
    bf16 copy of the tower (~1.75x the fp32 rate on Flickr8k captions with AVX512-BF16, per-text
    cosine >= 0.9999 to fp32, checked on the first batch); elsewhere fp32 in ONNX Runtime.
    """
    torch = require("torch", "core")
    check_lite(encoder)
    from tqdm import tqdm

    # fp32: ONNX Runtime, parity-checked as for the images: ~2x eager torch on CPU for the same
    # features (cosine 0.9999998, max abs difference ~1e-6 on Flickr8k captions), so one cache key;
    # the bf16 copy's features have a key of their own (FeatureCache.texts). Batches of 128: faster
    # per text than 256 in both runtimes (cache-sized activations).
    forward = _pooled_bf16(encoder) if features_in_bf16(precision) else _pooled_forward(encoder)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
    result: F32 | None = None
    with (
        torch.inference_mode(),
        tqdm(
            total=len(texts), desc="text features", unit="text", disable=not progress, dynamic_ncols=True
        ) as bar,
    ):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            pooled = forward(encoder.tokenizer([texts[i] for i in idx])).float().numpy()
            if result is None:
                result = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            result[idx] = pooled
            bar.update(len(idx))
    return result if result is not None else np.zeros((0, 0), dtype=np.float32)


class FeatureCache:
    """Disk cache of frozen-tower features keyed by towers + input content.

    Args:
        root: Cache folder (default ``.cache/features``).

    Example:
        >>> cache = FeatureCache()                                   # doctest: +SKIP
        >>> feats = cache.images(encoder, paths)                     # doctest: +SKIP
    """

    def __init__(self, root: str | Path = DEFAULT_CACHE, *, progress: bool = True) -> None:
        self.root = Path(root)
        self.progress = progress
        self.hits = 0
        self.misses = 0

    def _load_or(self, key: str, compute: Any) -> F32:
        path = self.root / f"{key}.npy"
        if path.exists():
            self.hits += 1
            return np.load(path)  # type: ignore[no-any-return]
        self.misses += 1
        feats = compute()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(path)  # atomic: an interrupted run never leaves a truncated cache entry
        return feats  # type: ignore[no-any-return]

    def images(
        self, encoder: OpenClipEncoder, paths: Sequence[Path], *, towers: TowerKeys | None = None
    ) -> F32:
        h = _paths_digest((towers or tower_key(encoder)).image, paths)
        return self._load_or(f"img-{h}", lambda: image_features(encoder, paths, progress=self.progress))

    def texts(
        self, encoder: OpenClipEncoder, texts: Sequence[str], *, towers: TowerKeys | None = None
    ) -> F32:
        h = hashlib.sha256((towers or tower_key(encoder)).text.encode())
        if features_in_bf16():  # fp32 keys stay what they were
            h.update(b"bf16")
        for t in texts:
            h.update(hashlib.sha256(t.encode()).digest())
        return self._load_or(
            f"txt-{h.hexdigest()[:24]}", lambda: text_features(encoder, texts, progress=self.progress)
        )

    def block_inputs(
        self,
        encoder: OpenClipEncoder,
        paths: Sequence[Path],
        n_blocks: int,
        *,
        towers: TowerKeys | None = None,
    ) -> npt.NDArray[np.float16]:
        """Cached input of the last ``n_blocks`` trunk blocks per image (see :mod:`mmrag.train.finetune`)."""
        h = _paths_digest(f"{(towers or tower_key(encoder)).image}-blocks{n_blocks}", paths)
        feats = self._load_or(
            f"blk{n_blocks}-{h}",
            lambda: block_input_features(encoder, paths, n_blocks, progress=self.progress),
        )
        return feats.astype(np.float16, copy=False)

    def block_views(
        self,
        encoder: OpenClipEncoder,
        paths: Sequence[Path],
        n_blocks: int,
        augment: Augment,
        *,
        seed: int = 0,
        towers: TowerKeys | None = None,
    ) -> npt.NDArray[np.float16]:
        """Cached block inputs of every view of every image, ``(views, images, C, H, W)``; view 0 is the
        clean one (see :mod:`mmrag.train.tower`). One view is :meth:`block_inputs` itself."""
        if augment.views == 1:
            return self.block_inputs(encoder, paths, n_blocks, towers=towers)[None]
        import torchvision  # the augmentations are its transforms: a new version may draw other views

        tag = f"{(towers or tower_key(encoder)).image}-blocks{n_blocks}-{augment.key()}-seed{seed}"
        tag += f"-tv{torchvision.__version__}"
        h = _paths_digest(tag, paths)
        workers = min(4, max(1, (os.cpu_count() or 2) - 1))
        feats = self._load_or(
            f"views{augment.views}-blk{n_blocks}-{h}",
            lambda: view_block_inputs(
                encoder, paths, n_blocks, augment, seed=seed, workers=workers, progress=self.progress
            ),
        )
        return feats.astype(np.float16, copy=False)
