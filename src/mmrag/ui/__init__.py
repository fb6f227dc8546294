"""Streamlit app (extra ``ui``): search with every score visible, inspect chunks, see and fill the store.

``mmrag ui`` runs ``streamlit run`` on :data:`APP_PATH` with the settings passed as ``MMRAG_*``
environment variables. Importing this package does not import Streamlit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mmrag.config import Settings

APP_PATH = Path(__file__).with_name("app.py")


def streamlit_command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The ``streamlit run`` command line for the app (headless: no browser, no e-mail prompt)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def app_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) plus the settings as the ``MMRAG_*`` variables the app reads."""
    env = dict(os.environ if base is None else base)
    values = {
        "MMRAG_STORE": settings.store,
        "MMRAG_MODEL": settings.model,
        "MMRAG_API_KEY": settings.api_key,
        "MMRAG_COLLECTION": settings.collection,
        "MMRAG_THREADS": str(settings.threads),
        "MMRAG_BATCH_SIZE": str(settings.batch_size),
        "MMRAG_DATA": settings.data,
        "MMRAG_INGEST_ROOT": settings.ingest_root,
        "MMRAG_RERANKER": settings.reranker,
    }
    for key, value in values.items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env
