"""``mmrag verify``: compare a ledger with the store point by point, and repair safely.

Invariant: the points the ledger owns (its chunk ids) are exactly in the store, each with every
vector recorded for its source. Points the ledger does not list are sorted by the marker their
payload carries (:data:`~mmrag.store.payload.WRITER_KEY`):

* **owned strays**: written by ingest for a file this ledger knows (a stale chunk of an earlier
  version, or of an interrupted run): ``--repair`` deletes them. Points without a marker whose
  file the ledger knows count as owned too: mmrag wrote its points unmarked before markers
  existed, and the stale chunks of such a store must stay repairable;
* **foreign points**: written by ingest for a file this ledger does not know (another machine's
  ledger), by ``mmrag eval`` or training, or by something else (no marker, a file the ledger does
  not know): reported, and deleted only with ``--repair --force``. A repair from one machine's
  ledger so never deletes another's data.

Writes in flight (a pending intent: a running ingest on a shared store-side ledger, or an
interrupted one not yet recovered) are not judged: the intent's new points and every point of its
file are counted under ``in_flight`` and left alone. Before it deletes or forgets anything, a
repair re-reads the ledger (intents, then commits: a write always shows in one of them), so a
file another process wrote or committed during the scan is not taken for a stray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmrag.ingest.stages.context import ledger_source
from mmrag.store.payload import INGEST_WRITER, WRITER_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mmrag.ingest.ledger_base import IngestLedger, LedgerEntry
    from mmrag.store import QdrantStore

__all__ = ["VerifyReport", "verify"]

UNMARKED = "unmarked"
OTHER_LEDGER = "ingest, file not in this ledger"


@dataclass(slots=True)
class VerifyReport:
    """Result of comparing ledger and store (``mmrag verify --json``).

    ``ok`` is about what the ledger owns; ``foreign`` counts the points of other writers by kind
    (``"ingest, file not in this ledger"``, ``"eval"``, ``"train"``, ``"unmarked"``), which never
    make a store inconsistent and are deleted only by a forced repair.

    Example:
        >>> verify(store, ledger).to_text()          # doctest: +SKIP
        'ledger: 12 files, 290 chunks; store: 290 points ... OK: ledger == store'
    """

    ok: bool = True
    ledger_sources: int = 0
    ledger_chunks: int = 0
    store_points: int = 0
    pending: int = 0
    in_flight: int = 0
    missing_in_store: list[str] = field(default_factory=list)
    missing_in_ledger: list[str] = field(default_factory=list)
    missing_vectors: dict[str, int] = field(default_factory=dict)
    untracked_vectors: dict[str, int] = field(default_factory=dict)
    foreign: dict[str, int] = field(default_factory=dict)
    foreign_ids: list[str] = field(default_factory=list)
    repaired: dict[str, int] = field(default_factory=dict)

    def to_dict(self, sample: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ledger_sources": self.ledger_sources,
            "ledger_chunks": self.ledger_chunks,
            "store_points": self.store_points,
            "pending": self.pending,
            "in_flight": self.in_flight,
            "missing_in_store": len(self.missing_in_store),
            "missing_in_ledger": len(self.missing_in_ledger),
            "missing_vectors": dict(self.missing_vectors),
            "untracked_vectors": dict(self.untracked_vectors),
            "foreign": dict(self.foreign),
            "examples": {
                "missing_in_store": self.missing_in_store[:sample],
                "missing_in_ledger": self.missing_in_ledger[:sample],
                "foreign": self.foreign_ids[:sample],
            },
            "repaired": dict(self.repaired),
        }

    def to_text(self) -> str:
        """The human-readable report ``mmrag verify`` prints (counts, then the verdict)."""
        lines = [
            f"ledger: {self.ledger_sources} files, {self.ledger_chunks} chunks; "
            f"store: {self.store_points} points",
            f"pending (interrupted or running) writes: {self.pending}",
            f"missing in store: {len(self.missing_in_store)}; "
            f"missing in ledger: {len(self.missing_in_ledger)}",
            f"missing vectors: {dict(self.missing_vectors)}; "
            f"untracked vectors: {dict(self.untracked_vectors)}",
        ]
        if self.in_flight:
            lines.append(f"points of writes in flight (not judged, left alone): {self.in_flight}")
        if self.foreign:
            lines.append(
                f"points of other writers (kept; `--repair --force` deletes them): "
                f"{sum(self.foreign.values())} {dict(self.foreign)}"
            )
        lines.append("OK: ledger == store" if self.ok else "MISMATCH (run `mmrag verify --repair`)")
        if self.repaired:
            lines.append(f"repaired: {dict(self.repaired)}")
        return "\n".join(lines)


def _owner(payload: Mapping[str, Any], known: set[str]) -> str | None:
    """``None`` when the ledger owns this unlisted point (ingest wrote it for a file it knows),
    else the kind of foreign point it is."""
    writer = payload.get(WRITER_KEY)
    if writer not in (None, INGEST_WRITER):
        return str(writer)
    tenant = payload.get("tenant")
    key = ledger_source(str(payload.get("source", "")), tenant if isinstance(tenant, str) else None)
    if key in known:
        return None  # unmarked too: a chunk mmrag wrote before markers existed
    return UNMARKED if writer is None else OTHER_LEDGER


def verify(
    store: QdrantStore,
    ledger: IngestLedger,
    *,
    repair: bool = False,
    force: bool = False,
    progress: bool = False,
) -> VerifyReport:
    """Compare ledger and store point by point (ids and vectors); optionally repair. ``progress``: a
    bar over the store's points on stderr (a big store takes minutes to scroll).

    Repair recovers pending rows first, then deletes the owned strays (see the module docstring),
    forgets sources whose points or vectors are missing (so the next ingest re-embeds exactly
    those files) and drops vectors the ledger does not record. ``force`` also deletes the points
    of other writers. Writes in flight are left alone (module docstring).
    """
    rep = VerifyReport()
    if repair:
        rep.repaired.update(ledger.recover(store))
    pending = ledger.pending()
    rep.pending = len(pending)
    busy_ids = {i for _, _, ids in pending for i in ids}
    busy = {s for s, _, _ in pending}
    entries = ledger.entries()
    ledger_ids = ledger.chunk_sources()
    # Two scans: a file another process committed between them has ids but no entry yet.
    for source in sorted(set(ledger_ids.values()) - set(entries)):
        late = ledger.entry(source)
        if late is not None:
            entries[source] = late
    ledger_ids = {i: s for i, s in ledger_ids.items() if s in entries}  # else forgotten meanwhile
    rep.ledger_sources = len(entries)
    rep.ledger_chunks = len(ledger_ids)
    known = set(entries) | busy
    seen: set[str] = set()
    bad_sources: set[str] = set()
    untracked: dict[str, list[str]] = {}
    from tqdm import tqdm

    records = tqdm(
        store.iter_records(with_vectors=True),
        total=store.count(),
        desc="verify",
        unit="pt",
        disable=not progress,
        dynamic_ncols=True,
    )
    for record in records:
        point_id, names = record.id, set(record.vectors)
        seen.add(point_id)
        owner = ledger_ids.get(point_id)
        if point_id in busy_ids or owner in busy:
            rep.in_flight += 1
            continue
        if owner is None:
            kind = _owner(record.payload, known)
            if kind is None:
                rep.missing_in_ledger.append(point_id)
            else:
                rep.foreign[kind] = rep.foreign.get(kind, 0) + 1
                rep.foreign_ids.append(point_id)
            continue
        expected = entries[owner].vectors
        for v in expected - names:
            rep.missing_vectors[v] = rep.missing_vectors.get(v, 0) + 1
            bad_sources.add(owner)
        for v in names - expected:
            untracked.setdefault(v, []).append(point_id)
    rep.untracked_vectors = {v: len(ids) for v, ids in untracked.items()}
    rep.store_points = len(seen)
    for cid, source in ledger_ids.items():
        if cid not in seen and source not in busy:
            rep.missing_in_store.append(cid)
            bad_sources.add(source)
    rep.ok = (
        not (rep.missing_in_store or rep.missing_in_ledger or rep.missing_vectors or rep.untracked_vectors)
        and not rep.pending
    )
    if repair and not rep.ok:
        _repair(store, ledger, rep, entries, ledger_ids, bad_sources, untracked)
    if repair and force and rep.foreign_ids:
        store.delete(rep.foreign_ids)
        rep.repaired["deleted_foreign_points"] = len(rep.foreign_ids)
    if repair and (not rep.ok or (force and rep.foreign_ids)):
        # What counts after a repair is the state it left.
        rep.ok = verify(store, ledger).ok
    return rep


def _repair(
    store: QdrantStore,
    ledger: IngestLedger,
    rep: VerifyReport,
    entries: dict[str, LedgerEntry],
    ledger_ids: dict[str, str],
    bad_sources: set[str],
    untracked: dict[str, list[str]],
) -> None:
    """Delete the owned strays, forget the damaged sources, drop untracked vectors: each only if
    the ledger, read again now, still says so (another process may have written meanwhile)."""
    # Intents first, then commits: a write begun during the scan shows in one of the two.
    now_pending = ledger.pending()
    busy_ids = {i for _, _, ids in now_pending for i in ids}
    busy = {s for s, _, _ in now_pending}
    now_ids = ledger.chunk_sources()
    now_entries = ledger.entries()
    strays = [i for i in rep.missing_in_ledger if i not in busy_ids and i not in now_ids]
    bad = sorted(s for s in bad_sources if s not in busy and now_entries.get(s) == entries[s])
    gone = frozenset(bad)
    if strays:
        store.delete(strays)
    doomed = [i for i, s in ledger_ids.items() if s in gone]
    if doomed:
        store.delete(doomed)
    ledger.forget(bad)
    dropped, skip = 0, bad_sources | busy
    for v, ids in untracked.items():
        mine = [i for i in ids if _unchanged(ledger_ids[i], v, skip, now_entries)]
        if mine:
            store.delete_vector(mine, v)
        dropped += len(mine)
    rep.repaired["deleted_untracked_points"] = len(strays)
    rep.repaired["forgotten_sources"] = len(bad)
    rep.repaired["deleted_untracked_vectors"] = dropped
    left = len(rep.missing_in_ledger) - len(strays) + len(bad_sources) - len(bad)
    if left:
        rep.repaired["left_in_flight"] = left


def _unchanged(source: str, vector: str, skip: set[str], now: dict[str, LedgerEntry]) -> bool:
    """Whether ``vector`` is still untracked on ``source``'s points (and they are not deleted or busy)."""
    entry = now.get(source)
    return source not in skip and entry is not None and vector not in entry.vectors
