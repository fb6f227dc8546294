"""A deterministic fake dual encoder for tests where the model is not the subject."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmrag.encoders.base import FloatArray, l2_normalize


class HashEncoder:
    """Bag-of-words hashing for text; colour histogram for images. Same words → similar vectors."""

    def __init__(self, dim: int = 64, encoder_id: str = "hash-test") -> None:
        self.dim = dim
        self.id = encoder_id
        self.spec = "hash"
        self.aligned = True
        self.text_calls = 0
        self.image_calls = 0

    def _word(self, word: str) -> int:
        return int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        self.text_calls += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, self._word(w)] += 1.0
        return l2_normalize(out)

    def encode_image(
        self, images: Sequence[Image.Image | str | Path], *, batch_size: int | None = None
    ) -> FloatArray:
        self.image_calls += len(images)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(images):
            img = Image.open(im) if isinstance(im, str | Path) else im
            arr = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32).reshape(-1)
            out[i, : min(self.dim, arr.size)] = arr[: self.dim] + 1.0
        return l2_normalize(out)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "dim": self.dim}
