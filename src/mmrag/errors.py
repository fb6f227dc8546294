"""One error hierarchy. Every message says what went wrong and how to fix it."""

from __future__ import annotations


class MmragError(Exception):
    """Base class of every error mmrag raises on purpose."""


class ConfigError(MmragError):
    """A setting or argument is invalid."""


class TenancyError(ConfigError):
    """A request on a multi-tenant store does not name exactly one tenant."""


class MissingExtraError(MmragError, ImportError):
    """An optional dependency is not installed."""


class EncoderError(MmragError):
    """An encoder spec cannot be resolved or a model cannot be loaded."""


class StoreError(MmragError):
    """The vector store cannot be opened, read or written."""


class DimensionMismatchError(StoreError):
    """A vector's dimension does not match what the store holds for that encoder."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store's lock."""


class LoaderError(MmragError):
    """A file cannot be read; ingest turns this into a logged skip with the reason."""


class DatasetError(MmragError):
    """An evaluation dataset folder does not have the expected layout."""


class OverloadedError(MmragError):
    """Too many searches are already queued; retry after ``retry_after`` seconds (the API's 503)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SearchAbandonedError(MmragError):
    """A queued search was dropped because its client stopped waiting (it had timed out)."""
