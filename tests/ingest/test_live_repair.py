"""`verify --repair` on a store-side ledger while other writers run: nothing of theirs is deleted.

Server code path (qdrant-client ``:memory:``, one store shared by the "machines", as one server
is); the ledgers are real :class:`StoreLedger` handles, one per writer, the encoder the fake
HashEncoder. The other writer's steps are the ingest writer's own protocol calls (intent → points →
stale delete → commit), made at the moment a concurrent run would make them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mmrag.encoders.base import vector_spec
from mmrag.ingest.ledger import verify
from mmrag.ingest.store_ledger import StoreLedger
from mmrag.store import QdrantStore
from mmrag.store.payload import INGEST_WRITER
from mmrag.types import Chunk
from tests.fakes import HashEncoder

ENC = HashEncoder()


def _chunk(n: int, source: str = "a.txt") -> Chunk:
    return Chunk(f"00000000-0000-5000-8000-{n:012d}", "text", source, f"text {n}", None, {})


def _write(
    store: QdrantStore, chunks: list[Chunk], vector: str = "hash-test", enc: HashEncoder = ENC
) -> None:
    store.upsert_chunks(chunks, enc.encode_text([c.text for c in chunks]), vector, writer=INGEST_WRITER)


@pytest.fixture
def store() -> Iterator[QdrantStore]:
    """A store with ``a.txt`` (chunks 1, 2) ingested and committed."""
    with QdrantStore.open(":memory:") as st, StoreLedger(st) as first:
        vector = st.ensure_vector(vector_spec(ENC))
        first.begin([("a.txt", vector, [_chunk(1).id, _chunk(2).id])])
        _write(st, [_chunk(1), _chunk(2)])
        first.commit([("a.txt", "h1", "p", vector, [_chunk(1).id, _chunk(2).id])])
        yield st


def test_repair_leaves_a_running_ingests_uncommitted_points_alone(store: QdrantStore) -> None:
    """A live run re-ingests the changed a.txt (keeps chunk 1, adds 3, drops 2) and adds the new
    b.txt; a repair from another machine in the middle used to delete chunks 3 and b's points as
    strays and forget a.txt with chunk 1 (the live run's data)."""
    live = StoreLedger(store)
    live.begin(
        [
            ("a.txt", "hash-test", [_chunk(1).id, _chunk(3).id]),
            ("b.txt", "hash-test", [_chunk(4, "b.txt").id]),
        ]
    )
    _write(store, [_chunk(1), _chunk(3), _chunk(4, "b.txt")])
    store.delete([_chunk(2).id])  # the stale delete, just before the commit

    with StoreLedger(store) as other:
        report = verify(store, other, repair=True)
    assert store.count() == 3  # chunks 1, 3 and b's 4 all stay
    assert report.repaired["running"] == 2 and report.in_flight == 3, report.to_dict()
    assert not report.missing_in_ledger and not report.missing_in_store
    assert report.repaired.get("deleted_untracked_points", 0) == 0
    assert "in flight" in report.to_text()

    live.commit([("a.txt", "h2", "p", "hash-test", [_chunk(1).id, _chunk(3).id])])
    live.commit([("b.txt", "hb", "p", "hash-test", [_chunk(4, "b.txt").id])])
    live.close()
    with StoreLedger(store) as third:
        assert verify(store, third).ok


def test_repair_leaves_a_vector_being_added_by_a_running_ingest(store: QdrantStore) -> None:
    """A live run adds a second encoder's vector to the unchanged a.txt; a repair in the middle
    used to take it for an untracked vector and delete it from the points."""
    second = HashEncoder(dim=32, encoder_id="hash-b")
    vector = store.ensure_vector(vector_spec(second))
    live = StoreLedger(store)
    ids = [_chunk(1).id, _chunk(2).id]
    live.begin([("a.txt", vector, ids)])
    chunks = [_chunk(1), _chunk(2)]
    store.upsert_chunks(chunks, second.encode_text([c.text for c in chunks]), vector, present=set(ids))

    with StoreLedger(store) as other:
        report = verify(store, other, repair=True)
    assert not report.untracked_vectors and report.in_flight == 2
    assert all("hash-b" in names for _, names in store.iter_vector_names())

    live.commit([("a.txt", "h1", "p", vector, ids)])
    live.close()
    with StoreLedger(store) as third:
        assert verify(store, third).ok


def test_repair_rereads_the_ledger_for_a_write_begun_during_the_scan(store: QdrantStore) -> None:
    """A run begins re-ingesting a.txt while the repair scrolls the store (after it read the
    intents): its new chunk must not be deleted as a stray of a.txt."""
    original = store.iter_records
    live = StoreLedger(store)

    def scan_while_another_writes(*args: Any, **kwargs: Any) -> Iterator[Any]:
        live.begin([("a.txt", "hash-test", [_chunk(1).id, _chunk(5).id])])
        _write(store, [_chunk(5)])
        yield from original(*args, **kwargs)

    store.iter_records = scan_while_another_writes  # type: ignore[method-assign]
    with StoreLedger(store) as other:
        report = verify(store, other, repair=True)
    store.iter_records = original  # type: ignore[method-assign]
    assert report.missing_in_ledger == [_chunk(5).id]  # seen as a stray by the scan ...
    assert report.repaired["deleted_untracked_points"] == 0  # ... and left: the re-read saw the intent
    assert report.repaired["left_in_flight"] == 1
    assert {c.id for c in store.get([_chunk(5).id])} == {_chunk(5).id}
    live.close()


def test_a_commit_between_the_ledger_scans_is_counted_not_a_keyerror(store: QdrantStore) -> None:
    """entries() and chunk_sources() are two scans; another machine committing c.txt between them
    used to raise KeyError in verify."""
    other = StoreLedger(store)
    entries = other.entries

    def entries_then_a_commit() -> Any:
        out = entries()
        with StoreLedger(store) as writer:
            writer.begin([("c.txt", "hash-test", [_chunk(6, "c.txt").id])])
            _write(store, [_chunk(6, "c.txt")])
            writer.commit([("c.txt", "hc", "p", "hash-test", [_chunk(6, "c.txt").id])])
        return out

    other.entries = entries_then_a_commit  # type: ignore[method-assign]
    report = verify(store, other, repair=True)
    assert report.ok and report.ledger_sources == 2 and report.ledger_chunks == 3, report.to_dict()
    assert store.count() == 3
    other.close()
