"""The ingest ledger: per source file, its content hash and the chunk ids it put in the store.

This ledger is a SQLite file: the default for a Qdrant Edge store, where it lives beside the shard
(``<store>/ledger.sqlite``), covered by the store's exclusive lock. A server, cluster or ``:memory:``
store keeps its ledger with the data by default (:mod:`mmrag.ingest.store_ledger`); ``--ledger PATH``
still picks a SQLite file there (:func:`default_ledger_path` is the old per-machine default).

Invariant (what ``mmrag verify`` checks): the set of point ids in the store equals the union of
the ledger's chunk ids, and every point of a source carries each vector recorded for it.

Crash safety comes from write ordering (write-ahead intent, like a database redo/undo log):

1. :meth:`Ledger.begin` commits a *pending* row for the source: the new chunk ids and the vector
   about to be written, before any store write;
2. the runner upserts the new chunks, then deletes the stale ones (old ids not among the new);
3. :meth:`Ledger.commit` replaces the source's rows and removes the pending row in one
   transaction.

A SIGKILL anywhere leaves at most some pending rows. :meth:`Ledger.recover` (run when an ingest
starts, and by ``mmrag verify --repair``) undoes each: it deletes the new ids that were never
committed and, if the committed version of the source lost any point or vector on the way (the
crash hit step 2's deletes), purges that source entirely so that the next run re-ingests it.
Either way ledger == store again, with nothing duplicated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmrag.errors import StoreError
from mmrag.ingest.ledger_base import LedgerEntry, recover_pending

# verify moved to its own module; re-exported here, where callers and tests import it from.
from mmrag.ingest.verify import VerifyReport, verify

if TYPE_CHECKING:
    from mmrag.store import QdrantStore

__all__ = ["Ledger", "LedgerEntry", "VerifyReport", "default_ledger_path", "verify"]

log = logging.getLogger(__name__)
LEDGER_FILE = "ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY, hash TEXT NOT NULL, params TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id TEXT PRIMARY KEY, source TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE TABLE IF NOT EXISTS source_vectors (
    source TEXT NOT NULL, vector TEXT NOT NULL, PRIMARY KEY (source, vector));
CREATE TABLE IF NOT EXISTS pending (
    source TEXT PRIMARY KEY, vector TEXT NOT NULL, new_ids TEXT NOT NULL, started REAL NOT NULL);
"""


def default_ledger_path(store: QdrantStore, collection: str = "mmrag") -> str:
    """Where the SQLite ledger of ``store`` lives unless one is given.

    Edge stores: ``<store dir>/ledger.sqlite`` (their default ledger). ``:memory:`` stores: an
    in-memory file. Server stores: ``~/.cache/mmrag/ledgers/<digest of URL + collection>.sqlite``,
    the per-machine ledger used before the store-side one (:func:`~mmrag.ingest.store_ledger.open_ledger`
    picks that by default now; ``mmrag ledger migrate`` moves this file's rows into the store).
    """
    location = store.location
    if location.startswith(":memory:"):  # ":memory:" or ":memory:#<collection>"
        return ":memory:"
    if location.startswith(("http://", "https://")):
        digest = hashlib.sha256(f"{location}\x00{collection}".encode()).hexdigest()[:16]
        return str(Path.home() / ".cache" / "mmrag" / "ledgers" / f"{digest}.sqlite")
    return str(Path(location) / LEDGER_FILE)


def _chunks_of(rows: Iterable[tuple[str, ...]]) -> list[str]:
    return [r[0] for r in rows]


