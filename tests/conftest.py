"""Shared fixtures. Real data comes from ``MMRAG_DATA`` (default ``../shared/data``) through ``data_dir``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Root of the shared datasets; tests that need it fail loudly if it is missing."""
    root = Path(os.environ.get("MMRAG_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        pytest.fail(f"shared data not found at {root}; set MMRAG_DATA to the data folder")
    return root


@pytest.fixture(scope="session", autouse=True)
def query_tower_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text towers the CLI stores for fast queries go to a folder of this session, never the user's
    ``~/.cache`` (``MMRAG_QUERY_CACHE``; subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("query-towers")
    os.environ["MMRAG_QUERY_CACHE"] = str(folder)
    return folder
