"""A BEIR corpus (e.g. SciFact) in a hybrid store, for training the reranker and measuring it.

Shared by ``mmrag train-reranker`` and ``benchmarks/bench_rerank.py``: the corpus is indexed once
(dense vectors cached on disk by encoder id, as ``benchmarks/bench_query.py`` does), and first-stage
candidate pools are mined from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders.base import vector_spec
from mmrag.eval.metrics import evaluate
from mmrag.eval.runner import corpus_chunks
from mmrag.types import Hit

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.eval.datasets import BeirDataset
    from mmrag.store import QdrantStore

log = logging.getLogger(__name__)


def scifact_val_slice(
    data: Path, queries: int | None = None, docs: int | None = None
) -> tuple[BeirDataset, list[str]]:
    """SciFact train with the ids of its held-out val-fold queries (the first ``queries`` of them).

    ``docs`` (smoke runs): keep only the first N corpus docs plus the relevant docs of those queries.
    """
    from mmrag.eval.datasets import BeirDataset, scifact_val_query_ids

    ds = BeirDataset.load(data / "scifact", "train")
    val = scifact_val_query_ids(data / "triplets" / "scifact_train_triplets.jsonl") or set()
    qids = sorted(q for q in val if q in ds.queries)[:queries]
    if docs:
        keep = set(list(ds.corpus)[:docs]) | {d for q in qids for d in ds.qrels[q]}
        ds = type(ds)(ds.root, {d: v for d, v in ds.corpus.items() if d in keep}, ds.queries, ds.qrels)
    return ds, qids


def corpus_vectors(encoder: DualEncoder, ds: BeirDataset, cache: Path | None) -> np.ndarray[Any, Any]:
    """Dense vectors of every corpus document, cached as ``<cache>/<encoder id>-<name>-<n>.npy``."""
    ids = list(ds.corpus)
    path = cache / f"{encoder.id}-{ds.root.name}-{len(ids)}.npy" if cache else None
    if path is not None and path.exists():
        vecs: np.ndarray[Any, Any] = np.load(path)
        if vecs.shape == (len(ids), encoder.dim):
            return vecs
    t = time.perf_counter()
    vecs = encoder.encode_text([ds.doc_text(d) for d in ids], batch_size=64)
    log.info("encoded %d docs in %.0f s", len(ids), time.perf_counter() - t)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vecs)
    return vecs


def index_corpus(store: QdrantStore, encoder: DualEncoder, ds: BeirDataset, cache: Path | None) -> int:
    """Write the corpus (dense + BM25) into ``store`` unless it already holds it; returns the count."""
    chunks = corpus_chunks(ds)
    vector = store.ensure_vector(vector_spec(encoder))
    if store.count() >= len(chunks) and len(store.existing_ids([c.id for c in chunks[:50]], vector)) == 50:
        return store.count()
    vecs = corpus_vectors(encoder, ds, cache)
    for start in range(0, len(chunks), 256):
        store.upsert_chunks(chunks[start : start + 256], vecs[start : start + 256], vector)
    store.optimize()
    return store.count()


def doc_ids(hits: Sequence[Hit]) -> list[str]:
    return [str(h.chunk.metadata.get("doc_id", h.chunk.id)) for h in hits]


def ranking_metrics(
    qrels: dict[str, dict[str, int]], runs: Mapping[str, Sequence[Hit]], ks: Sequence[int] = (10, 100)
) -> dict[str, float]:
    """nDCG@k / Recall@k of hit lists keyed by query id."""
    return evaluate(qrels, {q: doc_ids(h) for q, h in runs.items()}, ks=sorted(set(ks)))
