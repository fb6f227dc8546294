"""Fakes and data makers shared by the store tests (imported by conftest and the test modules)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mmrag.types import Chunk, chunk_id

SOURCES = ("docs/a.md", "docs/b.pdf", "photos/c.jpg")


@dataclass(frozen=True)
class FakeEncoder:
    """What the store reads from an encoder: nothing but these four attributes."""

    id: str = "fake-encoder-v1"
    dim: int = 8
    spec: str = "fake:v1"
    aligned: bool = False


def unit_vectors(n: int, dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_chunks(n: int, *, start: int = 0) -> list[Chunk]:
    """Alternating text / image chunks spread over three sources, with deterministic ids."""
    chunks = []
    for i in range(start, start + n):
        source = SOURCES[i % len(SOURCES)]
        if i % 2 == 0:
            chunks.append(
                Chunk(
                    id=chunk_id(source, f"text {i}", i),
                    modality="text",
                    source=source,
                    text=f"text chunk number {i}",
                    image=None,
                    metadata={"position": i},
                )
            )
        else:
            chunks.append(
                Chunk(
                    id=chunk_id(source, f"image {i}", i),
                    modality="image",
                    source=source,
                    text=f"caption {i}",
                    image=f"{source}#figure{i}",
                    metadata={"position": i, "page": i // 2},
                )
            )
    return chunks
