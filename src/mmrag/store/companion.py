"""A companion collection: keyed payload records stored beside a server store's collection.

The store-side ingest ledger (:mod:`mmrag.ingest.store_ledger`) keeps its rows here, so they live
with the data and every machine that writes into the collection reads and writes the same ledger.
The collection has no vectors; each record is one point whose id is derived from its key.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mmrag.errors import StoreError
from mmrag.store.client import ClientBackend, _models

if TYPE_CHECKING:
    from mmrag.store.front import QdrantStore

__all__ = ["Companion", "companion"]

_NS = uuid.UUID("5f8f3a52-7c1e-4a8e-9d0b-2d6c3b1e7a41")
_PAGE = 256


def _pid(key: str) -> str:
    return str(uuid.uuid5(_NS, key))


class Companion:
    """Records ``key → payload`` in a vectorless Qdrant collection (created on first use).

    Args:
        client: The store's ``QdrantClient`` (shared, so ``:memory:`` stores see the same records).
        name: Collection name (``<collection>__ledger`` for the ingest ledger).

    Example:
        >>> rows = companion(QdrantStore.open(":memory:"), "ledger")      # doctest: +SKIP
        >>> rows.put([("s:a.txt", {"kind": "source", "hash": "h"})])       # doctest: +SKIP
        >>> rows.get(["s:a.txt"])["s:a.txt"]["hash"]                       # doctest: +SKIP
        'h'
    """

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        try:
            if not client.collection_exists(name):
                client.create_collection(name, vectors_config={})
                with warnings.catch_warnings():  # local mode (tests) warns that indexes are no-ops
                    warnings.simplefilter("ignore", UserWarning)
                    # Reads select rows by kind (sources, intents): indexed on a server.
                    keyword = _models().PayloadSchemaType.KEYWORD
                    client.create_payload_index(name, "kind", field_schema=keyword)
        except Exception as exc:
            if client.collection_exists(name):
                return  # another writer created it first
            raise StoreError(f"cannot create the ledger collection {name!r}: {exc}") from exc

    def put(self, records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Upsert records (``wait=True``: durable on the server before this returns)."""
        m = _models()
        for start in range(0, len(records), _PAGE):
            points = [
                m.PointStruct(id=_pid(k), vector={}, payload={**p, "key": k})
                for k, p in records[start : start + _PAGE]
            ]
            self.client.upsert(self.name, points, wait=True)

    def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records of ``keys`` that exist."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), _PAGE):
            ids = [_pid(k) for k in keys[start : start + _PAGE]]
            for r in self.client.retrieve(self.name, ids, with_payload=True, with_vectors=False):
                payload = dict(r.payload or {})
                out[str(payload.get("key"))] = payload
        return out

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            m = _models()
            ids = [_pid(k) for k in keys]
            self.client.delete(self.name, m.PointIdsList(points=ids), wait=True)

    def scan(self, kind: str, exclude: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
        """Every record whose ``kind`` field is ``kind`` (``exclude``: payload fields not to fetch)."""
        m = _models()
        flt = m.Filter(must=[m.FieldCondition(key="kind", match=m.MatchValue(value=kind))])
        selector: Any = m.PayloadSelectorExclude(exclude=list(exclude)) if exclude else True
        offset = None
        while True:
            page, offset = self.client.scroll(
                self.name, scroll_filter=flt, limit=_PAGE, offset=offset, with_payload=selector
            )
            for r in page:
                yield dict(r.payload or {})
            if offset is None:
                return


def companion(store: QdrantStore, suffix: str) -> Companion | None:
    """The companion collection ``<collection>__<suffix>`` of a server / ``:memory:`` store;
    ``None`` for an embedded Edge store (its ledger is a file beside the shard)."""
    backend = store.backend
    if not isinstance(backend, ClientBackend):
        return None
    return Companion(backend.client, f"{backend.collection}__{suffix}")
