"""REST API (FastAPI, extra ``api``): ``mmrag serve`` or ``uvicorn`` on :func:`mmrag.api.app.build_app`.

Settings: the usual ``MMRAG_STORE`` / ``MMRAG_MODEL`` / ``MMRAG_TENANCY`` plus the API's own
``MMRAG_SERVE_API_KEY``, ``MMRAG_TENANT_KEYS``, ``MMRAG_INGEST_ROOT``, ``MMRAG_UPLOAD_DIR``,
``MMRAG_MAX_UPLOAD_MB``, ``MMRAG_SEARCH_TIMEOUT``, ``MMRAG_INGEST_TIMEOUT``, ``MMRAG_API_WORKERS``,
``MMRAG_BATCH_MAX``, ``MMRAG_BATCH_WAIT_MS``, ``MMRAG_RERANK_BATCH_PAIRS``, ``MMRAG_QUEUE_SIZE``,
``MMRAG_QUEUE_WAIT``, ``MMRAG_GIL_SWITCH_MS``, ``MMRAG_ACCESS_LOG``
(see :class:`mmrag.api.config.ApiConfig`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mmrag._lazy import require

if TYPE_CHECKING:
    from mmrag.config import Settings

__all__ = ["serve"]


def serve(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, access_log: bool | None = None
) -> None:
    """Open the store, load the encoder and serve the API until interrupted (``access_log``: a
    line per request; ``None``: ``MMRAG_ACCESS_LOG``, on by default)."""
    uvicorn = require("uvicorn", "api")
    from mmrag.api.app import build_app
    from mmrag.api.config import ApiConfig

    config = ApiConfig.from_env()
    if host not in ("127.0.0.1", "localhost", "::1") and not (config.api_key or config.tenant_keys):
        logging.getLogger("mmrag.api").warning(
            "serving on %s without an API key: anyone who can reach it can read and write the store; "
            "set MMRAG_SERVE_API_KEY",
            host,
        )
    app = build_app(settings, config)
    config.apply_to_process()  # the GIL switch interval (MMRAG_GIL_SWITCH_MS)
    # One process: an embedded Edge store admits one process, and the encoder is loaded once.
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        log_level="info",
        access_log=config.access_log if access_log is None else access_log,
        timeout_graceful_shutdown=10,
    )
