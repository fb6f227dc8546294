"""The store's own record: named vectors and their specs, the default vector, BM25 settings, tenancy,
and the default pipeline (the model set: hybrid on or off, the default reranker).

The backend keeps it (``store.json`` beside an Edge shard, the collection's metadata on a server), so
every process that opens the store sees the same choices: which encoder reloads a vector, which
vector searches use by default, whether every search must name a tenant.
"""

from __future__ import annotations

import logging
from typing import Any

from mmrag.errors import ConfigError, StoreError
from mmrag.store.base import SPARSE_VECTOR, Backend
from mmrag.store.sparse import Bm25Settings
from mmrag.types import ModelSet, RerankerSpec, VectorSpec

__all__ = ["StoreMeta"]

log = logging.getLogger(__name__)


class StoreMeta:
    """Typed access to the metadata dict a backend reads and writes.

    Example:
        >>> meta = StoreMeta(backend)                               # doctest: +SKIP
        >>> meta.default_spec                                        # doctest: +SKIP
        'lite'
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.data: dict[str, Any] = backend.read_meta()

    def save(self) -> None:
        self._backend.write_meta(self.data)

    @property
    def vectors(self) -> dict[str, dict[str, Any]]:
        """Named vectors: ``{name: {"dim", "spec", "encoder_id", "aligned"}}``."""
        return {k: dict(v) for k, v in self.data.get("vectors", {}).items()}

    @property
    def default_vector(self) -> str | None:
        value = self.data.get("default_vector")
        return str(value) if value else None

    @property
    def default_spec(self) -> str | None:
        """Encoder spec of the default vector: what a search loads when no model is given."""
        name, vectors = self.default_vector, self.vectors
        return str(vectors[name]["spec"]) if name and name in vectors else None

    def set_default_vector(self, name: str, location: str) -> None:
        if name not in self.vectors:
            raise StoreError(f"no vector {name!r} in {location}; it holds {sorted(self.vectors)}")
        self.data["default_vector"] = name
        self.save()

    def record_vector(self, spec: VectorSpec, *, tenancy: bool, sparse: bool) -> bool:
        """Record a vector the backend just added (the first becomes the default); returns whether
        the store predates BM25 settings, i.e. its points need their sparse vectors computed."""
        self.data = self._backend.read_meta() or self.data
        if tenancy:
            self.data["tenancy"] = True
        self.data.setdefault("vectors", {})[spec.name] = {
            "dim": spec.dim,
            "spec": spec.model,
            "encoder_id": spec.encoder_id,
            "aligned": spec.aligned,
        }
        if not self.data.get("default_vector"):
            self.data["default_vector"] = spec.name
        backfill = sparse and "bm25" not in self.data
        if sparse:
            self.data.setdefault("bm25", Bm25Settings().to_dict())
        self.save()
        return backfill

    def ensure_bm25(self) -> bool:
        """Record default BM25 settings if the store has none; returns whether it just did."""
        if "bm25" in self.data:
            return False
        self.data["bm25"] = Bm25Settings().to_dict()
        self.save()
        return True

    @property
    def tenancy(self) -> bool:
        return bool(self.data.get("tenancy"))

    def mark_tenancy(self) -> None:
        """Persist the multi-tenant flag (only once the store holds a vector: before, there is no
        collection on a server to keep it in)."""
        if self._backend.vector_dims() and not self.data.get("tenancy"):
            self.data["tenancy"] = True
            self.save()

    @property
    def bm25(self) -> Bm25Settings:
        return Bm25Settings.from_dict(self.data.get("bm25"))

    # -- the model set: what every face runs by default ------------------------------------
    def model_set(self) -> ModelSet:
        """The default pipeline; hybrid is on by default wherever the store holds BM25 vectors."""
        has_sparse = SPARSE_VECTOR in self._backend.sparse_names()
        raw = self.data.get("reranker")
        hybrid = self.data.get("hybrid")
        reranker = None
        if isinstance(raw, dict):
            try:
                reranker = RerankerSpec.from_dict(raw)
            except (ConfigError, KeyError, TypeError, ValueError) as exc:
                # A hand-edited or damaged record must not take every face down: first stage only.
                log.warning("ignoring the store's default reranker record %r: %s", raw, exc)
        return ModelSet(
            vector=self.default_vector,
            encoder=self.default_spec,
            hybrid=has_sparse and (True if hybrid is None else bool(hybrid)),
            reranker=reranker,
        )

    def set_reranker(self, spec: RerankerSpec | None) -> None:
        """Record (or, with ``None``, clear) the store's default reranker."""
        if spec is None:
            self.data.pop("reranker", None)
        else:
            self.data["reranker"] = spec.to_dict()
        self.save()

    def set_hybrid(self, on: bool) -> None:
        self.data["hybrid"] = bool(on)
        self.save()
