"""Evaluation: metrics (Recall@k, nDCG@k, MRR), dataset readers, and end-to-end runners."""

from mmrag.eval.datasets import BeirDataset, ImageCaptionDataset, detect_layout
from mmrag.eval.metrics import evaluate, flickr_recall, mrr, ndcg_at_k, recall_at_k, success_at_k

__all__ = [
    "BeirDataset",
    "ImageCaptionDataset",
    "detect_layout",
    "evaluate",
    "flickr_recall",
    "mrr",
    "ndcg_at_k",
    "recall_at_k",
    "success_at_k",
]
