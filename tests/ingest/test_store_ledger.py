"""The store-side ledger of server / ``:memory:`` stores: shared by every writer, safe under concurrency.

The server code path runs on qdrant-client's ``:memory:`` mode (one client shared by the writers, as
one server is); the encoder is the fake HashEncoder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mmrag.errors import ConfigError
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.ingest.ledger import Ledger, verify
from mmrag.ingest.store_ledger import StoreLedger, migrate_ledger, open_ledger
from mmrag.store import QdrantStore
from mmrag.store.client import ClientBackend
from tests.fakes import HashEncoder

OPTS = IngestOptions(batch_size=4, text_window=8, workers=1, optimize=False)


class Serialized:
    """One qdrant-client ``:memory:`` client used by several threads: a server answers one request
    at a time per point; local mode is plain Python, so requests are serialised here (they still
    interleave between requests, which is what the ledger must survive)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def close(self) -> None:
        """One writer closing its store leaves the shared "server" running."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def _shared() -> Callable[[], QdrantStore]:
    from qdrant_client import QdrantClient

    client = Serialized(QdrantClient(location=":memory:"))
    with QdrantStore(ClientBackend(":memory:", client=client)) as first:
        from mmrag.encoders.base import vector_spec

        first.ensure_vector(vector_spec(HashEncoder()))  # the collection exists before the writers
    return lambda: QdrantStore(ClientBackend(":memory:", client=client))


def _folders(tmp_path: Path, data_dir: Path) -> list[Path]:
    out = []
    for name in ("markdown", "text"):
        dst = tmp_path / name
        shutil.copytree(data_dir / "ingest_demo" / name, dst)
        for i in range(6):
            (dst / f"{name}-note-{i}.txt").write_text(f"{name} note {i}. " + "Ledgers live with data. " * 60)
        out.append(dst)
    return out


def test_default_ledger_is_store_side_for_server_stores_and_sqlite_for_edge(tmp_path: Path) -> None:
    with QdrantStore.open(":memory:") as mem:
        assert isinstance(open_ledger(mem), StoreLedger)
        assert isinstance(open_ledger(mem, tmp_path / "l.sqlite"), Ledger)  # --ledger PATH wins
    with QdrantStore.open(str(tmp_path / "edge")) as edge:
        ledger = open_ledger(edge)
        assert isinstance(ledger, Ledger) and ledger.location == str(tmp_path / "edge" / "ledger.sqlite")
        ledger.close()
        with pytest.raises(ConfigError, match="SQLite"):
            StoreLedger(edge)


def test_ingest_into_a_memory_store_keeps_ledger_with_the_data(tmp_path: Path, data_dir: Path) -> None:
    folder = _folders(tmp_path, data_dir)[0]
    with QdrantStore.open(":memory:") as store:
        first = IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        with StoreLedger(store) as ledger:  # a fresh handle: the rows are in the store
            assert len(ledger.entries()) == first.files_loaded
            assert verify(store, ledger).ok and store.count() == len(ledger.all_chunk_ids())
        again = IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        assert again.written == 0 and again.files_unchanged == first.files_loaded


def test_two_writers_share_the_store_ledger_and_a_third_repairs_nothing_of_theirs(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two threads ingest different folders into one store at once; ledger == store afterwards,
    and ``verify --repair`` from a third writer deletes nothing.

    The second writer starts (and runs its recovery) exactly when the first has written points it
    has not committed yet: a recovery that undid every intent would delete them under its feet.
    """
    folders = _folders(tmp_path, data_dir)
    open_store = _shared()
    a_wrote, b_recovered = threading.Event(), threading.Event()
    summaries: dict[str, Any] = {}

    def writer_a() -> None:
        with open_store() as store:
            upsert = store.upsert_chunks

            def upsert_then_wait(*args: Any, **kwargs: Any) -> int:
                n = upsert(*args, **kwargs)
                if not a_wrote.is_set():
                    a_wrote.set()
                    b_recovered.wait(timeout=60)  # commit only after B's recovery ran
                return n

            store.upsert_chunks = upsert_then_wait  # type: ignore[method-assign]
            summaries["a"] = IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folders[0]])

    def writer_b() -> None:
        a_wrote.wait(timeout=60)
        with open_store() as store, StoreLedger(store) as ledger:
            recover = ledger.recover

            def recover_then_signal(st: QdrantStore) -> dict[str, int]:
                out = recover(st)
                b_recovered.set()
                return out

            ledger.recover = recover_then_signal  # type: ignore[method-assign]
            summaries["b"] = IngestRunner(HashEncoder(), store, OPTS, progress=False, ledger=ledger).run(
                [folders[1]]
            )

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(writer_a), pool.submit(writer_b)]:
            future.result()  # re-raises what a writer raised
    assert summaries["b"].recovered["running"] >= 1  # B saw A's intent in flight and left it alone
    with open_store() as store, StoreLedger(store) as third:
        n = store.count()
        sources = {Path(s).parent.name for s in third.entries()}
        assert sources == {"markdown", "text"}
        report = verify(store, third, repair=True)
        assert report.ok and not report.foreign, report.to_dict()
        assert report.repaired.get("deleted_untracked_points", 0) == 0 and store.count() == n
        assert n == len(third.all_chunk_ids())
        assert n == summaries["a"].written + summaries["b"].written


