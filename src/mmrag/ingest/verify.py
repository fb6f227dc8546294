"""``mmrag verify``: compare a ledger with the store point by point, and repair safely.

Invariant: the points the ledger owns (its chunk ids) are exactly in the store, each with every
vector recorded for its source. Points the ledger does not list are sorted by the marker their
payload carries (:data:`~mmrag.store.payload.WRITER_KEY`):

* **owned strays**: written by ingest for a file this ledger knows (a stale chunk of an earlier
  version, or of an interrupted run): ``--repair`` deletes them;
* **foreign points**: written by ingest for a file this ledger does not know (another machine's
  ledger), by ``mmrag eval`` or training, or by something else (no marker): reported, and deleted
  only with ``--repair --force``. A repair from one machine's ledger so never deletes another's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmrag.ingest.stages.context import ledger_source
from mmrag.store.payload import INGEST_WRITER, WRITER_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mmrag.ingest.ledger_base import IngestLedger
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
    if writer is None:
        return UNMARKED
    if writer != INGEST_WRITER:
        return str(writer)
    tenant = payload.get("tenant")
    key = ledger_source(str(payload.get("source", "")), tenant if isinstance(tenant, str) else None)
    return None if key in known else OTHER_LEDGER


def verify(
    store: QdrantStore, ledger: IngestLedger, *, repair: bool = False, force: bool = False
) -> VerifyReport:
    """Compare ledger and store point by point (ids and vectors); optionally repair.

    Repair recovers pending rows first, then deletes the owned strays (see the module docstring),
    forgets sources whose points or vectors are missing (so the next ingest re-embeds exactly
    those files) and drops vectors the ledger does not record. ``force`` also deletes the points
    of other writers.
    """
    rep = VerifyReport()
    if repair:
        rep.repaired.update(ledger.recover(store))
    pending = ledger.pending()
    rep.pending = len(pending)
    entries = ledger.entries()
    rep.ledger_sources = len(entries)
    ledger_ids = ledger.chunk_sources()
    by_source: dict[str, list[str]] = {}
    for cid, source in ledger_ids.items():
        by_source.setdefault(source, []).append(cid)
    rep.ledger_chunks = len(ledger_ids)
    known = set(entries) | {s for s, _, _ in pending}
    seen: set[str] = set()
    bad_sources: set[str] = set()
    untracked: dict[str, list[str]] = {}
    for record in store.iter_records(with_vectors=True):
        point_id, names = record.id, set(record.vectors)
        seen.add(point_id)
        owner = ledger_ids.get(point_id)
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
    if repair and force and rep.foreign_ids:
        store.delete(rep.foreign_ids)
        rep.repaired["deleted_foreign_points"] = len(rep.foreign_ids)
    if repair and (not rep.ok or (force and rep.foreign_ids)):
        # What counts after a repair is the state it left.
        rep.ok = verify(store, ledger).ok
    return rep
