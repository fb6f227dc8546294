"""The ingest ledger: per source file, its content hash and the chunk ids it put in the store.

The ledger is a SQLite file. For a Qdrant Edge store it lives beside the shard
(``<store>/ledger.sqlite``), covered by the store's exclusive lock; for a server store its path
is a setting (``--ledger`` / :func:`default_ledger_path`), one per collection.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.errors import StoreError

if TYPE_CHECKING:
    from mmrag.store import QdrantStore

__all__ = ["Ledger", "LedgerEntry", "VerifyReport", "default_ledger_path", "verify"]

log = logging.getLogger(__name__)
LEDGER_FILE = "ledger.sqlite"
_LOOKUP_BATCH = 512

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


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the ledger knows about one source file (chunk ids are loaded on demand)."""

    source: str
    hash: str
    params: str
    vectors: frozenset[str]


@dataclass(slots=True)
class VerifyReport:
    """Result of comparing ledger and store (``mmrag verify --json``)."""

    ok: bool = True
    ledger_sources: int = 0
    ledger_chunks: int = 0
    store_points: int = 0
    pending: int = 0
    missing_in_store: list[str] = field(default_factory=list)
    missing_in_ledger: list[str] = field(default_factory=list)
    missing_vectors: dict[str, int] = field(default_factory=dict)
    untracked_vectors: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)

    def to_dict(self, sample: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ledger_sources": self.ledger_sources,
            "ledger_chunks": self.ledger_chunks,
            "store_points": self.store_points,
            "pending": self.pending,
            "missing_in_store": len(self.missing_in_store),
            "missing_in_ledger": len(self.missing_in_ledger),
            "missing_vectors": dict(self.missing_vectors),
            "untracked_vectors": dict(self.untracked_vectors),
            "examples": {
                "missing_in_store": self.missing_in_store[:sample],
                "missing_in_ledger": self.missing_in_ledger[:sample],
            },
            "repaired": dict(self.repaired),
        }

    def to_text(self) -> str:
        """The human-readable report ``mmrag verify`` prints (counts, then the verdict)."""
        lines = [
            f"ledger: {self.ledger_sources} files, {self.ledger_chunks} chunks; "
            f"store: {self.store_points} points",
            f"pending (interrupted) writes: {self.pending}",
            f"missing in store: {len(self.missing_in_store)}; "
            f"missing in ledger: {len(self.missing_in_ledger)}",
            f"missing vectors: {dict(self.missing_vectors)}; "
            f"untracked vectors: {dict(self.untracked_vectors)}",
            "OK: ledger == store" if self.ok else "MISMATCH (run `mmrag verify --repair`)",
        ]
        if self.repaired:
            lines.append(f"repaired: {dict(self.repaired)}")
        return "\n".join(lines)


def default_ledger_path(store: QdrantStore, collection: str = "mmrag") -> str:
    """Where the ledger of ``store`` lives unless one is given.

    Edge stores: ``<store dir>/ledger.sqlite``. ``:memory:`` stores: an in-memory ledger.
    Server stores: ``~/.cache/mmrag/ledgers/<digest of URL + collection>.sqlite``; machines
    ingesting into one shared collection must pass the same ``--ledger`` path (or ingest from one
    machine), since each ledger only knows what went through it.
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
            raise StoreError(
                f"ingest ledger {self.path} is unreadable ({exc}); move it away and run "
                "`mmrag verify --repair` to rebuild consistency"
            ) from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Undo what interrupted runs left half done (see the module docstring).

        Returns:
            ``{"pending": n, "undone_points": n, "purged_sources": n}``.
        """
        out = {"pending": 0, "undone_points": 0, "purged_sources": 0}
        for source, vector, new_ids in self.pending():
            out["pending"] += 1
            committed = self.chunk_ids(source)
            entry = self.entry(source)
            keep = set(committed)
            orphans = [i for i in new_ids if i not in keep]
            if orphans:
                store.delete(orphans)
                out["undone_points"] += len(orphans)
            intact = entry is not None and _has_all(store, committed, entry.vectors)
            if entry is not None and vector not in entry.vectors and intact:
                # A crash while adding a second encoder's vector to an unchanged file leaves that
                # vector on some points; remove it so the store holds exactly what is recorded.
                store.delete_vector(committed, vector)
            if entry is not None and not intact:
                log.warning("ingest of %s was interrupted mid-way; purging it for a clean re-ingest", source)
                store.delete(committed)
                out["purged_sources"] += 1
                self.forget([source])
            else:
                with self._tx():
                    self.db.execute("DELETE FROM pending WHERE source=?", (source,))
        return out


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: type[BaseException] | None, *rest: object) -> None:
        self.db.execute("ROLLBACK" if et is not None else "COMMIT")


