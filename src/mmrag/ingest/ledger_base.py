"""What every ingest ledger does, wherever it keeps its rows: the protocol and the shared recovery.

Two ledgers implement :class:`IngestLedger`: the SQLite file of :mod:`mmrag.ingest.ledger` (the
default for an embedded Qdrant Edge store, beside the shard and under its lock) and the companion
collection of :mod:`mmrag.ingest.store_ledger` (the default for a server, cluster or ``:memory:``
store: the ledger lives with the data, so every machine writing into the collection shares it).
Both follow the same write order (intent → points → commit) and recover the same way
(:func:`recover_pending`), so the ingest runner, ``mmrag verify`` and the closed loop take either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from mmrag.store import QdrantStore

__all__ = ["IngestLedger", "LedgerEntry", "has_all", "recover_pending"]

log = logging.getLogger(__name__)
_LOOKUP_BATCH = 512


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the ledger knows about one source file (chunk ids are loaded on demand)."""

    source: str
    hash: str
    params: str
    vectors: frozenset[str]


@runtime_checkable
class IngestLedger(Protocol):
    """Per source file: its content hash, load parameters, vectors and the chunk ids it stored.

    Example:
        >>> with open_ledger(store) as ledger:        # doctest: +SKIP
        ...     ledger.begin([("a.txt", "v", ["id-1"])])
        ...     ledger.commit([("a.txt", "hash", "params", "v", ["id-1"])])
    """

    @property
    def location(self) -> str:
        """Where the rows live (a file, ``:memory:``, or ``<url>#<collection>``), for messages."""
        ...

    def entries(self) -> dict[str, LedgerEntry]: ...

    def entry(self, source: str) -> LedgerEntry | None: ...

    def chunk_ids(self, source: str) -> list[str]: ...

    def chunk_sources(self) -> dict[str, str]:
        """Every committed chunk id with its source (for ``mmrag verify``)."""
        ...

    def all_chunk_ids(self) -> set[str]: ...

    def count_chunks(self, source: str) -> int: ...

    def pending(self) -> list[tuple[str, str, list[str]]]:
        """``(source, vector, new ids)`` of every write begun and not committed."""
        ...

    def begin(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> None: ...

    def commit(self, items: Sequence[tuple[str, str, str, str, Sequence[str]]]) -> None: ...

    def add_vector(self, sources: Iterable[str], vector: str) -> None: ...

    def forget(self, sources: Sequence[str]) -> None: ...

    def drop_pending(self, source: str) -> None:
        """Remove a source's intent row once recovery has undone it."""
        ...

    def recover(self, store: QdrantStore) -> dict[str, int]: ...

    def close(self) -> None: ...

    def __enter__(self) -> IngestLedger: ...

    def __exit__(self, *exc: object) -> None: ...


def has_all(store: QdrantStore, ids: Sequence[str], vectors: Iterable[str]) -> bool:
    """Whether every id is stored and carries every one of ``vectors``."""
    wanted = set(vectors)
    for start in range(0, len(ids), _LOOKUP_BATCH):
        batch = ids[start : start + _LOOKUP_BATCH]
        found = store.vectors_of(batch)
        if len(found) != len(batch) or any(not wanted <= v for v in found.values()):
            return False
    return True


def recover_pending(
    ledger: IngestLedger, store: QdrantStore, rows: Sequence[tuple[str, str, list[str]]]
) -> dict[str, int]:
    """Undo interrupted writes (``rows`` from :meth:`IngestLedger.pending`, the abandoned ones).

    For each: delete the new ids that were never committed; if the committed version of the
    source lost a point or vector on the way (the crash hit the stale deletes), purge the source
    so that the next run re-ingests it. Either way ledger == store again, nothing duplicated.

    Returns:
        ``{"pending": n, "undone_points": n, "purged_sources": n}``.
    """
    out = {"pending": 0, "undone_points": 0, "purged_sources": 0}
    for source, vector, new_ids in rows:
        out["pending"] += 1
        committed = ledger.chunk_ids(source)
        entry = ledger.entry(source)
        keep = set(committed)
        orphans = [i for i in new_ids if i not in keep]
        if orphans:
            store.delete(orphans)
            out["undone_points"] += len(orphans)
        intact = entry is not None and has_all(store, committed, entry.vectors)
        if entry is not None and vector not in entry.vectors and intact:
            # A crash while adding a second encoder's vector to an unchanged file leaves that
            # vector on some points; remove it so the store holds exactly what is recorded.
            store.delete_vector(committed, vector)
        if entry is not None and not intact:
            log.warning("ingest of %s was interrupted mid-way; purging it for a clean re-ingest", source)
            store.delete(committed)
            out["purged_sources"] += 1
            ledger.forget([source])
        else:
            ledger.drop_pending(source)
    return out