def test_recovery_leaves_a_running_writers_intent_alone(tmp_path: Path) -> None:
    enc = HashEncoder()
    from mmrag.encoders.base import vector_spec
    from mmrag.types import Chunk

    with QdrantStore.open(":memory:") as store:
        vector = store.ensure_vector(vector_spec(enc))
        chunk = Chunk("00000000-0000-5000-8000-00000000000a", "text", "a.txt", "alpha", None, {})
        writer, other = StoreLedger(store), StoreLedger(store)
        writer.begin([("a.txt", vector, [chunk.id])])
        store.upsert_chunks([chunk], enc.encode_text(["alpha"]), vector)
        assert other.recover(store) == {"pending": 0, "undone_points": 0, "purged_sources": 0, "running": 1}
        assert store.count() == 1  # the live run's point stays
        writer.close()  # the run ended without committing (an exception): its intent is now undone
        assert other.recover(store)["undone_points"] == 1 and store.count() == 0
        assert other.pending() == []


def test_recovery_undoes_the_intent_of_a_killed_process(tmp_path: Path) -> None:
    with QdrantStore.open(":memory:") as store:
        ledger = StoreLedger(store)
        ledger.begin([("a.txt", "v", ["00000000-0000-5000-8000-00000000000b"])])
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        row = ledger.rows.get([f"r:{ledger.run}"])[f"r:{ledger.run}"]
        ledger.rows.put([(f"r:{ledger.run}", {**row, "pid": int(dead.stdout)})])  # as if it had died
        assert int(dead.stdout) != os.getpid()
        assert StoreLedger(store).recover(store)["pending"] == 1


def test_migrate_a_local_ledger_into_the_store(tmp_path: Path, data_dir: Path) -> None:
    folder = _folders(tmp_path, data_dir)[0]
    with QdrantStore.open(":memory:") as store, Ledger(tmp_path / "old.sqlite") as old:
        IngestRunner(HashEncoder(), store, OPTS, progress=False, ledger=old).run([folder])
        with StoreLedger(store) as new:
            assert verify(store, new).foreign  # before: the store ledger knows nothing
            out = migrate_ledger(old, new)
            assert out["chunks"] == store.count() and out["sources"] == len(old.entries())
            assert verify(store, new).ok and not verify(store, new).foreign
            again = IngestRunner(HashEncoder(), store, OPTS, progress=False, ledger=new).run([folder])
            assert again.written == 0


