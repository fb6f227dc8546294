"""Embedded backend: Qdrant Edge (Qdrant's Rust engine in-process), one shard per store directory.

Layout of a store directory::

    store.json        schema, named vectors (dim, encoder spec), default vector, active shard
    shard-<n>/        the active EdgeShard (WAL + segments, exclusive lock)

Qdrant Edge cannot add a named vector to an existing shard, so :meth:`add_vector` copies the
points into a new shard with the extended config and then switches ``store.json`` to it with an
atomic rename: a crash before the switch leaves the old shard in use, after it the new one.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mmrag.errors import StoreError, StoreLockedError
from mmrag.store.base import (
    INDEXED_KEYWORDS,
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
from mmrag.store.edge_config import DEFAULT_SEARCH_THREADS, load_config, shard_config
from mmrag.store.edge_config import qdrant_edge as _qe

log = logging.getLogger(__name__)
META_FILE = "store.json"


def edge_filter(filters: Filters | None) -> Any:
    """Translate mmrag's key→value(s) filter into a Qdrant Edge ``Filter``."""
    return build_filter(filters, _qe())


def _locked(root: Path) -> StoreLockedError:
    return StoreLockedError(
        f"store {root} is open in another process (Qdrant Edge allows one writer); "
        "close that process, or use a Qdrant server (--store http://...) for shared access"
    )


def _sparse(v: SparseVec) -> Any:
    return _qe().SparseVector(v.indices, v.values)


def _point(p: StoredPoint | StoredRecord) -> Any:
    vectors: dict[str, Any] = {k: as_list(v) for k, v in p.vectors.items()}
    vectors.update({k: _sparse(v) for k, v in p.sparse.items()})
    return _qe().Point(p.id, vectors, dict(p.payload))


