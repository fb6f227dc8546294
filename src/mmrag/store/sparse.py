"""BM25 sparse vectors, computed in-process by Qdrant Edge's ``Bm25`` embedder.

The same embedder serves both backends: documents get BM25 term-frequency weights (``k``, ``b``,
``avg_len``), queries weight 1 per unique token, and the store's sparse vector has Qdrant's IDF
modifier, so ``query · document`` is the BM25 score with collection-wide IDF kept up to date by
Qdrant. Tokenization (lowercase, stop words, Snowball stemming) is Qdrant's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mmrag._lazy import require
from mmrag.errors import ConfigError
from mmrag.store.base import SparseVec
from mmrag.types import Chunk


@dataclass(frozen=True, slots=True)
class Bm25Settings:
    """BM25 parameters; a store records them when it is created so queries always match its documents.

    Attributes:
        k: Term-frequency saturation.
        b: Length normalisation (0 = none, 1 = full).
        avg_len: Expected average document length in tokens (after stop-word removal).
        language: Stop words and stemmer (Qdrant's language names, e.g. ``"english"``).
    """

    k: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0
    language: str = "english"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Bm25Settings:
        if not data:
            return cls()
        return cls(
            k=float(data.get("k", 1.2)),
            b=float(data.get("b", 0.75)),
            avg_len=float(data.get("avg_len", 256.0)),
            language=str(data.get("language", "english")),
        )


class Bm25Encoder:
    """Text → BM25 sparse vectors (documents and queries).

    Example:
        >>> enc = Bm25Encoder()
        >>> q = enc.embed_query("foxes")
        >>> d = enc.embed_documents(["The fox jumps"])[0]
        >>> bool(set(q.indices) & set(d.indices))   # "foxes" and "fox" share a stem
        True
    """

    def __init__(self, settings: Bm25Settings | None = None) -> None:
        self.settings = settings or Bm25Settings()
        qe = require("qdrant_edge", "core")
        s = self.settings
        try:
            self._model = qe.Bm25(qe.Bm25Config(k=s.k, b=s.b, avg_len=s.avg_len, language=s.language))
        except ValueError as exc:
            raise ConfigError(f"invalid BM25 settings {s}: {exc}") from exc

    def embed_documents(self, texts: Sequence[str]) -> list[SparseVec]:
        out = []
        for text in texts:
            v = self._model.embed_document(text)
            out.append(SparseVec(list(v.indices), list(v.values)))
        return out

    def embed_query(self, text: str) -> SparseVec:
        v = self._model.embed_query(text)
        return SparseVec(list(v.indices), list(v.values))


def document_vectors(encoder: Bm25Encoder, chunks: Sequence[Chunk]) -> dict[str, SparseVec]:
    """BM25 vectors of the chunks that have text (an image's caption / alt / OCR text), by chunk id;
    a text of only stop words gets none (Qdrant rejects empty sparse vectors)."""
    with_text = [c for c in chunks if c.text and c.text.strip()]
    vecs = encoder.embed_documents([c.text or "" for c in with_text])
    return {c.id: v for c, v in zip(with_text, vecs, strict=True) if v.indices}
