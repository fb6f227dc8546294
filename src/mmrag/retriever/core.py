"""The retriever: embed the query, fetch an ANN candidate pool from the store, cut to ``k``.

Single calls wrap batch calls, so the CLI, the API and evaluation share one code path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.errors import ConfigError
from mmrag.store import Filters, QdrantStore, SearchOptions
from mmrag.types import Hit

if TYPE_CHECKING:
    from PIL import Image

    from mmrag.encoders.base import DualEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits of one query plus per-stage timings (seconds)."""

    hits: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)


class Retriever:
    """Text or image queries against one store with one encoder.

    Args:
        encoder: The dual encoder whose vectors the store holds.
        store: The store to search.
        pool: Candidates fetched from the ANN stage before the cut to ``k`` (>= k; later stages
            such as reranking re-order this pool).
        hnsw_ef: HNSW search breadth (``None`` = Qdrant's default); raise it for recall.
        vector: Named vector to search; default: the encoder's own vector in the store.

    Example:
        >>> r = Retriever(load_encoder("lite"), QdrantStore.open(".mmrag"))   # doctest: +SKIP
        >>> [h.chunk.source for h in r.search("dense passage retrieval", k=3)]  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: DualEncoder,
        store: QdrantStore,
        *,
        pool: int = 50,
        hnsw_ef: int | None = None,
        vector: str | None = None,
    ) -> None:
        if pool < 1:
            raise ConfigError(f"pool must be >= 1, got {pool}")
        if hnsw_ef is not None and hnsw_ef < 1:
            raise ConfigError(f"hnsw_ef must be >= 1, got {hnsw_ef}")
        self.encoder = encoder
        self.store = store
        self.pool = pool
        self.options = SearchOptions(hnsw_ef=hnsw_ef)
        self.vector = vector or store.vector_for(encoder)
        if not encoder.aligned:
            log.info(
                "encoder %s has untrained image/text heads: cross-modal scores are not meaningful", encoder.id
            )

    @property
    def capabilities(self) -> dict[str, bool]:
        """Which optional stages this retriever can run (``hybrid``: BM25 + dense; ``rerank``)."""
        return {"hybrid": False, "rerank": False}

    def search(
        self,
        query: str | None = None,
        *,
        image: Image.Image | str | Path | None = None,
        k: int = 10,
        modality: str | None = None,
        filters: Filters | None = None,
        pool: int | None = None,
        hybrid: bool | None = None,
        rerank: bool | None = None,
    ) -> list[Hit]:
        """Search by text or by image (exactly one); returns up to ``k`` hits, best first."""
        return self.search_with_timings(
            query,
            image=image,
            k=k,
            modality=modality,
            filters=filters,
            pool=pool,
            hybrid=hybrid,
            rerank=rerank,
        ).hits

    def search_with_timings(
        self,
        query: str | None = None,
        *,
        image: Image.Image | str | Path | None = None,
        k: int = 10,
        modality: str | None = None,
        filters: Filters | None = None,
        pool: int | None = None,
        hybrid: bool | None = None,
        rerank: bool | None = None,
    ) -> SearchResult:
        """Like :meth:`search`, plus per-stage timings in seconds.

        ``hybrid`` / ``rerank``: ``None`` uses the retriever's default; ``True`` asks for the stage and raises
        :class:`ConfigError` when this retriever cannot run it (see :attr:`capabilities`).
        """
        if (query is None) == (image is None):
            raise ConfigError("pass a text query or an image, exactly one of them")
        for stage, wanted in (("hybrid", hybrid), ("rerank", rerank)):
            if wanted and not self.capabilities[stage]:
                raise ConfigError(f"{stage} search is not available in this retriever")
        if query is not None and not query.strip():
            raise ConfigError("the text query is empty")
        t0 = time.perf_counter()
        qvec = self.encoder.encode_text([query]) if query is not None else self.encoder.encode_image([image])  # type: ignore[list-item]
        t1 = time.perf_counter()
        hits = self.search_vectors(qvec, k=k, modality=modality, filters=filters, pool=pool)[0]
        t2 = time.perf_counter()
        return SearchResult(hits, {"encode": t1 - t0, "ann": t2 - t1, "total": t2 - t0})

    def search_batch(
        self,
        queries: Sequence[str],
        *,
        k: int = 10,
        modality: str | None = None,
        filters: Filters | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]]:
        """Many text queries in one encoder pass and one batched store query."""
        if not queries:
            return []
        return self.search_vectors(
            self.encoder.encode_text(list(queries)), k=k, modality=modality, filters=filters, pool=pool
        )

    def search_images(
        self,
        images: Sequence[Image.Image | str | Path],
        *,
        k: int = 10,
        modality: str | None = None,
        filters: Filters | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]]:
        """Many image queries in one encoder pass and one batched store query."""
        if not images:
            return []
        return self.search_vectors(
            self.encoder.encode_image(list(images)), k=k, modality=modality, filters=filters, pool=pool
        )

    def search_vectors(
        self,
        qvecs: np.ndarray[Any, Any],
        *,
        k: int,
        modality: str | None,
        filters: Filters | None,
        pool: int | None,
    ) -> list[list[Hit]]:
        """Search with precomputed query vectors (rows of ``qvecs``), one hit list per row."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        size = max(k, pool if pool is not None else self.pool)
        results = self.store.search(
            self.vector, qvecs, size, modality=modality, filters=filters, options=self.options
        )
        out: list[list[Hit]] = []
        for res in results:
            hits = [
                Hit(
                    chunk=c,
                    dense=s,
                    sparse=None,
                    fused=None,
                    rerank=None,
                    ann_rank=i + 1,
                    final_rank=i + 1,
                    vector=self.vector,
                )
                for i, (c, s) in enumerate(res[:k])
            ]
            out.append(hits)
        return out
