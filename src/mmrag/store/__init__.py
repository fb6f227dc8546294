"""The store: one front, :class:`QdrantStore`, over interchangeable Qdrant backends.

``QdrantStore.open("./.mmrag")`` uses embedded Qdrant Edge (the default, no server);
``QdrantStore.open("http://localhost:6333", api_key=...)`` uses a Qdrant server or cluster.
This package is the only place that imports qdrant libraries; it knows vector specs
(:class:`~mmrag.types.VectorSpec`), never encoders. The contract every backend implements is
:class:`mmrag.store.base.Backend`; the front is in :mod:`mmrag.store.front`.
"""

from mmrag.store.base import Filters, SearchOptions, SparseVec
from mmrag.store.front import QdrantStore
from mmrag.store.payload import chunk_payload, payload_chunk
from mmrag.store.sparse import Bm25Encoder, Bm25Settings

__all__ = [
    "Bm25Encoder",
    "Bm25Settings",
    "Filters",
    "QdrantStore",
    "SearchOptions",
    "SparseVec",
    "chunk_payload",
    "payload_chunk",
]
