"""Typed records that flow between mmrag's stages.

Stages pass these frozen dataclasses, never dicts, so that every field is named, typed
and checked by mypy from the loader to the LangChain adapter.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mmrag.errors import ConfigError

Modality = Literal["text", "image"]
MODALITIES: tuple[Modality, ...] = ("text", "image")

# A fixed namespace makes chunk ids reproducible across machines and runs.
_CHUNK_NAMESPACE = uuid.UUID("6f1c2b7e-5d0a-4a8e-9f3b-2c4d6e8f0a1b")


def content_hash(data: bytes | str) -> str:
    """Return the hex SHA-256 of ``data`` (text is hashed as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def chunk_id(source_id: str, content: str, position: int | str) -> str:
    """Deterministic chunk id: uuid5 of (source id, content hash, position).

    Re-ingesting the same file yields the same ids, so the store upsert is idempotent.

    Example:
        >>> chunk_id("a.txt", "hello", 0) == chunk_id("a.txt", "hello", 0)
        True
    """
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{source_id}\x00{content_hash(content)}\x00{position}"))


_VECTOR_NAME_RE = re.compile(r"[^a-z0-9_.-]+")


def vector_name(encoder_id: str) -> str:
    """Qdrant vector name for an encoder id: lower-case, safe characters, bounded length.

    Example:
        >>> vector_name("openclip:ViT-B-32/openai")
        'openclip-vit-b-32-openai'
    """
    name = _VECTOR_NAME_RE.sub("-", encoder_id.lower()).strip("-") or "default"
    if len(name) > 64:
        # Keep distinct ids distinct: a cut tail is replaced by a hash of the whole id.
        digest = hashlib.sha256(encoder_id.encode()).hexdigest()[:10]
        name = f"{name[:53]}-{digest}"
    return name


@dataclass(frozen=True, slots=True)
class VectorSpec:
    """What the store needs to know about an encoder's dense vector, without the model itself.

    The store keeps one named vector per encoder; it records this spec in its metadata so that a
    later process can reload the same encoder (``model``) and refuse a mismatched one (``dim``).

    Attributes:
        name: Qdrant vector name (see :func:`vector_name`).
        dim: Vector dimension.
        model: The encoder spec string that reloads the model (``lite``, a checkpoint path...).
        encoder_id: The encoder's stable id (``name`` is derived from it).
        aligned: Whether the encoder's image and text heads were trained together.

    Example:
        >>> VectorSpec.of("lite-untrained-v1", 512, "lite", aligned=False).name
        'lite-untrained-v1'
    """

    name: str
    dim: int
    model: str
    encoder_id: str
    aligned: bool = False

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"vector dimension must be >= 1, got {self.dim}")
        if not self.name:
            raise ValueError("vector name must not be empty")

    @classmethod
    def of(cls, encoder_id: str, dim: int, model: str, *, aligned: bool = False) -> VectorSpec:
        """The spec of an encoder with this id (its vector name derived from the id)."""
        return cls(vector_name(encoder_id), int(dim), model, encoder_id, bool(aligned))