def test_ledger_migrate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from mmrag.cli import main

    path = tmp_path / "old.sqlite"
    with Ledger(path) as old:
        old.commit([("a.txt", "h", "p", "v", ["id-1", "id-2"]), ("b.txt", "h", "p", "v", ["id-3"])])
    assert main(["ledger", "migrate", "--store", ":memory:", "--ledger", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        (out["sources"], out["chunks"]) == (2, 3) and out["to"].endswith("__ledger") and out["skipped"] == []
    )
    assert main(["ledger", "migrate", "--store", ":memory:", "--ledger", str(tmp_path / "none.sqlite")]) != 0
    assert "nothing to migrate" in capsys.readouterr().err


class _Clock:
    """The store ledger's clock, moved by hand (``time.time`` as seen by the module)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now


def test_a_run_writing_one_long_file_keeps_beating(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every written batch of a long file calls begin() with nothing new; it used to send no
    heartbeat, so after 15 minutes another host undid the live run's points."""
    from mmrag.ingest import store_ledger

    clock = _Clock()
    monkeypatch.setattr(store_ledger, "time", clock)
    pid = "00000000-0000-5000-8000-00000000000c"
    with QdrantStore.open(":memory:") as store:
        from mmrag.encoders.base import vector_spec
        from mmrag.types import Chunk

        enc = HashEncoder()
        vector = store.ensure_vector(vector_spec(enc))
        writer = StoreLedger(store)
        writer.begin([("long.txt", vector, [pid])])
        store.upsert_chunks(
            [Chunk(pid, "text", "long.txt", "alpha", None, {})], enc.encode_text(["alpha"]), vector
        )
        for _ in range(10):  # 10 batches of the same file, 2 minutes apart
            clock.now += 120
            writer.begin([])
        other = StoreLedger(store)
        other.host = "another-host"
        assert other.recover(store)["running"] == 1 and store.count() == 1
        clock.now += store_ledger.STALE_AFTER + 1  # now it really stalled
        assert other.recover(store)["undone_points"] == 1 and store.count() == 0


def test_heartbeats_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmrag.ingest import store_ledger

    clock = _Clock()
    monkeypatch.setattr(store_ledger, "time", clock)
    with QdrantStore.open(":memory:") as store:
        writer = StoreLedger(store)
        puts: list[Any] = []
        put = writer.rows.put
        writer.rows.put = lambda records: (puts.append(records), put(records))  # type: ignore[method-assign]
        for _ in range(5):
            writer.begin([])  # within BEAT_EVERY: one write
        clock.now += store_ledger.BEAT_EVERY
        writer.begin([])
        assert len(puts) == 2


def test_a_process_in_another_pid_namespace_is_not_judged_dead(tmp_path: Path) -> None:
    """Two containers share a host name but not their pids: a pid that is dead *here* says nothing
    about the other container's process (it used to be judged dead and its intent undone)."""
    with QdrantStore.open(":memory:") as store:
        ledger = StoreLedger(store)
        ledger.begin([("a.txt", "v", ["00000000-0000-5000-8000-00000000000d"])])
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        row = ledger.rows.get([f"r:{ledger.run}"])[f"r:{ledger.run}"]
        ledger.rows.put([(f"r:{ledger.run}", {**row, "pid": int(dead.stdout), "ns": "other-container"})])
        assert StoreLedger(store).recover(store)["running"] == 1
        ledger.rows.put([(f"r:{ledger.run}", {**row, "pid": int(dead.stdout), "ns": ""})])  # unknown
        assert StoreLedger(store).recover(store)["running"] == 1
        assert row["host"] == ledger.host and row["ns"] == ledger.namespace  # what a run records


def test_migrate_keeps_newer_store_side_rows(tmp_path: Path) -> None:
    """A file another machine re-ingested into the store-side ledger is not overwritten by an old
    local ledger's row; the skip is reported."""
    with QdrantStore.open(":memory:") as store, Ledger(tmp_path / "old.sqlite") as old:
        old.commit([("a.txt", "h-old", "p", "v", ["id-1"]), ("b.txt", "h", "p", "v", ["id-2"])])
        with StoreLedger(store) as new:
            new.commit([("a.txt", "h-new", "p", "v", ["id-9"])])
            out = migrate_ledger(old, new)
            assert out["skipped"] == ["a.txt"] and (out["sources"], out["chunks"]) == (1, 1)
            a = new.entry("a.txt")
            assert a is not None and a.hash == "h-new" and new.chunk_ids("a.txt") == ["id-9"]
            assert new.chunk_ids("b.txt") == ["id-2"]
            # The same version already in the store is merged (its vectors), not skipped.
            old.commit([("b.txt", "h", "p", "w", ["id-2"])])
            assert migrate_ledger(old, new)["skipped"] == ["a.txt"]
            b = new.entry("b.txt")
            assert b is not None and b.vectors == {"v", "w"}
