"""Second-stage reranking (cross-encoder over the ANN pool, score fusion).

Not implemented yet: tracked by the issue "Cross-encoder reranking and hybrid search". Until then
the retriever returns the ANN order and leaves ``Hit.rerank`` / ``Hit.fused`` as ``None``.
"""
