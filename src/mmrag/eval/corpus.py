"""A BEIR corpus in a store: one text chunk per document, indexed once, and hit lists scored by doc id.

Shared by ``mmrag eval``, reranker training (:mod:`mmrag.train.reranker`) and the rerank and peer
benchmarks: the corpus is indexed once (dense vectors cached on disk by encoder id, as
``benchmarks/bench_query.py`` does), and first-stage hit lists map back to BEIR doc ids.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders.base import FloatArray, vector_spec
from mmrag.eval.metrics import evaluate
from mmrag.store.payload import EVAL_WRITER
from mmrag.types import Chunk, Hit, chunk_id

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.eval.datasets import BeirDataset
    from mmrag.store import QdrantStore

log = logging.getLogger(__name__)

__all__ = ["corpus_chunks", "corpus_vectors", "doc_ids", "index_corpus", "ranking_metrics"]


def corpus_chunks(ds: BeirDataset) -> list[Chunk]:
    """One text chunk per corpus document (title + text), ids as ``mmrag eval`` makes them."""
    return [
        Chunk(
            id=chunk_id(f"beir:{ds.root.name}", ds.doc_text(d), d),
            modality="text",
            source=f"{ds.root.name}/{d}",
            text=ds.doc_text(d) or d,
            image=None,
            metadata={"doc_id": d},
        )
        for d in ds.corpus
    ]


def corpus_vectors(
    encoder: DualEncoder, ds: BeirDataset, cache: Path | None, *, progress: bool = False
) -> np.ndarray[Any, Any]:
    """Dense vectors of every corpus document, cached as ``<cache>/<encoder id>-<name>-<n>.npy``."""
    ids = list(ds.corpus)
    # The ids' digest in the name: two subsets of one corpus with the same size are different files.
    digest = hashlib.sha256("\x00".join(ids).encode()).hexdigest()[:10]
    path = _cache_path(encoder, ds, cache, len(ids), digest)
    if path is not None and path.exists():
        vecs: np.ndarray[Any, Any] = np.load(path)
        if vecs.shape == (len(ids), encoder.dim):
            return vecs
    from tqdm import tqdm

    t = time.perf_counter()
    texts = [ds.doc_text(d) for d in ids]
    # Sorted by length, so each encoder batch pads little (the encoder sorts within one call only).
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vecs = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    with tqdm(
        total=len(texts), desc="index corpus", unit="doc", disable=not progress, dynamic_ncols=True
    ) as bar:
        for start in range(0, len(order), 256):
            idx = order[start : start + 256]
            vecs[idx] = encoder.encode_text([texts[i] for i in idx], batch_size=64)
            bar.update(len(idx))
    log.info("encoded %d docs in %.0f s", len(ids), time.perf_counter() - t)
    path = _cache_path(encoder, ds, cache, len(ids), digest)  # the precision that really ran
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vecs)
    return vecs


def _cache_path(
    encoder: DualEncoder, ds: BeirDataset, cache: Path | None, n: int, digest: str
) -> Path | None:
    """bf16 text batches (encoders.bf16) give slightly different vectors: their own file."""
    if cache is None:
        return None
    tag = "-bf16" if encoder.describe().get("text_batch_precision") == "bf16" else ""
    return cache / f"{encoder.id}{tag}-{ds.root.name}-{n}-{digest}.npy"


class _Precomputed:
    """``encoder`` answering ``encode_text`` with rows computed before (the on-disk vector cache),
    for exactly the texts they belong to, in order: the corpus goes through the one write path
    without being encoded again."""

    def __init__(self, encoder: DualEncoder, texts: Sequence[str], vecs: np.ndarray[Any, Any]) -> None:
        if len(texts) != len(vecs):
            raise ValueError(f"{len(texts)} texts but {len(vecs)} cached vectors")
        self.encoder = encoder
        self.id, self.dim, self.spec, self.aligned = encoder.id, encoder.dim, encoder.spec, encoder.aligned
        self._texts, self._vecs, self._next = list(texts), vecs, 0

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        start, end = self._next, self._next + len(texts)
        if list(texts) != self._texts[start:end]:
            raise ValueError("cached corpus vectors are served in corpus order only")
        self._next = end
        return np.asarray(self._vecs[start:end], dtype=np.float32)

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> FloatArray:
        return self.encoder.encode_image(images, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return self.encoder.describe()


def index_corpus(
    store: QdrantStore,
    encoder: DualEncoder,
    ds: BeirDataset,
    cache: Path | None,
    *,
    progress: bool = False,
    writer: str = EVAL_WRITER,
) -> int:
    """Write the corpus (dense + BM25) into ``store`` unless it already holds it; returns the count.

    ``writer``: the marker its points carry (eval's; reranker training passes its own).
    """
    from mmrag.ingest.indexing import embed_and_write  # the ingest package is only needed to write

    chunks = corpus_chunks(ds)
    vector = store.ensure_vector(vector_spec(encoder))
    if store.count() >= len(chunks) and len(store.existing_ids([c.id for c in chunks[:50]], vector)) == 50:
        return store.count()
    vecs = corpus_vectors(encoder, ds, cache, progress=progress)
    cached = _Precomputed(encoder, [c.text or "" for c in chunks], vecs)
    embed_and_write(cached, store, chunks, vector=vector, batch=256, writer=writer)
    store.optimize()
    return store.count()


def doc_ids(hits: Sequence[Hit]) -> list[str]:
    """The BEIR doc id of each hit (its chunk id when the payload has none)."""
    return [str(h.chunk.metadata.get("doc_id", h.chunk.id)) for h in hits]


# Significant digits of the first-stage score that steady_hits ranks by, and the extra hits asked for
# so that its cut is made on that ranking rather than the store's.
STEADY_DIGITS = 6
STEADY_MARGIN = 5


def steady_hits(hits: Sequence[Hit], k: int, digits: int = STEADY_DIGITS) -> list[Hit]:
    """The best ``k`` hits, ranked by first-stage score to ``digits`` significant digits, then by doc
    id: a ranking that every run over the same data reproduces.

    Qdrant Edge sums a BM25 score's terms in an order that varies from one store to another: two
    stores built from the same points, even in one process, give ~7% of the scored documents values
    one float32 ulp apart (the dense scores are identical). Documents whose true scores tie (e.g. two
    abstracts with the same BM25 score and no dense score) then swap places at random, and so do the
    hard negatives mined from these lists (:func:`mmrag.train.groups.mine_groups`). Ask the store
    for :data:`STEADY_MARGIN` more hits than ``k`` so that the cut at ``k`` is made on this ranking.
    """

    def score(h: Hit) -> float:
        s = h.fused if h.fused is not None else h.dense if h.dense is not None else h.sparse
        return float(f"{s:.{digits}g}") if s is not None else float("-inf")

    ranked = sorted(zip(hits, doc_ids(hits), strict=True), key=lambda hd: (-score(hd[0]), hd[1]))
    # the ranks renumbered too: later ties (e.g. a fusion at weight 0) break on ann_rank
    return [replace(h, ann_rank=i + 1, final_rank=i + 1) for i, (h, _) in enumerate(ranked[:k])]


def steady_search(retriever: Any, texts: Sequence[str], k: int, **options: Any) -> list[list[Hit]]:
    """``retriever.search_batch`` of ``texts`` (with ``options``), each list cut to ``k`` by
    :func:`steady_hits` from :data:`STEADY_MARGIN` more hits."""
    return [steady_hits(hits, k) for hits in retriever.search_batch(texts, k=k + STEADY_MARGIN, **options)]


def ranking_metrics(
    qrels: dict[str, dict[str, int]], runs: Mapping[str, Sequence[Hit]], ks: Sequence[int] = (10, 100)
) -> dict[str, float]:
    """nDCG@k / Recall@k of hit lists keyed by query id."""
    return evaluate(qrels, {q: doc_ids(h) for q, h in runs.items()}, ks=sorted(set(ks)))
