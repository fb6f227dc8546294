"""The ``DualEncoder`` protocol every encoder implements, and shared helpers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image

ImageInput = "Image.Image | str | Path"
FloatArray = npt.NDArray[np.float32]


@runtime_checkable
class DualEncoder(Protocol):
    """Embeds text and images into one space.

    Every implementation returns L2-normalised ``float32`` arrays of shape ``(n, dim)``, so
    cosine similarity is a dot product and scores are comparable across modalities.

    Attributes:
        id: Stable identifier; the store names the dense vector after it, so a re-trained
            encoder writes beside the old one instead of over it.
        dim: Embedding dimension.
        spec: The spec string that reloads this encoder (see ``load_encoder``).
        aligned: ``True`` when the image and text heads were trained together, i.e.
            text→image and image→text similarities are meaningful.
    """

    id: str
    dim: int
    spec: str
    aligned: bool

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray: ...

    def encode_image(
        self, images: Sequence[Image.Image | str | Path], *, batch_size: int | None = None
    ) -> FloatArray: ...

    def describe(self) -> dict[str, Any]: ...


def l2_normalize(x: npt.NDArray[Any]) -> FloatArray:
    """Row-wise L2 normalisation into float32; zero rows stay zero instead of becoming NaN."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.asarray(arr / np.maximum(norms, 1e-12), dtype=np.float32)


_VECTOR_NAME_RE = re.compile(r"[^a-z0-9_.-]+")


def vector_name(encoder_id: str) -> str:
    """Qdrant vector name for an encoder id: lower-case, safe characters, bounded length.

    Example:
        >>> vector_name("openclip:ViT-B-32/openai")
        'openclip-vit-b-32-openai'
    """
    name = _VECTOR_NAME_RE.sub("-", encoder_id.lower()).strip("-") or "default"
    if len(name) > 64:
        # Keep distinct ids distinct: a cut tail is replaced by a hash of the whole id.
        digest = hashlib.sha256(encoder_id.encode()).hexdigest()[:10]
        name = f"{name[:53]}-{digest}"
    return name