class EdgeBackend:
    """Qdrant Edge shard in a local directory (created on first use).

    Args:
        directory: Store folder.
        indexing_threshold_kb: Vector data (KB) per segment above which ``optimize()`` builds
            HNSW; ``None`` keeps Qdrant's default (below it, search is an exact scan). Fixed when
            the shard is created (recorded in ``store.json``).
        quantization: ``int8`` for a new store's scalar-quantized copy (see ``set_quantization``).
        search_threads: Threads in the shard's search pool, set on every open; 1 (the default)
            searches on the calling thread (why: :mod:`mmrag.store.edge_config`).
    """

    supports_async = False  # Edge has no async API: asearch runs the blocking search in a thread

    def __init__(
        self,
        directory: str | Path,
        *,
        indexing_threshold_kb: int | None = None,
        quantization: str | None = None,
        search_threads: int = DEFAULT_SEARCH_THREADS,
    ) -> None:
        if search_threads < 1:
            raise StoreError(f"search_threads must be >= 1 (MMRAG_EDGE_SEARCH_THREADS), got {search_threads}")
        self.search_threads = int(search_threads)
        self.root = Path(directory).expanduser()
        self.location = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        self._meta = self._load_meta()
        if indexing_threshold_kb is not None and not self._meta.get("shard"):
            self._meta["indexing_threshold_kb"] = int(indexing_threshold_kb)
        if quantization is not None and not self._meta.get("shard"):
            self._meta["quantization"] = quantization
        self._shard: Any = None
        if self._meta.get("shard"):
            self._shard = self._open(self.root / self._meta["shard"])
        self._cleanup_stale()

    # -- lifecycle --------------------------------------------------------------------------
    def _acquire_lock(self) -> Any:
        """One process per store, from the first open on (Edge's own WAL lock exists only once a
        shard does, and a second process must never clean up a shard being created)."""
        fh = (self.root / ".lock").open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise _locked(self.root) from exc
        return fh

    def _load_meta(self) -> dict[str, Any]:
        path = self.root / META_FILE
        if not path.exists():
            return {**empty_meta(), "shard": None}
        try:
            meta: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{path} is corrupt ({exc}); restore it from a backup or re-ingest") from exc
        return meta

    def _open(self, path: Path) -> Any:
        qe = _qe()
        try:
            return qe.EdgeShard.load(str(path), load_config(self._meta, search_threads=self.search_threads))
        except Exception as exc:
            if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                raise _locked(self.root) from exc
            first = exc
        # store.json does not describe this shard's vectors: open the shard with its own config.
        log.warning(
            "store %s: store.json does not match shard %s (%s); opened with the shard's own config, "
            "search threads unchanged",
            self.root,
            path.name,
            first,
        )
        try:
            return qe.EdgeShard.load(str(path))
        except Exception as exc:
            raise StoreError(f"cannot open Qdrant Edge shard {path}: {exc}") from exc

    def _cleanup_stale(self) -> None:
        """Remove shard folders a crashed migration left behind (never the active one)."""
        active = self._meta.get("shard")
        for child in self.root.glob("shard-*"):
            if child.is_dir() and child.name != active:
                log.info("removing stale shard folder %s", child)
                shutil.rmtree(child, ignore_errors=True)

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def read_meta(self) -> dict[str, Any]:
        return {k: v for k, v in self._meta.items() if k != "shard"}

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        # The shard and the quantization belong to the backend, not to the caller's copy of the meta.
        self._meta = {**meta, "shard": self._meta.get("shard"), "quantization": self.quantization}
        self._write_meta_file()

    def _write_meta_file(self) -> None:
        tmp = self.root / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(self._meta, indent=2))
        os.replace(tmp, self.root / META_FILE)  # atomic: readers see the old or the new file

    # -- schema -----------------------------------------------------------------------------
    def vector_dims(self) -> dict[str, int]:
        return {name: int(v["dim"]) for name, v in self._meta.get("vectors", {}).items()}

    @property
    def quantization(self) -> str | None:
        return self._meta.get("quantization")

    def set_quantization(self, quantization: str | None) -> None:
        """Rebuild the shard with (or without) int8 scalar quantization; points and vectors are kept."""
        before, self._meta["quantization"] = self._meta.get("quantization"), quantization
        try:
            if self._shard is None:
                self._write_meta_file()
            else:
                self._rebuild(self.vector_dims())
        except BaseException:
            self._meta["quantization"] = before  # the store did not switch: say so
            raise

    def _config(self, dims: Mapping[str, int]) -> Any:
        return shard_config(
            dims,
            quantization=self.quantization,
            indexing_threshold_kb=self._meta.get("indexing_threshold_kb"),
            search_threads=self.search_threads,
        )

    def add_vector(self, name: str, dim: int) -> None:
        self._rebuild({**self.vector_dims(), name: dim})

    def _rebuild(self, dims: Mapping[str, int]) -> None:
        """Copy every point into a new shard with ``dims`` and the current config, then switch."""
        n = 1 + max(
            [int(p.name.split("-")[1]) for p in self.root.glob("shard-*") if p.name[6:].isdigit()] or [0]
        )
        new_dir = self.root / f"shard-{n}"
        qe = _qe()
        config = self._config(dims)
        new = qe.EdgeShard.create(str(new_dir), config)
        for key in INDEXED_KEYWORDS:
            # is_tenant: Qdrant keeps each tenant's points together (the tenant index, as on a server).
            schema = (
                qe.KeywordIndexParams(is_tenant=True) if key == "tenant" else qe.PayloadSchemaType.Keyword
            )
            new.update(qe.UpdateOperation.create_field_index(key, schema))
        if self._shard is not None:
            for records in scroll_all(self, with_vectors=True):
                new.update(qe.UpdateOperation.upsert_points([_point(r) for r in records]))
        new.flush()
        old, old_dir = self._shard, self._meta.get("shard")
        self._shard = new
        known = self._meta.setdefault("vectors", {})
        for name, dim in dims.items():
            known.setdefault(name, {"dim": dim})  # a new vector; existing entries keep their spec
        self._meta["sparse"] = sorted(config.sparse_vectors or {})
        self._meta["shard"] = new_dir.name
        self._write_meta_file()  # the switch: from here on the new shard is the store
        if old is not None:
            old.close()
        if old_dir:
            shutil.rmtree(self.root / old_dir, ignore_errors=True)

    def _need(self) -> Any:
        if self._shard is None:
            raise StoreError(f"store {self.root} is empty: ingest something first (mmrag ingest PATH)")
        return self._shard

    # -- data -------------------------------------------------------------------------------
    def _apply(self, ops: Sequence[Any], flush: bool = True) -> None:
        """Apply update operations; then flush (~8 ms however little changed: bulk writers pass
        ``flush=False`` and call :meth:`flush` once per few hundred points)."""
        shard = self._need()
        for op in ops:
            shard.update(op)
        if flush:
            shard.flush()

    def upsert(self, points: Sequence[StoredPoint], *, flush: bool = True) -> None:
        batches = (points[s : s + UPSERT_BATCH] for s in range(0, len(points), UPSERT_BATCH))
        self._apply([_qe().UpdateOperation.upsert_points([_point(p) for p in b]) for b in batches], flush)

    def flush(self) -> None:
        if self._shard is not None:
            self._shard.flush()

    def sparse_names(self) -> set[str]:
        return set(self._meta.get("sparse") or [])

    def set_sparse(self, name: str, ids: Sequence[str], vectors: Sequence[SparseVec]) -> None:
        qe, pairs = _qe(), list(zip(ids, vectors, strict=True))
        self._apply(
            [
                qe.UpdateOperation.update_vectors([qe.PointVectors(i, {name: _sparse(v)}) for i, v in batch])
                for batch in (pairs[s : s + UPSERT_BATCH] for s in range(0, len(pairs), UPSERT_BATCH))
            ]
        )

    def search_sparse(
        self, name: str, queries: Sequence[SparseVec], limit: int, filters: Filters | None
    ) -> list[list[StoredRecord]]:
        qe, shard = _qe(), self._need()
        if not queries:
            return []
        flt = edge_filter(filters)
        reqs = [
            qe.QueryRequest(
                limit=limit, query=qe.Query.Nearest(_sparse(q), using=name), filter=flt, with_payload=True
            )
            for q in queries
        ]
        results = shard.query_batch(qe.QueryBatchRequest(reqs)) if len(reqs) > 1 else [shard.query(reqs[0])]
        return [[record_from_point(p, float(p.score)) for p in res] for res in results]

    def set_vectors(self, name: str, ids: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        qe = _qe()
        pts = [qe.PointVectors(i, {name: as_list(v)}) for i, v in zip(ids, vectors, strict=True)]
        self._apply([qe.UpdateOperation.update_vectors(pts)])

    def search(
        self,
        name: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        filters: Filters | None,
        options: SearchOptions,
    ) -> list[list[StoredRecord]]:
        qe, shard = _qe(), self._need()
        if len(queries) == 0:
            return []
        quant = qe.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
        quant = quant if self.quantization else None
        params = qe.SearchParams(hnsw_ef=options.hnsw_ef, exact=options.exact, quantization=quant)
        flt = edge_filter(filters)
        reqs = [
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(as_list(q), using=name),
                filter=flt,
                with_payload=True,
                params=params,
            )
            for q in queries
        ]
        results = shard.query_batch(qe.QueryBatchRequest(reqs)) if len(reqs) > 1 else [shard.query(reqs[0])]
        return [[record_from_point(p, float(p.score)) for p in res] for res in results]

    async def asearch(
        self,
        name: str,
        queries: npt.NDArray[np.float32],
        limit: int,
        filters: Filters | None,
        options: SearchOptions,
    ) -> list[list[StoredRecord]]:
        """:meth:`search` in a worker thread, so an event loop never blocks on the shard."""
        return await asyncio.to_thread(self.search, name, queries, limit, filters, options)

    def retrieve(self, ids: Sequence[str], with_vectors: bool | list[str] = False) -> list[StoredRecord]:
        if self._shard is None or not ids:
            return []
        return [
            record_from_point(p)
            for p in self._shard.retrieve(list(ids), with_payload=True, with_vector=with_vectors)
        ]

    def delete(self, ids: Sequence[str]) -> None:
        if self._shard is not None and ids:
            self._apply([_qe().UpdateOperation.delete_points(list(ids))])

    def delete_vectors(self, name: str, ids: Sequence[str]) -> None:
        """Remove one named vector from points, keeping the points and their other vectors."""
        if self._shard is not None and ids:
            self._apply([_qe().UpdateOperation.delete_vectors(list(ids), [name])])

    def count(self, filters: Filters | None = None) -> int:
        if self._shard is None:
            return 0
        return int(self._shard.count(_qe().CountRequest(exact=True, filter=edge_filter(filters))))

    def scroll(
        self, filters: Filters | None, limit: int, offset: str | None, with_vectors: bool = False
    ) -> tuple[list[StoredRecord], str | None]:
        if self._shard is None:
            return [], None
        req = _qe().ScrollRequest(
            offset=offset,
            limit=limit,
            filter=edge_filter(filters),
            with_payload=True,
            with_vector=with_vectors,
        )
        records, nxt = self._shard.scroll(req)
        return [record_from_point(r) for r in records], (str(nxt) if nxt is not None else None)

    def facet(self, key: str, limit: int = 100) -> dict[str, int]:
        if self._shard is None:
            return {}
        resp = self._shard.facet(_qe().FacetRequest(key=key, limit=limit, exact=True))
        return {str(h.value): int(h.count) for h in resp.hits}

    def indexed_vectors(self) -> int:
        """Vectors inside an HNSW index (0 while Qdrant still scans: small collections)."""
        return 0 if self._shard is None else int(self._shard.info().indexed_vectors_count)

    def optimize(self) -> None:
        if self._shard is not None:
            self._shard.optimize()
            self._shard.flush()
