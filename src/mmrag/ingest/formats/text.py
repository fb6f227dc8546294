"""Plain text (``.txt``): decoded (UTF-8, else a detected encoding), then cut into word chunks."""

from __future__ import annotations

from mmrag.ingest.formats.common import Captions, Loaded, LoadOptions, RawFile, decode_text, text_chunks

EXTENSIONS = frozenset({".txt"})


def load_text(file: RawFile, opts: LoadOptions, captions: Captions | None = None) -> Loaded:
    """Chunks of a plain-text file.

    Raises:
        LoaderError: Binary content, undecodable bytes, or no text at all.
    """
    text = decode_text(file.data)
    chunks = text_chunks(file.source, [(text, {})], fmt="text", file_hash=file.digest, opts=opts.chunking)
    return Loaded(chunks)
