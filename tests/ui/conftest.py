"""UI fixtures: a tiny real store (a few ingest_demo files + Flickr8k dev photos), built with ``lite``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="the 'ui' extra (streamlit) is not installed")

from mmrag.encoders import cached_encoder
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.ingest import IngestOptions, IngestRunner, read_captions
from mmrag.store import QdrantStore

DEMO_FILES = (
    "pdf/layoutparser-paper-2p.pdf",
    "markdown/itm-flickr8k-project-README.md",
    "images/photos/917574521_74fab68514.jpg",
)
FLICKR_IMAGES = 8


@pytest.fixture(scope="session")
def ui_encoder() -> OpenClipEncoder:
    """``lite`` from the per-process cache, keyed as the app asks for it (batch 32, MMRAG_THREADS=1)."""
    return cached_encoder("lite", batch_size=32, threads=1)


@pytest.fixture(scope="session")
def flickr_images(data_dir: Path) -> list[Path]:
    names = (data_dir / "flickr8k" / "splits" / "dev.txt").read_text().split()[:FLICKR_IMAGES]
    return [data_dir / "flickr8k" / "images" / n for n in names]


@pytest.fixture(scope="session")
def ui_store(
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    ui_encoder: OpenClipEncoder,
    flickr_images: list[Path],
) -> Path:
    """A closed Qdrant Edge store directory; tests that write to it must use ``fresh_store``."""
    location = tmp_path_factory.mktemp("ui") / "store"
    files = [data_dir / "ingest_demo" / f for f in DEMO_FILES] + flickr_images
    captions = read_captions(data_dir / "flickr8k" / "captions.jsonl")
    with QdrantStore.open(str(location)) as store:
        summary = IngestRunner(ui_encoder, store, IngestOptions(), progress=False).run(
            [], files=files, captions=captions
        )
    assert summary.files_loaded == len(files), summary.skipped
    return location


@pytest.fixture
def fresh_store(ui_store: Path, tmp_path: Path) -> Path:
    """A private copy of ``ui_store`` for tests that ingest into it."""
    dest = tmp_path / "store"
    shutil.copytree(ui_store, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest
