"""Store fixtures: both backends (Qdrant Edge in tmp_path, qdrant-client ``:memory:``) and a fake encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from store_fakes import FakeEncoder

from mmrag.store import QdrantStore


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantStore]:
    """An empty store on each backend; closed after the test."""
    location = str(tmp_path / "edge") if request.param == "edge" else ":memory:"
    s = QdrantStore.open(location)
    yield s
    s.close()


@pytest.fixture
def encoder() -> FakeEncoder:
    return FakeEncoder()
