"""REST API settings (``MMRAG_SERVE_*`` and friends) and upload-name sanitising."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mmrag.config import env_flag
from mmrag.errors import ConfigError
from mmrag.retriever.batching import BatchSettings
from mmrag.tenancy import check_tenant


def _env_float(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {raw!r}")
    return value


def parse_tenant_keys(raw: str | None) -> dict[str, str]:
    """``"acme:KEY1,globex:KEY2"`` → ``{"KEY1": "acme", "KEY2": "globex"}``."""
    out: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        tenant, sep, key = item.strip().partition(":")
        if not sep or not key:
            raise ConfigError(f"MMRAG_TENANT_KEYS entries are TENANT:KEY, got {item.strip()!r}")
        out[key] = check_tenant(tenant)
    return out


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """REST API settings (env ``MMRAG_SERVE_*`` and friends; see :meth:`from_env`).

    Attributes:
        api_key: Key every request (but ``/health`` and the docs) must send as ``X-API-Key``;
            ``None`` with no ``tenant_keys`` leaves the API open (bind it to loopback then).
        tenant_keys: API key → tenant; a request with such a key can only read and write that tenant.
        ingest_root: Server-side folders ``POST /ingest`` may read (``path=``); ``None`` disables paths.
        upload_dir: Where uploaded files are kept (chunks point at them).
        max_upload_mb: Largest request body.
        search_timeout_s / ingest_timeout_s: Per-request time limits (504 after them).
        workers: Threads that run searches and ingests off the event loop.
        ingest_batch_size: Chunks per encoder call during an API ingest. The encoder runs as many
            calls at once as the cores fit (:mod:`mmrag.encoders.lanes`; one with torch's default
            threads), so a search waits for at most one such batch: small batches keep search
            latency low while an ingest runs, at some cost to ingest speed.
        ingest_yield_s: Before each batch, an ingest waits up to this long for in-flight searches
            to finish (searches first; the bound keeps the ingest moving under constant load).
        max_k / max_pool: Caps on ``k`` and ``pool``.
        batch_max: Searches gathered into one text-encoder pass and one rerank batch (and run at
            once); 1 turns micro-batching off (see :mod:`mmrag.retriever.batching`).
        batch_wait_ms: How long a batch's first search waits for others to join (0: never).
        batch_lanes: Encoder (and rerank) batches run at once; ``None``: as many as the cores fit
            at torch's thread count (2 on 2 cores with ``MMRAG_THREADS=1``).
        rerank_batch_pairs: Most (query, document) pairs in one rerank batch; on CPU a bigger
            batch costs the same per pair, so the default (one forward pass) keeps latency down.
        queue_size: Searches admitted at once (running or queued); one more gets ``503`` with
            ``Retry-After`` at once instead of waiting.
        queue_wait_s: Also ``503`` when the searches admitted would take longer than this to
            finish (at the rate they have been finishing); ``None``: half of ``search_timeout_s``,
            so a search is refused at once rather than left to time out (504).
        gil_switch_ms: The server process's GIL switch interval (``sys.setswitchinterval``), set
            by ``mmrag serve``; ``0`` leaves Python's 5 ms. A forward pass that ends while the
            event loop or another search runs Python waits up to this long for the GIL; at 1 ms
            8 clients got ~5% more queries/s on 2 cores (docs/serving.md).
        access_log: Whether ``mmrag serve`` logs a line per request (uvicorn's access log).
    """

    api_key: str | None = None
    tenant_keys: Mapping[str, str] = field(default_factory=dict)
    ingest_root: Path | None = None
    upload_dir: Path | None = None
    max_upload_mb: float = 20.0
    search_timeout_s: float = 30.0
    ingest_timeout_s: float = 600.0
    workers: int = 4
    ingest_batch_size: int = 2
    ingest_yield_s: float = 0.5
    max_k: int = 100
    max_pool: int = 1000
    batch_max: int = 32
    batch_wait_ms: float = 5.0
    batch_lanes: int | None = None
    rerank_batch_pairs: int = 32
    queue_size: int = 256
    queue_wait_s: float | None = None
    gil_switch_ms: float = 1.0
    access_log: bool = True

    def __post_init__(self) -> None:
        if self.gil_switch_ms and not 0.05 <= self.gil_switch_ms <= 100:
            raise ConfigError(
                "MMRAG_GIL_SWITCH_MS must be 0 (Python's default) or between 0.05 and 100, "
                f"got {self.gil_switch_ms:g}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        e = os.environ if env is None else env
        root = e.get("MMRAG_INGEST_ROOT")
        upload = e.get("MMRAG_UPLOAD_DIR")
        return cls(
            api_key=e.get("MMRAG_SERVE_API_KEY") or None,
            tenant_keys=parse_tenant_keys(e.get("MMRAG_TENANT_KEYS")),
            ingest_root=Path(root).resolve() if root else None,
            upload_dir=Path(upload) if upload else None,
            max_upload_mb=_env_float(e, "MMRAG_MAX_UPLOAD_MB", 20.0),
            search_timeout_s=_env_float(e, "MMRAG_SEARCH_TIMEOUT", 30.0),
            ingest_timeout_s=_env_float(e, "MMRAG_INGEST_TIMEOUT", 600.0),
            workers=int(_env_float(e, "MMRAG_API_WORKERS", 4)),
            ingest_batch_size=int(_env_float(e, "MMRAG_INGEST_BATCH", 2)),
            ingest_yield_s=_env_float(e, "MMRAG_INGEST_YIELD", 0.5),
            batch_max=int(_env_float(e, "MMRAG_BATCH_MAX", 32)),
            batch_wait_ms=_env_float(e, "MMRAG_BATCH_WAIT_MS", 5.0, allow_zero=True),
            batch_lanes=int(_env_float(e, "MMRAG_BATCH_LANES", 0, allow_zero=True)) or None,
            rerank_batch_pairs=int(_env_float(e, "MMRAG_RERANK_BATCH_PAIRS", 32)),
            queue_size=int(_env_float(e, "MMRAG_QUEUE_SIZE", 256)),
            queue_wait_s=_env_float(e, "MMRAG_QUEUE_WAIT", 0) or None,
            gil_switch_ms=_env_float(e, "MMRAG_GIL_SWITCH_MS", 1.0, allow_zero=True),
            access_log=env_flag(e, "MMRAG_ACCESS_LOG", True),
        )

    @property
    def batching(self) -> BatchSettings:
        """The search micro-batching settings (checked: a bad value is a ConfigError)."""
        wait = self.queue_wait_s if self.queue_wait_s is not None else self.search_timeout_s / 2
        return BatchSettings(
            max_batch=self.batch_max,
            max_wait_ms=self.batch_wait_ms,
            rerank_pairs=self.rerank_batch_pairs,
            queue_size=self.queue_size,
            max_queue_wait_s=wait,
            lanes=self.batch_lanes,
        )

    def apply_to_process(self) -> None:
        """Set what this config says about the whole process (the GIL switch interval); for the
        server's own process only (``mmrag serve``), never on import."""
        if self.gil_switch_ms:
            sys.setswitchinterval(self.gil_switch_ms / 1000.0)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A client's file name reduced to a harmless basename (no folders, no dot-files)."""
    base = _SAFE.sub("_", Path(name.replace("\\", "/")).name).lstrip(".")
    return base[:120] or "upload"
