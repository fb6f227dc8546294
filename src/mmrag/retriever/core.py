"""The retriever: embed the query, fetch a candidate pool (dense ANN, optionally fused with BM25),
optionally rerank it with a cross-encoder, cut to ``k``.

Single calls wrap batch calls, so the CLI, the API and evaluation share one code path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmrag.config import DEFAULT_FUSION
from mmrag.encoders.base import l2_normalize, vector_spec
from mmrag.errors import ConfigError
from mmrag.retriever.fusion import FUSION_METHODS, FusionMethod
from mmrag.retriever.hits import dense_hits, fused_hits
from mmrag.retriever.post import refine
from mmrag.retriever.request import SearchRequest
from mmrag.store import Filters, QdrantStore, SearchOptions
from mmrag.tracing import span
from mmrag.types import Chunk, Hit

if TYPE_CHECKING:
    from PIL import Image

    from mmrag.encoders.base import DualEncoder
    from mmrag.retriever.base import Reranker
    from mmrag.store import SparseVec

log = logging.getLogger(__name__)
__all__ = ["Retriever", "SearchResult", "SparseEncoder", "dense_hits"]  # dense_hits: the LangChain face


class SparseEncoder(Protocol):
    """Embeds a query for the store's sparse (BM25) vectors: the sparse peer of the dual encoder."""

    def embed_query(self, text: str) -> SparseVec: ...


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits of one query plus per-stage timings (seconds)."""

    hits: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)


class Retriever:
    """Text or image queries against one store with one encoder.

    Stages: dense ANN (and, with ``hybrid``, BM25 over the same store fused by RRF or DBSF) →
    optional cross-encoder rerank of the top ``pool`` → cut to ``k``. Every stage's score and the
    rank before (``ann_rank``) and after (``final_rank``) reranking stay on each :class:`Hit`.

    Args:
        encoder: The dual encoder whose vectors the store holds.
        store: The store to search.
        pool: First-stage candidates handed to the reranker (and fetched per branch unless
            ``dense_pool`` / ``sparse_pool`` say otherwise); >= 1.
        hnsw_ef: HNSW search breadth (``None`` = Qdrant's default); raise it for recall.
        exact: Scan every point instead of the HNSW graph (reproducible runs, recall baselines).
        vector: Named vector to search; default: the encoder's own vector in the store.
        hybrid: Default for text queries: fuse BM25 with dense (needs a store with BM25 vectors).
        fusion: ``"dbsf"`` (default) or ``"rrf"`` (see :mod:`mmrag.retriever.fusion`). DBSF keeps how
            far apart each branch's scores are, which RRF's ranks drop: on SciFact's training queries
            it scores nDCG@10 0.728 against RRF's 0.710 (docs/search.md).
        rrf_k: RRF's ``k``.
        dense_pool: Candidates from the dense branch in hybrid mode (default ``pool``).
        sparse_pool: Candidates from the BM25 branch in hybrid mode (default ``pool``).
        reranker: A :class:`~mmrag.retriever.base.Reranker` (e.g. a
            :class:`~mmrag.rerank.CrossEncoderReranker`).
        rerank: Default for text queries: rerank when a reranker is given (default ``True`` then).
        sparse_encoder: Embeds BM25 queries (default: the store's ``sparse_encoder``, whose settings
            match its documents).

    Example:
        >>> r = Retriever(load_encoder("lite"), QdrantStore.open(".mmrag"), hybrid=True)  # doctest: +SKIP
        >>> [h.chunk.source for h in r.search("dense passage retrieval", k=3)]  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: DualEncoder,
        store: QdrantStore,
        *,
        pool: int = 50,
        hnsw_ef: int | None = None,
        exact: bool = False,
        vector: str | None = None,
        hybrid: bool = False,
        fusion: FusionMethod = DEFAULT_FUSION,
        rrf_k: int = 60,
        dense_pool: int | None = None,
        sparse_pool: int | None = None,
        reranker: Reranker | None = None,
        rerank: bool | None = None,
        sparse_encoder: SparseEncoder | None = None,
    ) -> None:
        for name, value in (("pool", pool), ("dense_pool", dense_pool), ("sparse_pool", sparse_pool)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if hnsw_ef is not None and hnsw_ef < 1:
            raise ConfigError(f"hnsw_ef must be >= 1, got {hnsw_ef}")
        if fusion not in FUSION_METHODS:
            raise ConfigError(f"fusion must be one of {FUSION_METHODS}, got {fusion!r}")
        if rrf_k < 1:
            raise ConfigError(f"rrf_k must be >= 1, got {rrf_k}")
        self.encoder = encoder
        self.store = store
        self.pool = pool
        self.options = SearchOptions(hnsw_ef=hnsw_ef, exact=exact)
        self.vector = vector or store.vector_for(vector_spec(encoder))
        self.fusion: FusionMethod = fusion
        self.rrf_k = rrf_k
        self.dense_pool = dense_pool
        self.sparse_pool = sparse_pool
        self.reranker = reranker
        if hybrid and not store.has_sparse:
            raise ConfigError(
                f"hybrid search needs BM25 vectors, and store {store.location} has none "
                "(created before hybrid search); re-ingest into a new store"
            )
        if rerank and reranker is None:
            raise ConfigError("rerank=True needs a reranker (e.g. mmrag.rerank.CrossEncoderReranker)")
        self.hybrid = hybrid
        self.rerank = reranker is not None if rerank is None else rerank
        # BM25 queries are embedded here, like dense ones: with the store's own settings by default,
        # since they must match how the store weighted its documents.
        self._sparse_encoder = sparse_encoder
        if not encoder.aligned:
            log.info(
                "encoder %s has untrained image/text heads: cross-modal scores are not meaningful", encoder.id
            )

    @property
    def sparse_encoder(self) -> SparseEncoder:
        if self._sparse_encoder is None:
            self._sparse_encoder = self.store.sparse_encoder
        return self._sparse_encoder

    @property
    def capabilities(self) -> dict[str, bool]:
        """Which optional stages this retriever can run (``hybrid``: BM25 + dense; ``rerank``)."""
        return {"hybrid": self.store.has_sparse, "rerank": self.reranker is not None}

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

    def _stages(self, hybrid: bool | None, rerank: bool | None, text: bool) -> tuple[bool, bool]:
        for stage, wanted in (("hybrid", hybrid), ("rerank", rerank)):
            if wanted and not self.capabilities[stage]:
                raise ConfigError(f"{stage} search is not available in this retriever")
            if wanted and not text:
                raise ConfigError(f"{stage} search needs a text query, not an image")
        use_hybrid = (self.hybrid if hybrid is None else hybrid) and text
        use_rerank = (self.rerank if rerank is None else rerank) and text
        return use_hybrid, use_rerank

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
        """Like :meth:`search`, plus per-stage timings in seconds (``encode``, ``ann``, ``sparse``,
        ``fuse``, ``rerank``, ``total``; a stage that did not run is absent).

        ``hybrid`` / ``rerank``: ``None`` uses the retriever's default; ``True`` asks for the stage and raises
        :class:`ConfigError` when this retriever cannot run it (see :attr:`capabilities`) or the query is
        an image.
        """
        with span("search", k=k, image=image is not None) as s:
            res = self._search_one(query, image, k, modality, filters, pool, hybrid, rerank)
            s.set(hits=len(res.hits))
        return res

    def _search_one(
        self, query: str | None, image: Image.Image | str | Path | None, k: int, modality: str | None,
        filters: Filters | None, pool: int | None, hybrid: bool | None, rerank: bool | None,
    ) -> SearchResult:  # fmt: skip
        """:meth:`search_with_timings` inside its caller's ``mmrag.search`` span."""
        if (query is None) == (image is None):
            raise ConfigError("pass a text query or an image, exactly one of them")
        if query is not None and not query.strip():
            raise ConfigError("the text query is empty")
        if query is None:
            self._stages(hybrid, rerank, text=False)
            return self._dense_timed(None, image, k=k, modality=modality, filters=filters, pool=pool)
        return self._search_texts(
            [query], k=k, modality=modality, filters=filters, pool=pool, hybrid=hybrid, rerank=rerank
        )[0]

    def run(self, req: SearchRequest) -> SearchResult:
        """Run one :class:`~mmrag.retriever.request.SearchRequest`: text, image, or text + image.

        A composed (text + image) query searches with the normalised, ``image_weight``-weighted sum
        of both embeddings, one point in the shared space, dense only: the optional stages take one
        text query, so asking for them raises :class:`ConfigError` (as for an image query) and their
        defaults are skipped. ``group_by``, ``expand`` and ``mmr_lambda`` reshape the final hits
        (:mod:`mmrag.retriever.post`).
        """
        with span("search", k=req.k, composed=req.composed, image=req.image is not None) as s:
            res = SearchResult(*refine(self, req, self._run)) if req.refines else self._run(req)
            s.set(hits=len(res.hits))
        return res

    def _run(self, req: SearchRequest) -> SearchResult:
        filters = req.search_filters()
        if not req.composed:  # run() opened the search span
            return self._search_one(
                req.text, req.image, req.k, req.modality, filters, req.pool, req.hybrid, req.rerank
            )
        if not (req.text or "").strip():
            raise ConfigError("the text query is empty")
        for stage, wanted in (("hybrid", req.hybrid), ("rerank", req.rerank)):
            if wanted:
                raise ConfigError(f"{stage} search needs a text query alone, not a text + image query")
        return self._dense_timed(
            req.text, req.image, k=req.k, modality=req.modality, filters=filters, pool=req.pool,
            image_weight=req.image_weight,
        )  # fmt: skip

    def _dense_timed(
        self, text: str | None, image: Image.Image | str | Path | None, *, k: int, modality: str | None,
        filters: Filters | None, pool: int | None, image_weight: float = 0.5,
    ) -> SearchResult:  # fmt: skip
        """Dense search for one image, or for one text + image (the normalised weighted sum of both
        embeddings: ``(1 - image_weight) * text + image_weight * image``)."""
        t0 = time.perf_counter()
        with span("encode", queries=1, composed=text is not None, image_weight=image_weight):
            qvec = self.encoder.encode_image([image])  # type: ignore[list-item]
            if text is not None:
                tvec = self.encoder.encode_text([text])
                qvec = l2_normalize((1.0 - image_weight) * tvec + image_weight * qvec)
        t1 = time.perf_counter()
        with span("ann", k=k, vector=self.vector) as s:
            hits = self.search_vectors(qvec, k=k, modality=modality, filters=filters, pool=pool)[0]
            s.set(hits=len(hits))
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
        hybrid: bool | None = None,
        rerank: bool | None = None,
    ) -> list[list[Hit]]:
        """Many text queries in one encoder pass and one batched store query per branch."""
        if not queries:
            return []
        with span("search", queries=len(queries), k=k) as s:  # one span for the batch's stages
            results = self._search_texts(
                queries, k=k, modality=modality, filters=filters, pool=pool, hybrid=hybrid, rerank=rerank
            )
            s.set(hits=sum(len(r.hits) for r in results))
        return [r.hits for r in results]

    def _search_texts(
        self,
        queries: Sequence[str],
        *,
        k: int,
        modality: str | None,
        filters: Filters | None,
        pool: int | None,
        hybrid: bool | None,
        rerank: bool | None,
    ) -> list[SearchResult]:
        use_hybrid, use_rerank = self._stages(hybrid, rerank, text=True)
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        size = pool if pool is not None else self.pool
        if size < 1:
            raise ConfigError(f"pool must be >= 1, got {size}")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        with span("encode", queries=len(queries)):
            qvecs = self.encoder.encode_text(list(queries))
        t1 = time.perf_counter()
        timings["encode"] = t1 - t0
        n = len(queries)
        if not use_hybrid:
            depth = max(k, size) if use_rerank and self.reranker is not None else k  # pool: to rerank
            with span("ann", queries=n, k=depth, vector=self.vector) as sp:
                first = self.search_vectors(qvecs, k=depth, modality=modality, filters=filters, pool=depth)
                sp.set(hits=sum(map(len, first)))
            timings["ann"] = time.perf_counter() - t1
        else:
            limit = max(k, self.dense_pool or size)
            with span("ann", queries=n, k=limit, vector=self.vector) as sp:
                dense = self.store.search(
                    self.vector, qvecs, limit, modality=modality, filters=filters, options=self.options
                )
                sp.set(hits=sum(map(len, dense)))
            t2 = time.perf_counter()
            with span("bm25", queries=n, k=max(k, self.sparse_pool or size)) as sp:
                sparse = self.store.search_sparse(
                    [self.sparse_encoder.embed_query(q) for q in queries],
                    max(k, self.sparse_pool or size),
                    modality=modality,
                    filters=filters,
                )
                sp.set(hits=sum(map(len, sparse)))
            t3 = time.perf_counter()
            with span("fuse", queries=n, method=self.fusion) as sp:
                first = [self._fuse(d, s) for d, s in zip(dense, sparse, strict=True)]
                sp.set(hits=sum(map(len, first)))
            timings.update(ann=t2 - t1, sparse=t3 - t2, fuse=time.perf_counter() - t3)
        out = []
        for q, hits in zip(queries, first, strict=True):
            qt = {key: v / n for key, v in timings.items()}  # batch stages: each query's share
            if use_rerank and self.reranker is not None:
                t4 = time.perf_counter()
                with span("rerank", pool=min(size, len(hits)), reranker=getattr(self.reranker, "id", None)):
                    head = self.reranker.rerank(q, hits[:size])
                hits = head + [replace(h, final_rank=len(head) + i + 1) for i, h in enumerate(hits[size:])]
                qt["rerank"] = time.perf_counter() - t4
            qt["total"] = sum(qt.values())
            out.append(SearchResult(hits[:k], qt))
        return out

    def _fuse(self, dense: list[tuple[Chunk, float]], sparse: list[tuple[Chunk, float]]) -> list[Hit]:
        return fused_hits(dense, sparse, self.fusion, self.rrf_k, self.vector)

    def search_images(
        self,
        images: Sequence[Image.Image | str | Path],
        *,
        k: int = 10,
        modality: str | None = None,
        filters: Filters | None = None,
        pool: int | None = None,
    ) -> list[list[Hit]]:
        """Many image queries in one encoder pass and one batched store query (dense only)."""
        if not images:
            return []
        with span("search", queries=len(images), k=k, image=True) as s:
            with span("encode", queries=len(images)):
                qvecs = self.encoder.encode_image(list(images))
            with span("ann", queries=len(images), k=k, vector=self.vector):
                out = self.search_vectors(qvecs, k=k, modality=modality, filters=filters, pool=pool)
            s.set(hits=sum(map(len, out)))
        return out

    def search_vectors(
        self,
        qvecs: np.ndarray[Any, Any],
        *,
        k: int,
        modality: str | None,
        filters: Filters | None,
        pool: int | None,
    ) -> list[list[Hit]]:
        """Dense search with precomputed query vectors (rows of ``qvecs``), one hit list per row; fetches
        ``k`` points, not ``pool`` (checked only: nothing reranks these): raise ``hnsw_ef`` for recall."""
        for name, value in (("k", k), ("pool", pool)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        results = self.store.search(
            self.vector, qvecs, k, modality=modality, filters=filters, options=self.options
        )
        return dense_hits(results, k, self.vector)
