"""mmrag: a multimodal RAG retriever.

Text and images are embedded into one space by a dual encoder, stored in Qdrant (embedded
Qdrant Edge by default) and retrieved with ANN search.

Example:
    >>> from mmrag import Chunk, Hit  # records are cheap to import; models load lazily
"""

from mmrag.errors import MmragError
from mmrag.types import Chunk, Hit, IngestSummary, SkippedFile

__all__ = ["Chunk", "Hit", "IngestSummary", "MmragError", "SkippedFile"]
__version__ = "0.1.0"
