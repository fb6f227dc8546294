"""The ``EdgeConfig`` a Qdrant Edge shard is created or opened with, from what ``store.json`` records.

Search threads: the Python binding keeps the GIL for a whole search, so Edge's search pool only adds a
hand-off that every other Python thread waits through. One thread (the default) searches on the calling
thread: on a 2-core machine that was as fast or faster at 1,000 and 100,000 points (and in a scratch run
at 1,000,000), idle and with every core busy, and Edge's share of the API's GIL-held samples fell from
27% to 7% (docs/speed.md, "Qdrant Edge search threads"). More threads can pay for a lone query over
several large segments on an idle many-core machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmrag._lazy import require
from mmrag.store.base import SPARSE_VECTOR

DEFAULT_SEARCH_THREADS = 1


def qdrant_edge() -> Any:
    """The ``qdrant_edge`` module (the ``core`` extra), imported on first use."""
    return require("qdrant_edge", "core")


def vector_params(dims: Mapping[str, int], quantization: str | None) -> dict[str, Any]:
    """Cosine dense vectors; quantized: float originals on disk (read for rescoring), int8 copy in RAM."""
    qe = qdrant_edge()
    memory = qe.Memory.Cold if quantization else None
    cosine = qe.Distance.Cosine
    return {n: qe.EdgeVectorParams(size=d, distance=cosine, memory=memory) for n, d in dims.items()}


def shard_config(
    dims: Mapping[str, int],
    *,
    quantization: str | None,
    indexing_threshold_kb: int | None,
    search_threads: int,
) -> Any:
    """The config of a new shard: ``dims``' dense vectors, the BM25 sparse vector, int8 if asked."""
    qe = qdrant_edge()
    # int8 with the 0.99 quantile (clips outliers; Qdrant's recommendation), kept in RAM.
    int8 = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    optimizers = (
        qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
        if indexing_threshold_kb is not None
        else None
    )
    return qe.EdgeConfig(
        quantization_config=int8 if quantization == "int8" else None,
        vectors=vector_params(dims, quantization),
        # BM25 term weights come from the client (mmrag.store.sparse); Qdrant multiplies in the IDF.
        sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        optimizers=optimizers,
        max_search_threads=search_threads,
    )


def load_config(meta: Mapping[str, Any], *, search_threads: int) -> Any:
    """The config an existing shard is loaded with: its vectors as ``meta`` (store.json) records them and
    this process's search threads. Edge refuses vectors that do not match the shard (size, distance,
    names) and writes the rest of the config as given, search threads included. The sparse vectors
    suffice where store.json lists them (every shard since BM25; the dense ones are then inherited as
    they are); older store.json files name the dense vectors, with the memory placement their
    quantization implies."""
    qe = qdrant_edge()
    if sparse := meta.get("sparse"):
        params = {n: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf) for n in sparse}
        return qe.EdgeConfig(sparse_vectors=params, max_search_threads=search_threads)
    dims = {name: int(v["dim"]) for name, v in meta.get("vectors", {}).items()}
    dense = vector_params(dims, meta.get("quantization"))
    return qe.EdgeConfig(vectors=dense, max_search_threads=search_threads)
