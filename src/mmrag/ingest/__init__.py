"""Ingest: loaders (one per format), chunking, and the reader → mapper → writer runner."""

from mmrag.ingest.chunking import ChunkingOptions, split_text
from mmrag.ingest.ledger import Ledger, VerifyReport, verify
from mmrag.ingest.loaders import (
    IMAGE_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    TEXT_EXTENSIONS,
    LoadOptions,
    iter_files,
    load_document,
    load_file,
)
from mmrag.ingest.pipeline import IngestOptions, IngestRunner, read_captions

__all__ = [
    "IMAGE_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "TEXT_EXTENSIONS",
    "ChunkingOptions",
    "IngestOptions",
    "IngestRunner",
    "Ledger",
    "LoadOptions",
    "VerifyReport",
    "iter_files",
    "load_document",
    "load_file",
    "read_captions",
    "split_text",
    "verify",
]
