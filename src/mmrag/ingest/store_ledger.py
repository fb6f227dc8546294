"""The store-side ingest ledger: the ledger rows live with the data, in a companion collection.

For a server, cluster or ``:memory:`` store, every machine (and process) that ingests into one
collection shares this ledger, so ``mmrag verify --repair`` from any of them knows every writer's
files. Rows are records of the companion collection ``<collection>__ledger``
(:mod:`mmrag.store.companion`), one per key:

* ``s:<source>``: the committed version of a file: hash, load parameters, vectors, chunk ids;
* ``p:<source>``: a write begun and not committed (the intent), with the run that wrote it;
* ``r:<run>``: a running ingest: host, pid, the namespace its pid lives in and a heartbeat.

The write order is the SQLite ledger's (intent → points → commit; see :mod:`mmrag.ingest.ledger`);
a commit writes the source row before it drops the intent, so a crash between the two leaves an
intent whose recovery finds the source intact and only drops it. Recovery undoes only intents of
runs that are over: their run row is gone (closed), their process is dead (same host, same boot and
same PID namespace: containers sharing a hostname have their own pids), or their heartbeat is
older than ``stale_after`` seconds. A run beats on every ledger write it makes (every written batch,
at most once per :data:`BEAT_EVERY` seconds).

What is guaranteed: a run that calls the ledger at least every ``stale_after`` seconds (15 minutes;
each batch written does) is never judged over, so two processes ingesting different folders do not
undo each other's writes in flight. A run that stalls longer (suspended, stopped in a debugger, one
batch taking more than 15 minutes), or hosts whose clocks differ by about that much, can be judged
over by another host and have its uncommitted points undone; its next run repairs the rest. Two runs
ingesting the *same* file at once are not supported (as with one SQLite ledger): the last commit wins.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.errors import ConfigError
from mmrag.ingest.ledger_base import IngestLedger, LedgerEntry, recover_pending
from mmrag.store.companion import Companion, companion

if TYPE_CHECKING:
    from mmrag.store import QdrantStore

__all__ = ["StoreLedger", "migrate_ledger", "open_ledger"]

log = logging.getLogger(__name__)
STALE_AFTER = 900.0
BEAT_EVERY = 30.0


def _namespace() -> str:
    """Where this process's pid means something: boot id and PID namespace (Linux), so that a
    container sharing the host name but not the pids never takes our pid for a dead one. Empty
    when unknown: then liveness rests on the heartbeat alone."""
    if sys.platform != "linux":
        return f"{sys.platform}:host"  # no PID namespaces: one host, one pid space
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


class StoreLedger:
    """An :class:`~mmrag.ingest.ledger_base.IngestLedger` kept in the store's companion collection.

    Args:
        store: A server, cluster or ``:memory:`` store.
        stale_after: Seconds without a heartbeat after which another host's run counts as dead.

    Example:
        >>> with StoreLedger(QdrantStore.open("http://qdrant:6333")) as ledger:   # doctest: +SKIP
        ...     IngestRunner(encoder, store, ledger=ledger).run(["docs"])
    """

    def __init__(self, store: QdrantStore, *, stale_after: float = STALE_AFTER) -> None:
        rows = companion(store, "ledger")
        if rows is None:
            raise ConfigError(
                f"store {store.location} is an embedded Edge store: its ledger is the SQLite file "
                "beside it (mmrag.ingest.Ledger), not a companion collection"
            )
        self.rows: Companion = rows
        self.stale_after = stale_after
        self.run = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.namespace = _namespace()
        self._beat_at = float("-inf")
        self._location = f"{store.location}__ledger"
        self._registered = False

    @property
    def location(self) -> str:
        return self._location

    def close(self) -> None:
        # The run is over: intents it left (an exception mid-way) are now recoverable by anyone.
        if self._registered:
            self.rows.delete([f"r:{self.run}"])
            self._registered = False

    def __enter__(self) -> StoreLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _heartbeat(self) -> None:
        """Say this run is alive (at most once per :data:`BEAT_EVERY` s: one small upsert)."""
        now = time.time()
        if self._registered and now - self._beat_at < BEAT_EVERY:
            return
        row = {"kind": "run", "host": self.host, "ns": self.namespace, "pid": os.getpid(), "beat": now}
        self.rows.put([(f"r:{self.run}", row)])
        self._registered, self._beat_at = True, now

    # -- reads ------------------------------------------------------------------------------
    def _sources(self, with_ids: bool) -> Iterable[dict[str, Any]]:
        return self.rows.scan("source", exclude=() if with_ids else ("ids",))

    def entries(self) -> dict[str, LedgerEntry]:
        return {r["source"]: _entry(r) for r in self._sources(with_ids=False)}

    def entry(self, source: str) -> LedgerEntry | None:
        row = self.rows.get([f"s:{source}"]).get(f"s:{source}")
        return None if row is None else _entry(row)

    def chunk_ids(self, source: str) -> list[str]:
        row = self.rows.get([f"s:{source}"]).get(f"s:{source}")
        return sorted(row["ids"]) if row else []

    def chunk_sources(self) -> dict[str, str]:
        return {i: r["source"] for r in self._sources(with_ids=True) for i in r["ids"]}

    def all_chunk_ids(self) -> set[str]:
        return set(self.chunk_sources())

    def count_chunks(self, source: str) -> int:
        return len(self.chunk_ids(source))

    def pending(self) -> list[tuple[str, str, list[str]]]:
        rows = sorted(self.rows.scan("pending"), key=lambda r: str(r["source"]))
        return [(r["source"], r["vector"], list(r["new_ids"])) for r in rows]

    # -- the write protocol -----------------------------------------------------------------
    def begin(self, items: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        # Every written batch calls begin, mostly with nothing new: the beat keeps a long file's run alive.
        self._heartbeat()
        if not items:
            return
        row = {"kind": "pending", "run": self.run, "started": time.time()}
        self.rows.put(
            [(f"p:{s}", {**row, "source": s, "vector": v, "new_ids": list(ids)}) for s, v, ids in items]
        )

    def commit(self, items: Sequence[tuple[str, str, str, str, Sequence[str]]]) -> None:
        if not items:
            return
        rows = self.rows.get([f"s:{s}" for s, *_ in items])
        changed: dict[str, dict[str, Any]] = {}
        for source, digest, params, vector, ids in items:
            row = rows.get(f"s:{source}")
            if row is None or (row["hash"], row["params"]) != (digest, params):
                row = {"kind": "source", "source": source, "hash": digest, "params": params, "vectors": []}
                row["ids"] = list(ids)
            row["vectors"] = sorted({*row["vectors"], vector})
            row["updated"] = time.time()
            rows[f"s:{source}"] = changed[f"s:{source}"] = row
        # The committed rows first, then the intents: see the module docstring.
        self.rows.put(list(changed.items()))
        self.rows.delete([f"p:{s}" for s, *_ in items])
        self._heartbeat()

    def add_vector(self, sources: Iterable[str], vector: str) -> None:
        keys = [f"s:{s}" for s in sources]
        rows = self.rows.get(keys)
        for row in rows.values():
            row["vectors"] = sorted({*row["vectors"], vector})
        self.rows.put(list(rows.items()))

    def forget(self, sources: Sequence[str]) -> None:
        self.rows.delete([f"{k}:{s}" for s in sources for k in ("s", "p")])

    def drop_pending(self, source: str) -> None:
        self.rows.delete([f"p:{source}"])

    # -- recovery ---------------------------------------------------------------------------
    def _over(self, run: str | None, runs: dict[str, dict[str, Any]], now: float) -> bool:
        """Whether the run that wrote an intent is over (so the intent may be undone)."""
        info = runs.get(f"r:{run}")
        if info is None:
            return True
        same = info.get("host") == self.host and info.get("ns") and info.get("ns") == self.namespace
        if same and not _alive(int(info.get("pid", -1))):
            return True  # its pid is ours to check: the process is gone
        return now - float(info.get("beat", 0.0)) > self.stale_after

    def recover(self, store: QdrantStore) -> dict[str, int]:
        """Undo the intents of runs that are over; intents of running ingests are left alone
        (counted under ``"running"``)."""
        rows = list(self.rows.scan("pending"))
        runs = self.rows.get(sorted({f"r:{r.get('run')}" for r in rows}))
        now = time.time()
        over = [r for r in rows if self._over(r.get("run"), runs, now)]
        over.sort(key=lambda r: str(r["source"]))
        out = recover_pending(self, store, [(r["source"], r["vector"], list(r["new_ids"])) for r in over])
        out["running"] = len(rows) - len(over)
        for r in {str(r.get("run")) for r in over}:
            self.rows.delete([f"r:{r}"])  # a dead run's row: nothing of it is left to recover
        return out

    def is_empty(self) -> bool:
        return next(iter(self._sources(with_ids=False)), None) is None


def _entry(row: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(row["source"], row["hash"], row["params"], frozenset(row.get("vectors") or ()))


def open_ledger(
    store: QdrantStore, path: str | Path | None = None, collection: str = "mmrag"
) -> IngestLedger:
    """The ledger an ingest or ``mmrag verify`` uses by default.

    ``path`` given: that SQLite file. Otherwise an embedded Edge store's file beside the shard, and
    for a server, cluster or ``:memory:`` store the store-side ledger (:class:`StoreLedger`). A
    server store whose old per-machine ledger exists while the store-side one is empty logs how to
    migrate it (``mmrag ledger migrate``).
    """
    from mmrag.ingest.ledger import Ledger, default_ledger_path

    if path is not None:
        return Ledger(path)
    if companion(store, "ledger") is None:
        return Ledger(default_ledger_path(store, collection))
    ledger = StoreLedger(store)
    old = default_ledger_path(store, collection)
    if old != ":memory:" and Path(old).exists() and ledger.is_empty():
        log.warning(
            "the store-side ledger of %s is empty but this machine has a local ledger %s; "
            "run `mmrag ledger migrate` to move it into the store",
            store.location,
            old,
        )
    return ledger


def migrate_ledger(source: IngestLedger, target: IngestLedger) -> dict[str, Any]:
    """Copy every committed source (hash, params, vectors, chunk ids) of ``source`` into ``target``.

    A file ``target`` already holds in another version (hash or params differ: another machine
    ingested it since) is skipped and listed, never overwritten; the same version gets the vectors
    merged. Pending intents are not copied: recover the old ledger first (``mmrag verify --repair
    --ledger OLD``). Returns ``{"sources": n, "chunks": n, "skipped": [source, ...]}``.
    """
    if source.pending():
        raise ConfigError(
            f"ledger {source.location} has interrupted writes: run `mmrag verify --repair --ledger "
            f"{source.location}` first"
        )
    there = target.entries()
    n, copied, skipped = 0, 0, []
    items: list[tuple[str, str, str, str, list[str]]] = []
    for s, e in sorted(source.entries().items()):
        newer = there.get(s)
        if newer is not None and (newer.hash, newer.params) != (e.hash, e.params):
            log.warning("not migrating %s: the store-side ledger holds another version of it", s)
            skipped.append(s)
            continue
        ids = source.chunk_ids(s)
        n, copied = n + len(ids), copied + 1
        items += [(s, e.hash, e.params, v, ids) for v in sorted(e.vectors)]
    for start in range(0, len(items), 256):
        target.commit(items[start : start + 256])
    return {"sources": copied, "chunks": n, "skipped": skipped}
