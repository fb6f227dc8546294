"""Frozen settings. ``MMRAG_*`` environment variables are read here (and in the CLI) only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from mmrag.errors import ConfigError

DEFAULT_STORE = "./.mmrag"
DEFAULT_MODEL = "lite"
DEFAULT_FUSION: Final = "dbsf"  # hybrid search's fusion unless told (Retriever, CLI, API, UI, LangChain)
DEFAULT_DATA = "../shared/data"

# Accepted values of the inference switches; encoders.onnxrt, encoders.bf16 and rerank.cross_encoder check
# against these same tuples.
RUNTIMES: tuple[str, ...] = ("auto", "onnx", "torch")
RERANK_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
TEXT_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off setting: ``1/0``, ``true/false``, ``yes/no`` or ``on/off`` (any case); unset or
    empty gives ``default``, anything else a :class:`ConfigError` naming the variable.

    Example:
        >>> env_flag({"MMRAG_TENANCY": "Off"}, "MMRAG_TENANCY", True)
        False
    """
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {env.get(name)!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Run-time settings shared by the CLI, the retriever and ingest.

    Attributes:
        store: Directory of the embedded Qdrant Edge store, or an ``http(s)://`` URL of a
            Qdrant server (``:memory:`` is accepted for tests only).
        model: Encoder spec (see :func:`mmrag.encoders.load_encoder`); ``None`` means
            "the encoder the store was built with", falling back to ``lite``.
        api_key: Qdrant server API key (server backend only).
        collection: Collection name on a Qdrant server.
        threads: torch intra-op threads; 0 keeps torch's default.
        batch_size: Encoder batch size.
        data: Root of the shared datasets (tests, eval, demo).
        ingest_root: Folder the UI may ingest server-side folders from; ``None``: the working
            directory and ``data``.
        tenancy: Multi-tenant store: every search must name one tenant (``MMRAG_TENANCY=1``).
        reranker: Cross-encoder for the rerank stage (HF name, folder, or a ``mmrag train-reranker``
            checkpoint; ``MMRAG_RERANKER``); ``None``: no rerank stage in the UI and the API.
        shards / replication: Shard number and replication factor of collections created on a Qdrant
            cluster (``MMRAG_SHARDS``, ``MMRAG_REPLICATION_FACTOR``; 0 = the server's default).
        runtime: Where the image tower runs: ``auto`` (ONNX Runtime when installed and within
            parity of torch), ``onnx`` or ``torch`` (``MMRAG_RUNTIME``).
        rerank_precision: The cross-encoder's dtype: ``auto`` (bf16 on CPUs with AMX or
            AVX512-BF16, else fp32), ``fp32`` or ``bf16`` (``MMRAG_RERANK_PRECISION``).
        text_precision: The text tower's dtype (ingest, micro-batched and lone queries): ``auto``
            (bf16 on CPUs with AMX or AVX512-BF16, else fp32), ``fp32`` or ``bf16``
            (``MMRAG_TEXT_PRECISION``).
        edge_search_threads: Threads of a Qdrant Edge store's search pool (``MMRAG_EDGE_SEARCH_THREADS``,
            default 1: search on the calling thread; :mod:`mmrag.store.edge_config` says why).

    Example:
        >>> s = Settings.from_env({"MMRAG_STORE": "/tmp/x"})
        >>> s.store
        '/tmp/x'
    """

    store: str = DEFAULT_STORE
    model: str | None = None
    api_key: str | None = None
    collection: str = "mmrag"
    threads: int = 0
    batch_size: int = 32
    data: str = DEFAULT_DATA
    ingest_root: str | None = None
    tenancy: bool = False
    shards: int = 0
    replication: int = 0
    reranker: str | None = None
    runtime: str = "auto"
    rerank_precision: str = "auto"
    text_precision: str = "auto"
    edge_search_threads: int = 1

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = torch default), got {self.threads}")
        if self.edge_search_threads < 1:
            got = self.edge_search_threads
            raise ConfigError(f"edge_search_threads must be >= 1 (MMRAG_EDGE_SEARCH_THREADS), got {got}")
        if self.shards < 0 or self.replication < 0:
            raise ConfigError("shards and replication must be >= 0 (0 = the server's default)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be auto, onnx or torch (MMRAG_RUNTIME), got {self.runtime!r}")
        if self.rerank_precision not in RERANK_PRECISIONS:
            raise ConfigError(
                "rerank_precision must be auto, fp32 or bf16 (MMRAG_RERANK_PRECISION), "
                f"got {self.rerank_precision!r}"
            )
        if self.text_precision not in TEXT_PRECISIONS:
            raise ConfigError(
                "text_precision must be auto, fp32 or bf16 (MMRAG_TEXT_PRECISION), "
                f"got {self.text_precision!r}"
            )
        if not self.store:
            raise ConfigError("store must be a directory, an http(s):// URL or ':memory:'")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``MMRAG_*`` variables (``os.environ`` by default)."""
        e = os.environ if env is None else env

        def _int(name: str, default: int) -> int:
            raw = e.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError as exc:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc

        env_flag(e, "MMRAG_PIN_LANES", True)  # read by mmrag.encoders.lanes at import; checked here
        return cls(
            store=e.get("MMRAG_STORE") or DEFAULT_STORE,
            model=e.get("MMRAG_MODEL") or None,
            api_key=e.get("MMRAG_API_KEY") or e.get("QDRANT_API_KEY") or None,
            collection=e.get("MMRAG_COLLECTION") or "mmrag",
            threads=_int("MMRAG_THREADS", 0),
            batch_size=_int("MMRAG_BATCH_SIZE", 32),
            data=e.get("MMRAG_DATA") or DEFAULT_DATA,
            ingest_root=e.get("MMRAG_INGEST_ROOT") or None,
            shards=_int("MMRAG_SHARDS", 0),
            replication=_int("MMRAG_REPLICATION_FACTOR", 0),
            reranker=e.get("MMRAG_RERANKER") or None,
            runtime=e.get("MMRAG_RUNTIME") or "auto",
            rerank_precision=e.get("MMRAG_RERANK_PRECISION") or "auto",
            text_precision=e.get("MMRAG_TEXT_PRECISION") or "auto",
            edge_search_threads=_int("MMRAG_EDGE_SEARCH_THREADS", 1),
            tenancy=env_flag(e, "MMRAG_TENANCY", False),
        )

    def with_(self, **changes: object) -> Settings:
        """Return a copy with ``changes`` applied, skipping ``None`` values."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def data_path(self) -> Path:
        return Path(self.data)
