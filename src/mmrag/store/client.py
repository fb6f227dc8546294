"""Server backend: ``qdrant-client`` against a Qdrant server or cluster (``:memory:`` in tests).

The logical collection is an alias onto a physical collection ``<name>--<n>``. A server cannot add
a named vector to a collection either, so :meth:`add_vector` copies into a new physical collection
and swaps the alias atomically; searches never see a half-copied collection.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mmrag._lazy import require
from mmrag.errors import StoreError
from mmrag.store.base import (
    INDEXED_KEYWORDS,
    SPARSE_VECTOR,
    UPSERT_BATCH,
    Filters,
    SearchOptions,
    SparseVec,
    StoredPoint,
    StoredRecord,
    as_list,
    build_filter,
    empty_meta,
    record_from_point,
    scroll_all,
)

log = logging.getLogger(__name__)


def _models() -> Any:
    return require("qdrant_client.models", "server")


def client_filter(filters: Filters | None) -> Any:
    """Translate mmrag's key→value(s) filter into a qdrant-client ``Filter``."""
    return build_filter(filters, _models())


def _sparse(v: SparseVec) -> Any:
    return _models().SparseVector(indices=list(v.indices), values=list(v.values))


def _point(p: StoredPoint | StoredRecord) -> Any:
    vectors: dict[str, Any] = {k: as_list(v) for k, v in p.vectors.items()}
    vectors.update({k: _sparse(v) for k, v in p.sparse.items()})
    return _models().PointStruct(id=p.id, vector=vectors, payload=dict(p.payload))


