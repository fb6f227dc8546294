"""OpenTelemetry spans around the retrieval stages, a no-op without OpenTelemetry.

The retriever wraps each stage (``encode``, ``ann``, ``bm25``, ``fuse``, ``rerank``, ``mmr``,
``group``, ``expand``) in :func:`span`, under one ``mmrag.search`` span per search call; each span
carries the stage's counts as attributes
(``mmrag.k``, ``mmrag.pool``, ``mmrag.hits``...) and its time in ``mmrag.ms``, besides the
start and end OpenTelemetry records.
The spans go to whatever tracer provider the application installed
(``opentelemetry.trace.set_tracer_provider``); until one is installed, or without OpenTelemetry,
:func:`span` does nothing at all (~3 us a span instead of ~10 us through OpenTelemetry's no-op
tracer). Install the ``tracing`` extra (``pip install 'mmrag[tracing]'``) for the SDK and its exporters.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

__all__ = ["TRACER_NAME", "Span", "span"]

TRACER_NAME = "mmrag"
ATTR_PREFIX = "mmrag."


class Span:
    """What :func:`span` yields: set more attributes once a stage knows its counts.

    Example:
        >>> with span("rerank", pool=50) as s:
        ...     s.set(hits=10)
    """

    __slots__ = ("_otel",)

    def __init__(self, otel: Any = None) -> None:
        self._otel = otel

    def set(self, **attrs: Any) -> None:
        """Add attributes (``None`` values are left out: OpenTelemetry has no null)."""
        if self._otel is not None:
            for key, value in attrs.items():
                if value is not None:
                    self._otel.set_attribute(ATTR_PREFIX + key, _attr(value))


@lru_cache(maxsize=1)
def _trace_api() -> Any:
    """``opentelemetry.trace``, or ``None`` when OpenTelemetry is not installed (tracing is optional)."""
    try:
        return importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None


@lru_cache(maxsize=1)
def _noop_providers() -> tuple[type, ...]:
    """The providers a fresh process has (before ``set_tracer_provider``); their spans record nothing."""
    trace = _trace_api()
    return () if trace is None else (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _attr(value: Any) -> Any:
    # OpenTelemetry attributes are str / bool / int / float (or sequences of one of them).
    return value if isinstance(value, str | bool | int | float) else str(value)


@contextmanager
def span(name: str, **attrs: Any) -> Iterator[Span]:
    """A span named ``mmrag.<name>`` with ``attrs`` (keys prefixed ``mmrag.``); a no-op without
    OpenTelemetry. The tracer is looked up per call, so a provider installed later is used.

    Example:
        >>> with span("encode", queries=1) as s:
        ...     s.set(dim=512)
    """
    trace = _trace_api()
    if trace is None or isinstance(trace.get_tracer_provider(), _noop_providers()):
        yield Span()  # no provider installed yet: OpenTelemetry would record nothing (10 us a span)
        return
    with trace.get_tracer(TRACER_NAME).start_as_current_span(f"mmrag.{name}") as otel:
        s = Span(otel)
        s.set(**attrs)
        t0 = time.perf_counter()
        try:
            yield s
        finally:
            # The stage's own time as an attribute too: backends that show attributes but not
            # durations (logs, simple exporters) still get the timing the report prints.
            s.set(ms=round((time.perf_counter() - t0) * 1000, 3))