class Ledger:
    """SQLite record of what each source file put in the store.

    Args:
        path: SQLite file (created with its folder), or ``":memory:"``.

    Example:
        >>> led = Ledger(":memory:")
        >>> led.begin([("a.txt", "v", ["id-1"])])
        >>> led.commit([("a.txt", "h", "p", "v", ["id-1"])])
        >>> led.entry("a.txt").vectors
        frozenset({'v'})
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: explicit BEGIN/COMMIT below, so each step is one transaction.
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # WAL + synchronous=NORMAL survive a killed process (not a power cut mid-commit, where
            # the last transaction may roll back: still consistent, since recovery undoes it).
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):
                raise StoreError(
                    f"ingest ledger {self.path} is busy ({exc}): another process holds its write "
                    "lock; wait for it to finish and run the command again"
                ) from exc
            # Chunk ids are deterministic: a re-ingest with a fresh ledger rebuilds it and finds
            # every unchanged point already stored (nothing re-written, nothing duplicated).
            raise StoreError(
                f"ingest ledger {self.path} is unreadable ({exc}); move it away and re-run the "
                "ingest of the same folders: it rebuilds the ledger without re-writing stored points"
            ) from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        return self.path

    # -- reads ------------------------------------------------------------------------------
    def entries(self) -> dict[str, LedgerEntry]:
        """Every source with its hash, params and vectors (small: no chunk ids)."""
        vecs: dict[str, set[str]] = {}
        for source, vector in self.db.execute("SELECT source, vector FROM source_vectors"):
            vecs.setdefault(source, set()).add(vector)
        return {
            s: LedgerEntry(s, h, p, frozenset(vecs.get(s, ())))
            for s, h, p in self.db.execute("SELECT source, hash, params FROM sources")
        }

    def entry(self, source: str) -> LedgerEntry | None:
        row = self.db.execute("SELECT hash, params FROM sources WHERE source=?", (source,)).fetchone()
        if row is None:
            return None
        vecs = self.db.execute("SELECT vector FROM source_vectors WHERE source=?", (source,))
        return LedgerEntry(source, row[0], row[1], frozenset(_chunks_of(vecs)))

    def chunk_ids(self, source: str) -> list[str]:
        return _chunks_of(self.db.execute("SELECT id FROM chunks WHERE source=? ORDER BY id", (source,)))

    def chunk_sources(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT id, source FROM chunks"))

    def all_chunk_ids(self) -> set[str]:
        return set(_chunks_of(self.db.execute("SELECT id FROM chunks")))

    def count_chunks(self, source: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM chunks WHERE source=?", (source,)).fetchone()[0])

    def pending(self) -> list[tuple[str, str, list[str]]]:
        rows = self.db.execute("SELECT source, vector, new_ids FROM pending ORDER BY source")
        return [(s, v, list(json.loads(ids))) for s, v, ids in rows]

    # -- the write protocol -----------------------------------------------------------------
    def begin(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        """Record intent: ``(source, vector, new chunk ids)`` before any store write for them."""
        if not items:
            return
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT OR REPLACE INTO pending(source, vector, new_ids, started) VALUES (?,?,?,?)",
                [(s, v, json.dumps(list(ids)), now) for s, v, ids in items],
            )

    def commit(self, items: Sequence[tuple[str, str, str, str, Sequence[str]]]) -> None:
        """After the store holds them: ``(source, hash, params, vector, chunk ids)`` become the
        source's committed version and its pending row goes, in one transaction.

        A new ``(hash, params)`` replaces the source's chunks and drops vectors recorded for the
        old version (their points were deleted); the same one adds ``vector`` to it.
        """
        if not items:
            return
        now = time.time()
        with self._tx():
            for source, digest, params, vector, ids in items:
                row = self.db.execute("SELECT hash, params FROM sources WHERE source=?", (source,)).fetchone()
                if row is None or (row[0], row[1]) != (digest, params):
                    self._forget(source)
                    self.db.execute(
                        "INSERT INTO sources(source, hash, params, updated) VALUES (?,?,?,?)",
                        (source, digest, params, now),
                    )
                    self.db.executemany(
                        "INSERT INTO chunks(id, source) VALUES (?,?)", [(i, source) for i in ids]
                    )
                self.db.execute(
                    "INSERT OR IGNORE INTO source_vectors(source, vector) VALUES (?,?)", (source, vector)
                )
                self.db.execute("DELETE FROM pending WHERE source=?", (source,))

    def add_vector(self, sources: Iterable[str], vector: str) -> None:
        """Record that every point of these (committed) sources now also carries ``vector``: used after
        re-embedding a store in place (``mmrag train --from-store``)."""
        with self._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO source_vectors(source, vector) "
                "SELECT source, ? FROM sources WHERE source=?",
                [(vector, s) for s in sources],
            )

    def forget(self, sources: Sequence[str]) -> None:
        """Drop sources (after their points were deleted): ``--prune`` and repairs."""
        with self._tx():
            for s in sources:
                self._forget(s)
                self.db.execute("DELETE FROM pending WHERE source=?", (s,))

    def _forget(self, source: str) -> None:
        for table in ("sources", "chunks", "source_vectors"):
            self.db.execute(f"DELETE FROM {table} WHERE source=?", (source,))

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, store: QdrantStore) -> dict[str, int]:
        """Undo what interrupted runs left half done (see :func:`~mmrag.ingest.ledger_base.recover_pending`).

        Returns:
            ``{"pending": n, "undone_points": n, "purged_sources": n}``.
        """
        return recover_pending(self, store, self.pending())

    def drop_pending(self, source: str) -> None:
        with self._tx():
            self.db.execute("DELETE FROM pending WHERE source=?", (source,))


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            # Raised before this step wrote anything: the store is untouched by it, and what
            # earlier steps left pending is undone by the next run's recovery.
            raise StoreError(
                f"ingest ledger is busy ({exc}): another process holds its write lock; "
                "wait for it to finish and run the command again"
            ) from exc

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, *rest: object) -> None:
        try:
            self.db.execute("ROLLBACK" if et is not None else "COMMIT")
            failed = ev if isinstance(ev, sqlite3.OperationalError) else None
        except sqlite3.OperationalError as exc:  # COMMIT on a full disk, an I/O error
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            failed = exc
        if failed is not None:
            raise StoreError(
                f"ingest ledger write failed ({failed}); this step was not recorded: free space or fix "
                "the ledger's disk and run the command again (interrupted writes are undone then)"
            ) from failed
