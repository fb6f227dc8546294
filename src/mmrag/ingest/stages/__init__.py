"""The ingest stages, composed by the runners (clip-retrieval style: reader → parser → embedder → writer).

* :class:`Reader`: walk, check, read and hash each file once, and the ledger's unchanged test;
* :class:`Parser`: bytes → chunks and decoded images (:func:`mmrag.ingest.loaders.load_document`);
* :class:`Embedder`: vectors for chunks with the dual encoder;
* :class:`Writer`: ledger intent → store upsert → stale delete → ledger commit.

They share one frozen :class:`RunContext` and pass each file on as a :class:`FileResult`. The
default engine runs reader and parser on threads and embeds at write time; the Ray engine runs
parser and embedder on Ray workers. Both feed the same writer on the driver.
"""

from mmrag.ingest.stages.context import FileResult, RunContext, ledger_source, split_ledger_source
from mmrag.ingest.stages.embedder import Embedder, EncodeOnWrite, Precomputed, VectorSource
from mmrag.ingest.stages.parser import Parser
from mmrag.ingest.stages.reader import Reader, params_fingerprint, read_ahead
from mmrag.ingest.stages.writer import Writer

__all__ = [
    "Embedder",
    "EncodeOnWrite",
    "FileResult",
    "Parser",
    "Precomputed",
    "Reader",
    "RunContext",
    "VectorSource",
    "Writer",
    "ledger_source",
    "params_fingerprint",
    "read_ahead",
    "split_ledger_source",
]
