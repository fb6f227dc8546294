"""The store front: :class:`QdrantStore`, the one object every other package talks to.

It checks arguments once (dimensions, limits, modality, the tenant rule), keeps the store's own
metadata (named vectors and their specs, the default vector, BM25 settings, tenancy) and turns
chunks into points; the backends (:mod:`mmrag.store.edge`, :mod:`mmrag.store.client`) only move
points in and out of Qdrant.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mmrag.errors import DimensionMismatchError, StoreError
from mmrag.store.base import (
    SPARSE_VECTOR,
    Backend,
    Filters,
    SearchOptions,
    SparseVec,
    StoredPoint,
    StoredRecord,
    check_quantization,
    scroll_all,
)
from mmrag.store.checks import query_matrix, search_filter
from mmrag.store.meta import StoreMeta
from mmrag.store.opening import make_backend
from mmrag.store.payload import chunk_payload, payload_chunk
from mmrag.store.sparse import Bm25Encoder, document_vectors
from mmrag.types import MODALITIES, Chunk, VectorSpec

log = logging.getLogger(__name__)

__all__ = ["QdrantStore"]

Results = list[list[tuple[Chunk, float]]]


class QdrantStore:
    """Chunks and their dense vectors in Qdrant; one named vector per encoder id.

    Args:
        backend: An :class:`~mmrag.store.edge.EdgeBackend` or :class:`~mmrag.store.client.ClientBackend`.

    Example:
        >>> store = QdrantStore.open("/tmp/mmrag-doc")          # doctest: +SKIP
        >>> name = store.ensure_vector(vector_spec(encoder))     # doctest: +SKIP
        >>> store.upsert_chunks(chunks, vectors, name)           # doctest: +SKIP
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.meta = StoreMeta(backend)
        self._tenancy = self.meta.tenancy
        self._bm25: Bm25Encoder | None = None

    @classmethod
    def open(
        cls, location: str, *, tenancy: bool = False, quantization: str | None = None, **backend: Any
    ) -> QdrantStore:
        """Open (or create) a store: a directory → Qdrant Edge; ``http(s)://`` or ``:memory:`` → server.

        ``backend``: ``collection`` and ``api_key`` (server), ``shards`` / ``replication`` (new
        collections on a cluster), ``indexing_threshold_kb`` (new Edge stores: segment size above
        which HNSW is built), ``search_threads`` (Edge's search pool, set on every open); see
        :func:`mmrag.store.opening.make_backend`. ``tenancy``: make the store multi-tenant (see
        :meth:`enable_tenancy`); a store already marked so stays so.
        ``quantization`` (``int8`` / ``none``): see :meth:`set_quantization`; ``None`` keeps what the
        store has (a new store: float32 only)."""
        quant = check_quantization(quantization)
        store = cls(make_backend(location, quantization=quant, **backend))
        if quantization is not None and store.quantization != quant:
            store.set_quantization(quant)
        if tenancy:
            store.enable_tenancy()
        return store

    @property
    def quantization(self) -> str | None:
        """``int8`` when the dense vectors have a scalar-quantized copy searched first, else ``None``."""
        return self.backend.quantization

    def set_quantization(self, quantization: str | None) -> None:
        """Add (``int8``) or drop (``None``/``none``) an int8 copy of every dense vector: ~4x less RAM
        for the index, searched first, then rescored with the float vectors (``SearchOptions``)."""
        quant = check_quantization(quantization)
        log.info("store %s: quantization %s -> %s", self.location, self.quantization, quant)
        had_sparse = self.has_sparse
        self.backend.set_quantization(quant)
        self.meta = StoreMeta(self.backend)
        if not had_sparse and self.has_sparse and self.meta.ensure_bm25() and self.count():
            self.index_sparse()  # a store from before BM25: the rebuild added the sparse vector

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    @property
    def location(self) -> str:
        return self.backend.location

    # -- vectors ----------------------------------------------------------------------------
    @property
    def vectors(self) -> dict[str, dict[str, Any]]:
        """Named vectors: ``{name: {"dim", "spec", "encoder_id", "aligned"}}``."""
        return self.meta.vectors

    @property
    def default_vector(self) -> str | None:
        return self.meta.default_vector

    @property
    def default_spec(self) -> str | None:
        """Encoder spec of the default vector: what `search` loads when no model is given."""
        return self.meta.default_spec

    def set_default_vector(self, name: str) -> None:
        self.meta.set_default_vector(name, self.location)

    def ensure_vector(self, spec: VectorSpec) -> str:
        """Return the name of ``spec``'s vector, creating it (beside existing ones) if new."""
        dims = self.backend.vector_dims()
        if spec.name in dims:
            self._check_dim(spec.name, dims[spec.name], spec)
            if "spec" not in self.meta.vectors.get(spec.name, {}):  # a crash between add and record
                self.meta.record_vector(spec, tenancy=self._tenancy, sparse=self.has_sparse)
            return spec.name
        log.info("adding vector %s (dim %d) to %s", spec.name, spec.dim, self.location)
        self.backend.add_vector(spec.name, spec.dim)
        if self.meta.record_vector(spec, tenancy=self._tenancy, sparse=self.has_sparse) and self.count():
            # An older store (no sparse vector) was just migrated: give its points BM25 vectors.
            self.index_sparse()
        return spec.name

    # -- sparse (BM25) ----------------------------------------------------------------------
    @property
    def has_sparse(self) -> bool:
        """Whether the store holds BM25 sparse vectors (every store created by mmrag >= 0.1 does)."""
        return SPARSE_VECTOR in self.backend.sparse_names()

    @property
    def sparse_encoder(self) -> Bm25Encoder:
        """The BM25 embedder with the settings this store was created with: the retriever embeds its
        queries with it (as it embeds dense queries with the dual encoder), the store its documents."""
        if self._bm25 is None:
            self._bm25 = Bm25Encoder(self.meta.bm25)
        return self._bm25

    def index_sparse(self, batch: int = 256) -> int:
        """(Re)compute the BM25 vector of every stored point from its text; returns how many got one."""
        if not self.has_sparse:
            raise StoreError(
                f"store {self.location} was created without a sparse vector; re-ingest into a new store"
            )
        done = 0
        for page in scroll_all(self.backend, batch=batch):
            sparse = document_vectors(self.sparse_encoder, [payload_chunk(r.id, r.payload) for r in page])
            if sparse:
                self.backend.set_sparse(SPARSE_VECTOR, list(sparse), list(sparse.values()))
            done += len(sparse)
        return done

    def search_sparse(
        self,
        queries: Sequence[SparseVec],
        limit: int,
        *,
        modality: str | None = None,
        filters: Filters | None = None,
    ) -> Results:
        """BM25 search with query vectors from :attr:`sparse_encoder`, one result list per query, best
        first (points without text never match)."""
        flt = self._search_filter(limit, modality, filters)
        if not self.has_sparse:
            raise StoreError(
                f"store {self.location} has no BM25 vectors (created before hybrid search); "
                "re-ingest into a new store to use --hybrid"
            )
        # A query of only stop words has no tokens: it matches nothing (Qdrant rejects empty vectors).
        live = [i for i, v in enumerate(queries) if v.indices]
        found = self.backend.search_sparse(SPARSE_VECTOR, [queries[i] for i in live], limit, flt or None)
        by_query = dict(zip(live, found, strict=True))
        return [_results(by_query.get(i, [])) for i in range(len(queries))]

    def vector_for(self, spec: VectorSpec) -> str:
        """The existing vector of ``spec``; a clear error if the store has none."""
        dims = self.backend.vector_dims()
        if spec.name not in dims:
            held = ", ".join(f"{k} (model {v.get('spec')})" for k, v in self.vectors.items()) or "nothing"
            raise StoreError(
                f"store {self.location} has no vectors for encoder {spec.encoder_id!r}; it holds {held}. "
                "Search with the model the store was built with (omit --model), or ingest with this one"
            )
        self._check_dim(spec.name, dims[spec.name], spec)
        return spec.name

    def _check_dim(self, name: str, dim: int, spec: VectorSpec) -> None:
        if dim != spec.dim:
            raise DimensionMismatchError(
                f"store {self.location} holds vector {name!r} with dimension {dim}, but encoder "
                f"{spec.encoder_id!r} produces {spec.dim}; use another store directory or the original model"
            )

    # -- tenancy ----------------------------------------------------------------------------
    @property
    def tenancy(self) -> bool:
        """Whether every search must carry a ``tenant`` filter (multi-tenant store)."""
        return self._tenancy

    def enable_tenancy(self) -> None:
        """Make this store multi-tenant: from now on every search must name one tenant.

        Recorded in the store's metadata once it holds a vector, so it outlives this process and
        cannot be switched off by forgetting a setting.
        """
        self._tenancy = True
        self.meta.mark_tenancy()

    # -- data -------------------------------------------------------------------------------
    def upsert_chunks(
        self,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        vector: str,
        *,
        present: Collection[str] | None = None,
        writer: str | None = None,
        flush: bool = True,
    ) -> int:
        """Write chunks with their vectors (idempotent by chunk id). Returns the number written.

        ``present``: ids of ``chunks`` already stored (see :meth:`presence`), saving a second read;
        ``writer``: the marker new points carry (:data:`~mmrag.store.payload.WRITER_KEY`);
        ``flush=False``: new points are durable only after the next :meth:`flush` (bulk writes).
        """
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        dims = self.backend.vector_dims()
        if vector not in dims:
            raise StoreError(f"no vector {vector!r} in {self.location}; call ensure_vector first")
        if len(vectors) and vectors.shape[1] != dims[vector]:
            raise DimensionMismatchError(
                f"vectors have dimension {vectors.shape[1]}, {vector!r} holds {dims[vector]}"
            )
        # Qdrant's upsert replaces a whole point, so a chunk already stored under another encoder's
        # vector gets only this vector set; upserting it would drop the other vectors.
        if present is None:
            present = {r.id for r in self.backend.retrieve([c.id for c in chunks])}
        new = [i for i, c in enumerate(chunks) if c.id not in present]
        old = [i for i, c in enumerate(chunks) if c.id in present]
        # BM25 vectors depend only on the text, so points already stored keep theirs.
        fresh = [chunks[i] for i in new]
        sparse = document_vectors(self.sparse_encoder, fresh) if self.has_sparse else {}
        points = [
            StoredPoint(
                c.id,
                {vector: vectors[i]},
                chunk_payload(c, writer),
                {SPARSE_VECTOR: sparse[c.id]} if c.id in sparse else {},
            )
            for i, c in zip(new, fresh, strict=True)
        ]
        if points:
            self.backend.upsert(points, flush=flush)
        if old:
            self.backend.set_vectors(vector, [chunks[i].id for i in old], vectors[old])
        return len(chunks)

    def existing_ids(self, ids: Sequence[str], vector: str | None = None) -> set[str]:
        """Which of ``ids`` are already stored (with ``vector``, when given): used to skip re-embedding."""
        if vector is None:
            return {r.id for r in self.backend.retrieve(ids)}
        return self.presence(ids, vector)[1]

    def presence(self, ids: Sequence[str], vector: str) -> tuple[set[str], set[str]]:
        """``(stored ids, stored ids that carry vector)`` in one read: what ingest skips/updates."""
        records = self.backend.retrieve(ids, with_vectors=[vector])
        return {r.id for r in records}, {r.id for r in records if vector in r.vectors}

    def vectors_of(self, ids: Sequence[str]) -> dict[str, set[str]]:
        """Names of the dense vectors each stored id carries (ids not stored are absent)."""
        return {r.id: set(r.vectors) for r in self.backend.retrieve(ids, with_vectors=True)}

    def iter_vector_names(self, batch: int = 256) -> Iterator[tuple[str, set[str]]]:
        """Every stored point id with the names of its dense vectors (for ``mmrag verify``)."""
        for page in scroll_all(self.backend, None, batch, with_vectors=True):
            for r in page:
                yield r.id, set(r.vectors)

    def delete_vector(self, ids: Sequence[str], vector: str) -> None:
        """Remove one named vector from the given points (the points and other vectors stay)."""
        self.backend.delete_vectors(vector, ids)

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        return [payload_chunk(r.id, r.payload) for r in self.backend.retrieve(ids)]

    def delete(self, ids: Sequence[str]) -> None:
        self.backend.delete(ids)

    def _search_filter(self, limit: int, modality: str | None, filters: Filters | None) -> dict[str, Any]:
        return search_filter(
            limit, modality, filters, tenant_location=self.location if self._tenancy else None
        )

    def _prepare(
        self,
        vector: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        modality: str | None,
        filters: Filters | None,
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        flt = self._search_filter(limit, modality, filters)
        return query_matrix(vector, queries, self.backend.vector_dims(), self.location), flt

    def search(
        self,
        vector: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        *,
        modality: str | None = None,
        filters: Filters | None = None,
        options: SearchOptions | None = None,
    ) -> Results:
        """ANN search, one result list per query row, best first."""
        queries, flt = self._prepare(vector, queries, limit, modality, filters)
        if len(queries) == 0:
            return []
        results = self.backend.search(vector, queries, limit, flt or None, options or SearchOptions())
        return [_results(res) for res in results]

    @property
    def supports_async(self) -> bool:
        """Whether :meth:`asearch` awaits a native async client (a Qdrant server) rather than running
        the blocking search in a worker thread (the embedded Edge store)."""
        return self.backend.supports_async

    async def asearch(
        self,
        vector: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        *,
        modality: str | None = None,
        filters: Filters | None = None,
        options: SearchOptions | None = None,
    ) -> Results:
        """:meth:`search` for an event loop (see :attr:`supports_async` for how it waits)."""
        queries, flt = self._prepare(vector, queries, limit, modality, filters)
        if len(queries) == 0:
            return []
        results = await self.backend.asearch(vector, queries, limit, flt or None, options or SearchOptions())
        return [_results(res) for res in results]

    def iter_records(
        self, filters: Filters | None = None, batch: int = 256, with_vectors: bool = False
    ) -> Iterator[StoredRecord]:
        for page in scroll_all(self.backend, filters, batch, with_vectors=with_vectors):
            yield from page

    def count(self, modality: str | None = None, *, filters: Filters | None = None) -> int:
        flt: dict[str, Any] = {**(filters or {}), **({"modality": modality} if modality else {})}
        return self.backend.count(flt or None)

    def optimize(self) -> None:
        """Build HNSW / merge segments after bulk writes (Edge); a no-op on a server."""
        self.backend.optimize()

    def flush(self) -> None:
        """Make the ``flush=False`` writes so far durable (Edge); a no-op on a server."""
        self.backend.flush()

    def stats(self) -> dict[str, Any]:
        """Counts by modality and source, vectors, default vector: for ``mmrag info`` and the UI."""
        return {
            "location": self.location,
            "points": self.count(),
            "by_modality": {m: self.count(m) for m in MODALITIES},
            "sources": len(self.backend.facet("source", limit=100000)),
            "vectors": self.vectors,
            "default_vector": self.default_vector,
            "tenancy": self.tenancy,
            "indexed_vectors": self.backend.indexed_vectors(),
            "quantization": self.quantization,
        }


def _results(records: Sequence[StoredRecord]) -> list[tuple[Chunk, float]]:
    return [(payload_chunk(r.id, r.payload), float(r.score or 0.0)) for r in records]
