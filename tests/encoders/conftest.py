"""Encoder fixtures: the built ``lite`` model is loaded once per session (~10 s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mmrag.encoders import load_encoder
from mmrag.encoders.openclip import OpenClipEncoder


@pytest.fixture(scope="session")
def lite() -> Iterator[OpenClipEncoder]:
    """The untrained ``lite`` encoder; tests must not mutate it.

    Loaded with ``threads=1``: on the 2 shared cores of the CI machine one intra-op thread is
    3-5x faster than two for these small batches (torch's setting is restored afterwards).
    """
    before = torch.get_num_threads()
    yield load_encoder("lite", threads=1)
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def image_paths(data_dir: Path) -> list[Path]:
    """Three real photos of different sizes and formats from the shared data."""
    folder = data_dir / "skimage_clip8" / "images"
    paths = [folder / name for name in ("astronaut.png", "coffee.png", "rocket.jpg")]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        pytest.fail(f"shared images missing: {missing}")
    return paths
