"""Text triplets for the joint run: domain text tuning (SciFact query → abstract, with BM25 hard negatives)
trained in the same run as the image-caption triplets, so tuning the text head cannot silently break
image-text alignment (both are measured every epoch).

Features come from the frozen text tower through the :class:`~mmrag.train.features.FeatureCache`; the
held-out check is nDCG@10 on the SciFact ``val`` fold over the whole corpus, by exact search on the
head embeddings (the same numbers ``mmrag eval`` gives through a store, without re-indexing per epoch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import DatasetError
from mmrag.eval.datasets import BeirDataset, scifact_val_query_ids
from mmrag.eval.metrics import ndcg_at_k
from mmrag.train.features import FeatureCache, TowerKeys

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class TextTriplets:
    """(query, relevant doc, hard-negative doc) rows as indexes into cached feature matrices.

    ``relevant[q]`` holds every doc judged relevant to query ``q``, so in-batch mining never treats a
    relevant doc as a negative.
    """

    queries: F32
    docs: F32
    anchor: I64
    positive: I64
    negative: I64
    relevant: tuple[frozenset[int], ...]
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not len(self.anchor) == len(self.positive) == len(self.negative):
            raise DatasetError("text triplets need as many positives and negatives as anchors")
        if len(self.anchor) == 0:
            raise DatasetError("no text triplets left for training")

    def positives_mask(self, rows: I64) -> Tensor:
        """``(b, b)``: True where row j's positive doc is relevant to row i's query."""
        pos = self.positive[rows]
        return torch.tensor([[int(p) in self.relevant[int(self.anchor[i])] for p in pos] for i in rows])


@dataclass(frozen=True, slots=True)
class TextDev:
    """A held-out BEIR slice: query and corpus features plus judgments, for nDCG@10 per epoch."""

    queries: F32
    docs: F32
    query_ids: list[str]
    doc_ids: list[str]
    qrels: dict[str, dict[str, int]]
    unseen: frozenset[str] = frozenset()  # queries none of whose relevant docs is a training positive

    def ndcg(self, head: nn.Module, k: int = 10, *, only: frozenset[str] | None = None) -> float:
        """nDCG@k over the whole corpus; ``only``: restricted to these query ids."""
        device = next(head.parameters()).device
        with torch.inference_mode():
            q = nn.functional.normalize(head(torch.from_numpy(self.queries).to(device)), dim=-1)
            d = nn.functional.normalize(head(torch.from_numpy(self.docs).to(device)), dim=-1)
            top = torch.topk(q @ d.T, k, dim=1).indices.cpu().numpy()
        keep = set(self.query_ids) if only is None else set(only)
        run = {qid: [self.doc_ids[j] for j in top[n]] for n, qid in enumerate(self.query_ids) if qid in keep}
        return ndcg_at_k({q: r for q, r in self.qrels.items() if q in keep}, run, k)


def scifact_text_data(
    encoder: OpenClipEncoder,
    cache: FeatureCache,
    towers: TowerKeys,
    beir_root: Path,
    triplets_file: Path,
    *,
    weight: float = 1.0,
    hard_negatives: int = 5,
) -> tuple[TextTriplets, TextDev]:
    """Train-fold triplets (each positive with up to ``hard_negatives`` BM25 negatives) and the val fold.

    Queries of the val fold never appear in the training triplets.
    """
    ds = BeirDataset.load(beir_root, "train")
    val_ids = scifact_val_query_ids(triplets_file)
    if not val_ids:
        raise DatasetError(f"{triplets_file} has no 'val' fold to hold out")
    doc_ids = sorted(ds.corpus)
    doc_row = {d: i for i, d in enumerate(doc_ids)}
    query_ids = sorted(ds.queries)
    query_row = {q: i for i, q in enumerate(query_ids)}
    anchor: list[int] = []
    positive: list[int] = []
    negative: list[int] = []
    with open(triplets_file, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            qid = str(row["query_id"])
            if row.get("fold") != "train" or qid in val_ids or qid not in query_row:
                continue
            negs = [str(n) for n in row.get("bm25_hard_negative_ids") or [row["negative_id"]]]
            for neg in negs[:hard_negatives]:
                if neg in ds.qrels.get(qid, {}) or neg not in doc_row:
                    continue
                anchor.append(query_row[qid])
                positive.append(doc_row[str(row["positive_id"])])
                negative.append(doc_row[neg])
    queries = cache.texts(encoder, [ds.queries[q] for q in query_ids], towers=towers)
    docs = cache.texts(encoder, [ds.doc_text(d) for d in doc_ids], towers=towers)
    relevant = tuple(frozenset(doc_row[d] for d in ds.qrels.get(q, {}) if d in doc_row) for q in query_ids)
    triplets = TextTriplets(
        queries, docs, np.array(anchor), np.array(positive), np.array(negative), relevant, weight
    )
    dev_q = [q for q in query_ids if q in val_ids]
    # SciFact claims often cite the same abstracts: a val query whose relevant doc is also a training
    # positive can be helped by the head learning that doc, not the query. Report both slices.
    train_docs = {doc_ids[i] for i in positive}
    unseen = frozenset(q for q in dev_q if not set(ds.qrels[q]) & train_docs)
    dev = TextDev(
        queries[[query_row[q] for q in dev_q]],
        docs,
        dev_q,
        doc_ids,
        {q: dict(ds.qrels[q]) for q in dev_q},
        unseen,
    )
    return triplets, dev