def _has_all(store: QdrantStore, ids: Sequence[str], vectors: Iterable[str]) -> bool:
    """Whether every id is stored and carries every one of ``vectors``."""
    wanted = sorted(vectors)
    for start in range(0, len(ids), _LOOKUP_BATCH):
        batch = ids[start : start + _LOOKUP_BATCH]
        found = store.vectors_of(batch)
        if len(found) != len(batch) or any(not set(wanted) <= v for v in found.values()):
            return False
    return True


def verify(
    store: QdrantStore, ledger: Ledger, *, repair: bool = False, progress: bool = False
) -> VerifyReport:
    """Compare ledger and store point by point (ids and vectors); optionally repair. ``progress``: a
    bar over the store's points on stderr (a big store takes minutes to scroll).

    Repair recovers pending rows first, then deletes store points the ledger does not know
    (written outside ingest, or by a run that lost its ledger) and forgets sources whose points
    or vectors are missing, so that the next ingest re-embeds exactly those files.
    """
    rep = VerifyReport()
    if repair:
        rep.repaired.update(ledger.recover(store))
    rep.pending = len(ledger.pending())
    entries = ledger.entries()
    rep.ledger_sources = len(entries)
    by_source: dict[str, list[str]] = {}
    for cid, source in ledger.db.execute("SELECT id, source FROM chunks"):
        by_source.setdefault(source, []).append(cid)
    ledger_ids = {cid: s for s, ids in by_source.items() for cid in ids}
    rep.ledger_chunks = len(ledger_ids)
    seen: set[str] = set()
    bad_sources: set[str] = set()
    untracked: dict[str, list[str]] = {}
    from tqdm import tqdm

    total, off = store.count(), not progress
    points = tqdm(
        store.iter_vector_names(), total=total, desc="verify", unit="pt", disable=off, dynamic_ncols=True
    )
    for point_id, names in points:
        seen.add(point_id)
        source = ledger_ids.get(point_id)
        if source is None:
            rep.missing_in_ledger.append(point_id)
            continue
        expected = entries[source].vectors
        for v in expected - names:
            rep.missing_vectors[v] = rep.missing_vectors.get(v, 0) + 1
            bad_sources.add(source)
        for v in names - expected:
            untracked.setdefault(v, []).append(point_id)
    rep.untracked_vectors = {v: len(ids) for v, ids in untracked.items()}
    rep.store_points = len(seen)
    for cid, source in ledger_ids.items():
        if cid not in seen:
            rep.missing_in_store.append(cid)
            bad_sources.add(source)
    rep.ok = (
        not (rep.missing_in_store or rep.missing_in_ledger or rep.missing_vectors or rep.untracked_vectors)
        and not rep.pending
    )
    if repair and not rep.ok:
        if rep.missing_in_ledger:
            store.delete(rep.missing_in_ledger)
        for source in sorted(bad_sources):
            store.delete(by_source[source])
        ledger.forget(sorted(bad_sources))
        for v, ids in untracked.items():
            store.delete_vector([i for i in ids if ledger_ids[i] not in bad_sources], v)
        rep.repaired["deleted_untracked_points"] = len(rep.missing_in_ledger)
        rep.repaired["forgotten_sources"] = len(bad_sources)
        rep.repaired["deleted_untracked_vectors"] = sum(rep.untracked_vectors.values())
        # What counts after a repair is the state it left.
        rep.ok = verify(store, ledger).ok
    return rep
