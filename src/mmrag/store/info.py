"""``mmrag info``'s report: what a store holds and the pipeline it runs by default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmrag.types import ModelSet

__all__ = ["StoreInfo"]


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """What a store holds (``mmrag info``): counts, vectors, the default vector and the model set.

    Attributes:
        location: Store directory or server URL.
        points: Points in the store.
        by_modality: Points per modality.
        sources: Distinct source files.
        vectors: Vector name → its description (``dim``, ``spec``, ``encoder_id``, ``aligned``).
        default_vector: The vector searches use by default (``None`` in an empty store).
        tenancy: Whether every search must name one tenant.
        indexed_vectors: Points in an HNSW index (0: Qdrant scans exactly).
        model_set: The pipeline the faces run by default (:class:`~mmrag.types.ModelSet`).
        extra: Any further keys of :meth:`QdrantStore.stats`, passed through to :meth:`to_dict`.

    Example:
        >>> info = StoreInfo.from_stats({"location": "s", "points": 0, "by_modality": {},
        ...     "sources": 0, "vectors": {}, "default_vector": None})
        >>> info.to_text().splitlines()[0]
        'store: s'
    """

    location: str
    points: int
    by_modality: Mapping[str, int]
    sources: int
    vectors: Mapping[str, Mapping[str, Any]]
    default_vector: str | None
    tenancy: bool = False
    indexed_vectors: int = 0
    model_set: ModelSet | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _KEYS = ("location", "points", "by_modality", "sources", "vectors", "default_vector")

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any], model_set: ModelSet | None = None) -> StoreInfo:
        """From :meth:`QdrantStore.stats`' mapping (keys it does not name go to ``extra``)."""
        known = {"tenancy", "indexed_vectors", *cls._KEYS}
        return cls(
            location=stats["location"],
            points=stats["points"],
            by_modality=dict(stats["by_modality"]),
            sources=stats["sources"],
            vectors={n: dict(v) for n, v in stats["vectors"].items()},
            default_vector=stats["default_vector"],
            tenancy=bool(stats.get("tenancy", False)),
            indexed_vectors=int(stats.get("indexed_vectors", 0)),
            model_set=model_set,
            extra={k: v for k, v in stats.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """``mmrag info --json``: the store's stats, keys as :meth:`QdrantStore.stats` names them."""
        return {
            "location": self.location,
            "points": self.points,
            "by_modality": dict(self.by_modality),
            "sources": self.sources,
            "vectors": {n: dict(v) for n, v in self.vectors.items()},
            "default_vector": self.default_vector,
            "tenancy": self.tenancy,
            "indexed_vectors": self.indexed_vectors,
            **({"model_set": self.model_set.to_dict()} if self.model_set is not None else {}),
            **self.extra,
        }

    def to_text(self) -> str:
        """What ``mmrag info`` prints: location, counts, default vector, one line per vector."""
        lines = [
            f"store: {self.location}",
            f"points: {self.points} {dict(self.by_modality)}",
            f"sources: {self.sources}",
            f"default vector: {self.default_vector}",
        ]
        if self.extra.get("quantization"):
            lines.append(f"quantization: {self.extra['quantization']} (rescored with the float vectors)")
        lines += [
            f"  vector {n}: dim {v.get('dim')}, model {v.get('spec')}, aligned {v.get('aligned')}"
            for n, v in self.vectors.items()
        ]
        lines += self.model_set_lines()
        return "\n".join(lines)

    def model_set_lines(self) -> list[str]:
        """The model-set part of :meth:`to_text` (also what ``mmrag model-set`` prints)."""
        ms = self.model_set
        if ms is None:
            return []
        rr = ms.reranker
        lines = [f"search pipeline (model set): {'hybrid (BM25 + dense)' if ms.hybrid else 'dense'}"]
        if rr is None:
            lines.append("  reranker: none (first stage only; set one with `mmrag model-set --reranker M`)")
        else:
            opts = [f"max_length {rr.max_length}" if rr.max_length else "", "int8" if rr.int8 else ""]
            opts += [f"fusion weights {dict(rr.fusion_weights)}" if rr.fusion_weights else ""]
            lines.append(f"  reranker: {rr.model}" + "".join(f", {o}" for o in opts if o))
        return lines
