"""Second-stage reranking: a cross-encoder over the first-stage pool, fused with the first-stage scores."""

from mmrag.rerank.base import Reranker
from mmrag.rerank.cross_encoder import CrossEncoderReranker
from mmrag.rerank.fusion import ScoreFusion, learn_weight

__all__ = ["CrossEncoderReranker", "Reranker", "ScoreFusion", "learn_weight"]