@dataclass(frozen=True, slots=True)
class RerankerSpec:
    """The second stage a store runs by default: which cross-encoder, and how its score is fused.

    Attributes:
        model: Hugging Face name, local folder, or a ``mmrag train-reranker`` checkpoint.
        max_length: Tokens per (query, passage) pair; ``None``: the checkpoint's own.
        int8: Run the cross-encoder with int8 dynamic quantization.
        fusion_weights: Per-modality weight of the rerank score against the first stage's
            (``None``/empty: the weights saved with the checkpoint).

    Example:
        >>> RerankerSpec.from_dict(RerankerSpec("ckpt", int8=True).to_dict()).int8
        True
    """

    model: str
    max_length: int | None = None
    int8: bool = False
    fusion_weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("a reranker spec needs a model name or path")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"reranker max_length must be >= 8, got {self.max_length}")
        for modality, w in self.fusion_weights.items():
            if not 0.0 <= float(w) <= 1.0:
                raise ConfigError(f"rerank fusion weight for {modality} must be in [0, 1], got {w}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_length": self.max_length,
            "int8": self.int8,
            "fusion_weights": dict(self.fusion_weights),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankerSpec:
        return cls(
            model=str(data["model"]),
            max_length=int(data["max_length"]) if data.get("max_length") else None,
            int8=bool(data.get("int8", False)),
            fusion_weights={str(k): float(v) for k, v in (data.get("fusion_weights") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class ModelSet:
    """The pipeline a store runs by default, recorded in the store so every face runs the same one.

    Attributes:
        vector: The default dense vector (``None`` for an empty store).
        encoder: The encoder spec that reloads it.
        hybrid: Fuse BM25 with dense search by default (needs BM25 vectors in the store).
        reranker: The default second stage, or ``None`` (first stage only).
    """

    vector: str | None = None
    encoder: str | None = None
    hybrid: bool = False
    reranker: RerankerSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "vector": self.vector,
            "encoder": self.encoder,
            "hybrid": self.hybrid,
            "reranker": self.reranker.to_dict() if self.reranker else None,
        }


@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable unit: a span of text or one image.

    Attributes:
        id: Deterministic uuid (see :func:`chunk_id`).
        modality: ``"text"`` or ``"image"``.
        source: File path or URI the chunk came from.
        text: Chunk text; for an image its caption / alt text / OCR text when known.
        image: Image path (or ``source#page/figure`` for extracted images).
        metadata: Free-form, JSON-serialisable extra fields (page, heading, position...).

    Example:
        >>> c = Chunk(id="1", modality="text", source="a.txt", text="hi", image=None)
        >>> c.modality
        'text'
    """

    id: str
    modality: Modality
    source: str
    text: str | None
    image: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.modality == "text" and not self.text:
            raise ValueError("a text chunk needs non-empty text")
        if self.modality == "image" and not self.image:
            raise ValueError("an image chunk needs an image path")


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved chunk with every stage's score kept side by side.

    Scores that a stage did not compute are ``None``; no stage overwrites another's.

    Attributes:
        chunk: The retrieved chunk.
        dense: Similarity from the dense ANN stage (cosine).
        sparse: BM25 score from the sparse stage.
        fused: Score after hybrid fusion (RRF / DBSF).
        rerank: Cross-encoder score.
        ann_rank: 1-based rank after the first stage.
        final_rank: 1-based rank in the returned list.
        vector: Name of the dense vector that produced ``dense``.
        context: Chunks around this one in its document, in reading order (``SearchRequest.expand``):
            neighbouring chunks, a figure's page text, a text chunk's figures; empty unless asked for.
    """

    chunk: Chunk
    dense: float | None
    sparse: float | None
    fused: float | None
    rerank: float | None
    ann_rank: int
    final_rank: int
    vector: str | None = None
    context: tuple[Chunk, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON form used by ``mmrag search --json`` (documented in the README)."""
        c = self.chunk
        return {
            "id": c.id,
            "modality": c.modality,
            "source": c.source,
            "text": c.text,
            "image": c.image,
            "metadata": dict(c.metadata),
            "scores": {
                "dense": self.dense,
                "sparse": self.sparse,
                "fused": self.fused,
                "rerank": self.rerank,
            },
            "ann_rank": self.ann_rank,
            "final_rank": self.final_rank,
            "vector": self.vector,
            "context": [chunk_dict(x) for x in self.context],
        }


def chunk_dict(c: Chunk) -> dict[str, Any]:
    """A chunk's JSON form (a hit's ``context`` entries)."""
    return {
        "id": c.id,
        "modality": c.modality,
        "source": c.source,
        "text": c.text,
        "image": c.image,
        "metadata": dict(c.metadata),
    }


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file the ingest run did not store, and why."""

    path: str
    reason: str


@dataclass(slots=True)
class IngestSummary:
    """What one ingest run did. Serialised by ``mmrag ingest --json``."""

    files_seen: int = 0
    files_loaded: int = 0
    chunks: dict[str, int] = field(default_factory=lambda: {"text": 0, "image": 0})
    embedded: int = 0
    written: int = 0
    already_stored: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    vector: str = ""
    # Ledger bookkeeping (added by the batch-ingestion work; older keys above are unchanged).
    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    deleted: int = 0
    pruned: int = 0
    recovered: dict[str, int] = field(default_factory=dict)
    # Files the ledger knows that this run could not load (``--on-unreadable keep|remove``).
    kept_stale: list[SkippedFile] = field(default_factory=list)
    removed_unreadable: list[SkippedFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files_seen": self.files_seen,
            "files_loaded": self.files_loaded,
            "chunks": dict(self.chunks),
            "embedded": self.embedded,
            "written": self.written,
            "already_stored": self.already_stored,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "vector": self.vector,
            "files_new": self.files_new,
            "files_changed": self.files_changed,
            "files_unchanged": self.files_unchanged,
            "deleted": self.deleted,
            "pruned": self.pruned,
            "recovered": dict(self.recovered),
            "kept_stale": [{"path": s.path, "reason": s.reason} for s in self.kept_stale],
            "removed_unreadable": [{"path": s.path, "reason": s.reason} for s in self.removed_unreadable],
        }

    def to_text(self, store: str, points_in_store: int) -> str:
        """The human-readable summary ``mmrag ingest`` prints; ``store`` / ``points_in_store``: where
        the run wrote and how many points that store holds now (the run itself does not know)."""
        lines = [
            f"files: {self.files_seen} seen, {self.files_loaded} loaded, {len(self.skipped)} skipped",
            f"chunks: {self.chunks.get('text', 0)} text, {self.chunks.get('image', 0)} image "
            f"({self.already_stored} already stored)",
            f"embedded {self.embedded}, written {self.written} into {store} (vector {self.vector}); "
            f"{points_in_store} points in store; {self.seconds:.1f} s",
            f"files: {self.files_new} new, {self.files_changed} changed, "
            f"{self.files_unchanged} unchanged; {self.deleted} stale chunks deleted, "
            f"{self.pruned} files pruned",
        ]
        lines += [f"  skipped {sk.path}: {sk.reason}" for sk in self.skipped]
        lines += [f"  kept stale {sk.path} (its stored chunks stay): {sk.reason}" for sk in self.kept_stale]
        lines += [f"  removed {sk.path} (no longer loads): {sk.reason}" for sk in self.removed_unreadable]
        return "\n".join(lines)
