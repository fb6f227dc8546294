"""Switching a shared encoder's runtime or text precision for one block of a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def running(encoder: Any, text_precision: str | None = None, runtime: str = "auto") -> Iterator[None]:
    """Run ``encoder``'s towers on ``runtime`` (``auto``, ``onnx``, ``torch``) with its texts in
    ``text_precision`` (``fp32``, ``bf16``; ``None``: the process default) inside the block, then put
    the defaults back, whether the block passed or failed: the session-scoped encoders are shared,
    and a test that leaves one in fp32 (or bf16) would change what every later test measures.

    On bf16 hardware the default runs every text, a lone query too, on a bf16 copy, so a test that
    compares against exact fp32 vectors asks for ``fp32`` here."""
    encoder.set_runtime(runtime, text_precision)
    try:
        yield
    finally:
        encoder.set_runtime("auto")
