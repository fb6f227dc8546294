"""Which backend a store location means: a directory → Qdrant Edge; a URL or ``:memory:`` → qdrant-client."""

from __future__ import annotations

from mmrag.errors import ConfigError
from mmrag.store.base import Backend
from mmrag.store.edge_config import DEFAULT_SEARCH_THREADS


def is_server(location: str) -> bool:
    """Whether ``location`` names a Qdrant server (or qdrant-client's local ``:memory:`` mode)."""
    return location.startswith(("http://", "https://")) or location == ":memory:"


def make_backend(
    location: str,
    *,
    collection: str = "mmrag",
    api_key: str | None = None,
    indexing_threshold_kb: int | None = None,
    shards: int | None = None,
    replication: int | None = None,
    quantization: str | None = None,
    search_threads: int = DEFAULT_SEARCH_THREADS,
) -> Backend:
    """The backend of ``location``; see :meth:`mmrag.store.QdrantStore.open` for the options."""
    if not location:
        raise ConfigError("store location is empty; pass a directory or a Qdrant URL")
    if is_server(location):
        from mmrag.store.client import ClientBackend

        return ClientBackend(
            location,
            collection=collection,
            api_key=api_key,
            shards=shards,
            replication=replication,
            quantization=quantization,
        )
    from mmrag.store.edge import EdgeBackend

    return EdgeBackend(
        location,
        indexing_threshold_kb=indexing_threshold_kb,
        quantization=quantization,
        search_threads=search_threads,
    )
