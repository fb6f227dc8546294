"""End-to-end evaluation through the real pipeline: encoder → store → retriever → metrics.

* BEIR layout (e.g. SciFact): every corpus document is one text chunk; nDCG@10, Recall@k, MRR.
* image-caption layout (e.g. Flickr8k): images and captions go into one store; text→image with
  every caption as a query (one relevant image), image→text with every image as a query (its
  captions relevant); Recall@1/5/10.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders.base import DualEncoder, FloatArray, vector_spec
from mmrag.eval.corpus import corpus_chunks
from mmrag.eval.datasets import BeirDataset, ImageCaptionDataset
from mmrag.eval.metrics import evaluate, first_rank, flickr_recall
from mmrag.eval.reports import BeirEvalReport, ImageCaptionEvalReport
from mmrag.ingest.indexing import embed_and_write
from mmrag.retriever import Retriever
from mmrag.store import QdrantStore
from mmrag.store.payload import EVAL_WRITER
from mmrag.types import Chunk, chunk_id

if TYPE_CHECKING:
    from mmrag.retriever.base import Reranker

__all__ = ["corpus_chunks", "evaluate_beir", "evaluate_image_caption", "load_for_eval"]

log = logging.getLogger(__name__)
WRITE_BATCH = 256


class _Recording:
    """``encoder``, keeping every vector it returns in call order: the image-caption queries reuse
    the vectors computed for indexing (same encoder, same inputs) instead of encoding twice."""

    def __init__(self, encoder: DualEncoder) -> None:
        self.encoder = encoder
        self.id, self.dim, self.spec, self.aligned = encoder.id, encoder.dim, encoder.spec, encoder.aligned
        self.texts: list[FloatArray] = []
        self.images: list[FloatArray] = []

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> FloatArray:
        vecs = self.encoder.encode_text(texts, batch_size=batch_size)
        self.texts.append(vecs)
        return vecs

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> FloatArray:
        vecs = self.encoder.encode_image(images, batch_size=batch_size)
        self.images.append(vecs)
        return vecs

    def describe(self) -> dict[str, Any]:
        return self.encoder.describe()


def _index(
    store: QdrantStore, encoder: DualEncoder, chunks: Sequence[Chunk], progress: bool, desc: str
) -> None:
    """Embed and write ``chunks`` through the one ingest path, then build the index."""
    vector = store.ensure_vector(vector_spec(encoder))
    from tqdm import tqdm

    with tqdm(total=len(chunks), desc=desc, unit="chunk", disable=not progress, dynamic_ncols=True) as bar:
        embed_and_write(
            encoder, store, chunks, vector=vector, on_batch=bar.update, batch=WRITE_BATCH, writer=EVAL_WRITER
        )
    store.optimize()


@contextlib.contextmanager
def _store(location: str | None) -> Iterator[QdrantStore]:
    """The given store, or a temporary Qdrant Edge directory removed afterwards."""
    with contextlib.ExitStack() as stack:
        path = location or stack.enter_context(tempfile.TemporaryDirectory(prefix="mmrag-eval-"))
        with QdrantStore.open(path) as st:
            yield st


def evaluate_beir(
    encoder: DualEncoder,
    ds: BeirDataset,
    *,
    store: str | None = None,
    k: int = 10,
    progress: bool = True,
    hnsw_ef: int | None = None,
    hybrid: bool = False,
    reranker: Reranker | None = None,
    pool: int = 20,
    stages: bool = False,
    stage_reranker: Reranker | None = None,
) -> BeirEvalReport:
    """nDCG@k / Recall@k / MRR of a pipeline on a BEIR dataset (whole corpus indexed).

    Args:
        encoder: Encoder under test (its text tower).
        ds: The dataset (queries restricted as loaded).
        store: Store location to index into; default a temporary Qdrant Edge directory.
        k: Depth of the main cut (nDCG@k); Recall@100 is always reported too.
        hybrid: The pipeline's first stage fuses BM25 with dense (default: dense only).
        reranker: The pipeline's second stage over the top ``pool`` (default: none).
        pool: Candidates the reranker reorders.
        stages: Also evaluate every stage (BM25, dense, hybrid, hybrid + rerank, rerank alone) in the
            same run (:mod:`mmrag.eval.stages`).
        stage_reranker: The reranker of the two rerank stages (default: ``reranker``), so the
            ablation can include them while the pipeline itself runs the first stage only.
    """
    t0 = time.perf_counter()
    chunks = corpus_chunks(ds)
    with _store(store) as st:
        _index(st, encoder, chunks, progress, "index")
        t1 = time.perf_counter()
        qids = list(ds.qrels)
        retriever = Retriever(encoder, st, pool=pool, hnsw_ef=hnsw_ef, reranker=reranker)
        results = retriever.search_batch(
            [ds.queries[q] for q in qids], k=max(100, k), hybrid=hybrid, rerank=reranker is not None
        )
        run = {
            q: [str(h.chunk.metadata["doc_id"]) for h in hits] for q, hits in zip(qids, results, strict=True)
        }
        metrics = evaluate(ds.qrels, run, ks=sorted({1, 5, k, 100}))
        per_stage = None
        if stages:
            from mmrag.eval.stages import beir_stages

            per_stage = beir_stages(retriever, ds, reranker=stage_reranker or reranker, pool=pool, k=k)
        return BeirEvalReport(
            dataset=str(ds.root),
            encoder=encoder.id,
            queries=len(qids),
            corpus=len(chunks),
            metrics=metrics,
            seconds={"index": round(t1 - t0, 2), "search": round(time.perf_counter() - t1, 2)},
            pipeline=("hybrid" if hybrid else "dense") + ("+rerank" if reranker is not None else ""),
            stages=per_stage,
            reranker=getattr(reranker, "id", None),
        )


def evaluate_image_caption(
    encoder: DualEncoder,
    ds: ImageCaptionDataset,
    *,
    store: str | None = None,
    progress: bool = True,
    hnsw_ef: int | None = None,
    stages: bool = False,
) -> ImageCaptionEvalReport:
    """Flickr-protocol Recall@1/5/10 for text→image and image→text."""
    t0 = time.perf_counter()
    images = [
        Chunk(
            id=chunk_id(f"ic:{ds.root.name}", str(p), "image"),
            modality="image",
            source=str(p),
            text=None,
            image=str(p),
            metadata={"image_idx": i},
        )
        for i, p in enumerate(ds.images)
    ]
    captions: list[Chunk] = []
    owners: list[int] = []
    for i, caps in enumerate(ds.captions):
        for j, cap in enumerate(caps):
            captions.append(
                Chunk(
                    id=chunk_id(f"ic:{ds.root.name}", cap, f"{i}:{j}"),
                    modality="text",
                    source=f"{ds.images[i]}#caption{j}",
                    text=cap,
                    image=None,
                    metadata={"image_idx": i},
                )
            )
            owners.append(i)
    with _store(store) as st:
        recorded = _Recording(encoder)
        _index(st, recorded, images, progress, "index images")
        _index(st, recorded, captions, progress, "index captions")
        t1 = time.perf_counter()
        retriever = Retriever(encoder, st, pool=10, hnsw_ef=hnsw_ef)
        # Queries reuse the vectors computed for indexing: same encoder, same inputs.
        t2i = retriever.search_vectors(
            np.concatenate(recorded.texts), k=10, modality="image", filters=None, pool=10
        )
        i2t = retriever.search_vectors(
            np.concatenate(recorded.images), k=10, modality="text", filters=None, pool=10
        )
        t2i_ranks = [
            first_rank([str(h.chunk.metadata["image_idx"]) for h in hits], {str(owner)})
            for hits, owner in zip(t2i, owners, strict=True)
        ]
        # image→text ranks caption chunks; an image scores at k when any of its captions is in the
        # top k (Flickr protocol), so the ranks are of caption ids: mapping hits to image ids first
        # would collapse repeated images and let the top k reach past k captions.
        own: list[set[str]] = [set() for _ in images]
        for caption, owner in zip(captions, owners, strict=True):
            own[owner].add(caption.id)
        i2t_ranks = [first_rank([h.chunk.id for h in hits], own[i]) for i, hits in enumerate(i2t)]
        return ImageCaptionEvalReport(
            dataset=str(ds.root),
            encoder=encoder.id,
            aligned=encoder.aligned,
            images=len(images),
            captions=len(captions),
            metrics=(metrics := flickr_recall(t2i_ranks, i2t_ranks)),
            seconds={"index": round(t1 - t0, 2), "search": round(time.perf_counter() - t1, 2)},
            stages={"dense": metrics} if stages else None,
        )


def load_for_eval(
    root: Path, *, split: str | None, limit: int | None, query_ids: set[str] | None = None
) -> BeirDataset | ImageCaptionDataset:
    from mmrag.eval.datasets import detect_layout

    if detect_layout(root) == "beir":
        return BeirDataset.load(root, split or "train", query_ids=query_ids)
    return ImageCaptionDataset.load(root, split, limit=limit)