class ClientBackend:
    """A collection on a Qdrant server (``url``) or qdrant-client's local ``:memory:`` mode."""

    def __init__(
        self,
        url: str,
        *,
        collection: str = "mmrag",
        api_key: str | None = None,
        client: Any = None,
        async_client: Any = None,
        shards: int | None = None,
        replication: int | None = None,
        quantization: str | None = None,
    ) -> None:
        qc = require("qdrant_client", "server")
        self.location = f"{url}#{collection}"
        self.collection = collection
        # Cluster layout of collections this backend creates (None: the server's default, 1).
        self.shards = shards
        self.replication = replication
        if client is not None:
            self.client = client
        elif url == ":memory:":
            self.client = qc.QdrantClient(location=":memory:")
        else:
            self.client = qc.QdrantClient(url=url, api_key=api_key, timeout=30)
        try:
            aliases = self._aliases()
        except Exception as exc:
            raise StoreError(
                f"cannot reach Qdrant at {url}: {exc}; check the URL, the API key and "
                "that the server runs (docker compose up qdrant)"
            ) from exc
        self._physical: str | None = aliases.get(collection)
        # A server gets an AsyncQdrantClient for awaitable searches (LangChain ainvoke); local
        # ``:memory:`` mode keeps its points in this process's sync client, so it has none
        # unless one sharing them is injected.
        self.async_client: Any = async_client
        if async_client is None and url != ":memory:":
            self.async_client = qc.AsyncQdrantClient(url=url, api_key=api_key, timeout=30)
        self._dims: dict[str, int] | None = None
        self._sparse: set[str] | None = None
        # Quantization of a collection this backend creates; an existing one keeps its record.
        self._quant: str | None = self.read_meta().get("quantization") if self._physical else quantization

    @property
    def quantization(self) -> str | None:
        return self._quant

    def set_quantization(self, quantization: str | None) -> None:
        """Turn int8 scalar quantization on or off; the server re-indexes in the background."""
        m = _models()
        if self._physical is not None:
            self.client.update_collection(
                self._physical,
                quantization_config=self._quantization_config(quantization) or m.Disabled.DISABLED,
                metadata={"mmrag": {**self.read_meta(), "quantization": quantization}},
            )
        self._quant = quantization  # only once the server took it

    def _quantization_config(self, quantization: str | None) -> Any:
        m = _models()
        if quantization != "int8":
            return None
        # As on Edge: int8 with the 0.99 quantile, kept in RAM; the float vectors serve the rescoring.
        return m.ScalarQuantization(
            scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99, always_ram=True)
        )

    @property
    def supports_async(self) -> bool:
        return self.async_client is not None

    def close(self) -> None:
        self.client.close()
        # AsyncQdrantClient.close is a coroutine; its HTTP pool is released with the process.

    # -- meta: kept in the physical collection's metadata -----------------------------------
    def read_meta(self) -> dict[str, Any]:
        if self._physical is None:
            return empty_meta()
        meta = self.client.get_collection(self._physical).config.metadata or {}
        return dict(meta.get("mmrag") or empty_meta())

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        if self._physical is None:
            raise StoreError("no collection yet: add a vector first")
        # The quantization record belongs to set_quantization (maybe another process's, since this
        # one opened the collection), never to the caller's copy of the meta: keep the server's.
        self._quant = self.read_meta().get("quantization")
        record = {**meta, "quantization": self._quant}
        self.client.update_collection(self._physical, metadata={"mmrag": record})

    def vector_dims(self) -> dict[str, int]:
        # Read once per physical collection (like the alias in __init__): every search and write
        # checks dims, and on a server each get_collection is a network round trip.
        if self._physical is None:
            return {}
        if self._dims is None:
            vectors = self.client.get_collection(self._physical).config.params.vectors or {}
            self._dims = {n: int(p.size) for n, p in vectors.items()} if isinstance(vectors, dict) else {}
        return dict(self._dims)

    def sparse_names(self) -> set[str]:
        if self._physical is None:
            return set()
        if self._sparse is None:
            self._sparse = set(self.client.get_collection(self._physical).config.params.sparse_vectors or {})
        return set(self._sparse)

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def _refresh(self, physical: str | None) -> None:
        """Another writer moved the alias since this backend read it: follow it (the cached dims,
        sparse names and quantization describe the old collection)."""
        log.info("collection %s now names %s (another writer added a vector)", self.collection, physical)
        self._physical, self._dims, self._sparse = physical, None, None
        if physical is not None:
            self._quant = self.read_meta().get("quantization")

    def add_vector(self, name: str, dim: int) -> None:
        m = _models()
        aliases = self._aliases()
        if aliases.get(self.collection) != self._physical:
            self._refresh(aliases.get(self.collection))
            have = self.vector_dims().get(name)
            if have == dim:
                return  # the other writer added this very vector
            if have is not None:
                raise StoreError(
                    f"another writer added vector {name!r} to {self.location} with dim {have}, "
                    f"not {dim}: use another encoder id"
                )
        dims = {**self.vector_dims(), name: dim}
        meta = self.read_meta()
        if self._physical is None and self._quant:  # a new collection: quantized as asked
            meta["quantization"] = self._quant
        n = 1 + (int(self._physical.rsplit("--", 1)[1]) if self._physical else 0)
        new = f"{self.collection}--{n}"
        if self.client.collection_exists(new):
            named = sorted(a for a, c in aliases.items() if c == new)
            if named:
                # Live data (an alias names it): never a half copy, whatever its number says.
                raise StoreError(
                    f"cannot add vector {name!r} to {self.location}: collection {new} exists and "
                    f"alias(es) {named} name it; re-open the store and retry"
                )
            # A copy that crashed before the alias swap left it; the alias still names the old one.
            log.warning("removing %s, left half-copied by an interrupted vector add", new)
            self.client.delete_collection(new)
        self.client.create_collection(
            new,
            vectors_config={k: m.VectorParams(size=d, distance=m.Distance.COSINE) for k, d in dims.items()},
            # BM25 term weights come from the client (mmrag.store.sparse); Qdrant multiplies in the IDF.
            sparse_vectors_config={SPARSE_VECTOR: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            metadata={"mmrag": meta},
            quantization_config=self._quantization_config(self._quant),
            shard_number=self.shards,
            replication_factor=self.replication,
        )
        for key in INDEXED_KEYWORDS:
            # is_tenant co-locates a tenant's points on a server; harmless for the other keys.
            schema = m.KeywordIndexParams(type="keyword", is_tenant=key == "tenant")
            with warnings.catch_warnings():
                # local mode (tests) warns that indexes are no-ops there; a server uses them.
                warnings.simplefilter("ignore", UserWarning)
                self.client.create_payload_index(new, key, field_schema=schema)
        if self._physical is not None:
            for records in scroll_all(self, with_vectors=True):
                self.client.upsert(new, [_point(r) for r in records], wait=True)
        ops: list[Any] = []
        if self._physical is not None:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=self.collection)))
        ops.append(
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=new, alias_name=self.collection)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=ops)
        old, self._physical, self._dims, self._sparse = self._physical, new, None, None
        if old is not None:
            self.client.delete_collection(old)

    def _need(self) -> str:
        if self._physical is None:
            raise StoreError(
                f"collection {self.collection!r} is empty: ingest something first (mmrag ingest PATH)"
            )
        return self.collection

    # -- data -------------------------------------------------------------------------------
    # A server applies each write with wait=True (its own WAL): ``flush`` has nothing to add.
    def upsert(self, points: Sequence[StoredPoint], *, flush: bool = True) -> None:
        coll = self._need()
        for start in range(0, len(points), UPSERT_BATCH):
            batch = points[start : start + UPSERT_BATCH]
            self.client.upsert(coll, [_point(p) for p in batch], wait=True)

    def set_sparse(self, name: str, ids: Sequence[str], vectors: Sequence[SparseVec]) -> None:
        m, coll = _models(), self._need()
        for start in range(0, len(ids), UPSERT_BATCH):
            pairs = zip(ids[start : start + UPSERT_BATCH], vectors[start : start + UPSERT_BATCH], strict=True)
            self.client.update_vectors(
                coll, [m.PointVectors(id=i, vector={name: _sparse(v)}) for i, v in pairs], wait=True
            )

    def search_sparse(
        self, name: str, queries: Sequence[SparseVec], limit: int, filters: Filters | None
    ) -> list[list[StoredRecord]]:
        m, coll = _models(), self._need()
        if not queries:
            return []
        flt = client_filter(filters)
        reqs = [
            m.QueryRequest(query=_sparse(q), using=name, limit=limit, filter=flt, with_payload=True)
            for q in queries
        ]
        responses = self.client.query_batch_points(coll, requests=reqs)
        return [[record_from_point(p, float(p.score)) for p in r.points] for r in responses]

    def set_vectors(self, name: str, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        m, coll = _models(), self._need()
        self.client.update_vectors(
            coll,
            [m.PointVectors(id=i, vector={name: as_list(v)}) for i, v in zip(ids, vectors, strict=True)],
            wait=True,
        )

    def _requests(
        self,
        name: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        filters: Filters | None,
        options: SearchOptions,
    ) -> list[Any]:
        m = _models()
        quant = (
            m.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
            if self._quant
            else None
        )
        params = m.SearchParams(hnsw_ef=options.hnsw_ef, exact=options.exact, quantization=quant)
        flt = client_filter(filters)
        return [
            m.QueryRequest(
                query=as_list(q), using=name, limit=limit, filter=flt, params=params, with_payload=True
            )
            for q in queries
        ]

    def search(
        self,
        name: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        filters: Filters | None,
        options: SearchOptions,
    ) -> list[list[StoredRecord]]:
        coll = self._need()
        responses = self.client.query_batch_points(
            coll, requests=self._requests(name, queries, limit, filters, options)
        )
        return [[record_from_point(p, float(p.score)) for p in r.points] for r in responses]

    async def asearch(
        self,
        name: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        filters: Filters | None,
        options: SearchOptions,
    ) -> list[list[StoredRecord]]:
        """:meth:`search` through the async client (awaits the network, no thread); local
        ``:memory:`` mode has none, so there it runs the blocking search in a worker thread."""
        if self.async_client is None:
            return await asyncio.to_thread(self.search, name, queries, limit, filters, options)
        coll = self._need()
        responses = await self.async_client.query_batch_points(
            coll, requests=self._requests(name, queries, limit, filters, options)
        )
        return [[record_from_point(p, float(p.score)) for p in r.points] for r in responses]

    def retrieve(self, ids: Sequence[str], with_vectors: bool | list[str] = False) -> list[StoredRecord]:
        if self._physical is None or not ids:
            return []
        return [
            record_from_point(p)
            for p in self.client.retrieve(
                self.collection, list(ids), with_payload=True, with_vectors=with_vectors
            )
        ]

    def delete(self, ids: Sequence[str]) -> None:
        if self._physical is not None and ids:
            m = _models()
            self.client.delete(self.collection, m.PointIdsList(points=list(ids)), wait=True)

    def delete_vectors(self, name: str, ids: Sequence[str]) -> None:
        """Remove one named vector from points, keeping the points and their other vectors."""
        if self._physical is not None and ids:
            m = _models()
            self.client.delete_vectors(self.collection, [name], m.PointIdsList(points=list(ids)), wait=True)

    def count(self, filters: Filters | None = None) -> int:
        if self._physical is None:
            return 0
        return int(self.client.count(self.collection, count_filter=client_filter(filters), exact=True).count)

    def scroll(
        self, filters: Filters | None, limit: int, offset: str | None, with_vectors: bool = False
    ) -> tuple[list[StoredRecord], str | None]:
        if self._physical is None:
            return [], None
        records, nxt = self.client.scroll(
            self.collection,
            scroll_filter=client_filter(filters),
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [record_from_point(r) for r in records], (str(nxt) if nxt is not None else None)

    def facet(self, key: str, limit: int = 100) -> dict[str, int]:
        if self._physical is None:
            return {}
        resp = self.client.facet(self.collection, key=key, limit=limit, exact=True)
        return {str(h.value): int(h.count) for h in resp.hits}

    def indexed_vectors(self) -> int:
        if self._physical is None:
            return 0
        return int(self.client.get_collection(self._physical).indexed_vectors_count or 0)

    def optimize(self) -> None:  # a server indexes in the background; nothing to trigger
        return None

    def flush(self) -> None:
        return None
