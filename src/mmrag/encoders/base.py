"""The ``DualEncoder`` protocol every encoder implements, and shared helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mmrag.types import VectorSpec, vector_name

__all__ = ["DualEncoder", "FloatArray", "PreparedImage", "l2_normalize", "vector_name", "vector_spec"]

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


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image already turned into one encoder's input by its ``prepare_image`` (decoded,
    resized, normalised), so that the caller's own threads do that step ahead of ``encode_image``
    (ingest's parsing threads do, while the encoder runs the batch before).

    Attributes:
        encoder: The id of the encoder that prepared it: only that encoder accepts it.
        data: The input tensor.
    """

    encoder: str
    data: Any


def l2_normalize(x: npt.NDArray[Any]) -> FloatArray:
    """Row-wise L2 normalisation into float32; zero rows stay zero instead of becoming NaN."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.asarray(arr / np.maximum(norms, 1e-12), dtype=np.float32)


def vector_spec(encoder: DualEncoder) -> VectorSpec:
    """The store-facing description of ``encoder``'s dense vector (name, dim, spec, id, aligned).

    Example:
        >>> vector_spec(load_encoder("lite")).name        # doctest: +SKIP
        'lite-untrained-v1'
    """
    return VectorSpec.of(encoder.id, encoder.dim, encoder.spec, aligned=encoder.aligned)
