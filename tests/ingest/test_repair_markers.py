"""`mmrag verify --repair` deletes only what its own ledger owns (issue #18's two-ledger scenario).

Real Qdrant Edge store, real CLI, runner and ledgers; only the encoder is the fake HashEncoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmrag.cli import _common, main
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.ingest.indexing import embed_and_write
from mmrag.ingest.ledger import Ledger, verify
from mmrag.store import QdrantStore
from mmrag.store.payload import EVAL_WRITER, INGEST_WRITER, WRITER_KEY
from mmrag.types import Chunk
from tests.fakes import HashEncoder


@pytest.fixture(autouse=True)
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "_encoder", lambda s, store=None: HashEncoder())


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    rc = main([*argv, "--json", "-q"])
    return rc, json.loads(capsys.readouterr().out)


def _by_writer(store_dir: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with QdrantStore.open(str(store_dir)) as store:
        for r in store.iter_records():
            key = str(r.payload.get(WRITER_KEY))
            out[key] = out.get(key, 0) + 1
    return out


def test_repair_from_one_ledger_keeps_the_other_ledgers_points(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Markdown through ledger A, HTML through ledger B, repair from A: B's points stay (used to be
    deleted: 290 → 87 points in the issue). ``--force`` deletes them, as asked."""
    demo, store = data_dir / "ingest_demo", str(tmp_path / "store")
    la, lb = str(tmp_path / "la.sqlite"), str(tmp_path / "lb.sqlite")
    common = ["--store", store, "--chunk-words", "120"]
    assert _cli(capsys, "ingest", str(demo / "markdown"), *common, "--ledger", la)[0] == 0
    assert _cli(capsys, "ingest", str(demo / "html"), *common, "--ledger", lb)[0] == 0
    with QdrantStore.open(store) as st, Ledger(la) as a, Ledger(lb) as b:
        total, in_a, in_b = st.count(), len(a.all_chunk_ids()), len(b.all_chunk_ids())
    assert in_a and in_b and total == in_a + in_b
    assert _by_writer(tmp_path / "store") == {INGEST_WRITER: total}

    rc, rep = _cli(capsys, "verify", "--store", store, "--ledger", la, "--repair")
    assert rc == 0 and rep["ok"] is True
    assert rep["foreign"] == {"ingest, file not in this ledger": in_b}
    assert rep["repaired"].get("deleted_untracked_points", 0) == 0
    with QdrantStore.open(store) as st:
        assert st.count() == total  # nothing of B's deleted
    with QdrantStore.open(store) as st, Ledger(lb) as b:
        assert verify(st, b).ok  # and B still agrees with the store

    rc, rep = _cli(capsys, "verify", "--store", store, "--ledger", la, "--repair", "--force")
    assert rc == 0 and rep["repaired"]["deleted_foreign_points"] == in_b
    with QdrantStore.open(store) as st:
        assert st.count() == in_a


def test_repair_deletes_owned_strays_but_not_eval_or_unmarked_points(tmp_path: Path, data_dir: Path) -> None:
    """A stale chunk ingest wrote for a file the ledger knows goes, marked or not (mmrag wrote
    unmarked points before markers existed); eval's points and unmarked points of files the ledger
    does not know stay."""
    folder = data_dir / "ingest_demo" / "markdown"
    enc = HashEncoder()
    with QdrantStore.open(str(tmp_path / "s")) as store, Ledger(tmp_path / "s" / "ledger.sqlite") as ledger:
        IngestRunner(enc, store, IngestOptions(batch_size=8), progress=False, ledger=ledger).run([folder])
        n = store.count()
        source = next(iter(ledger.entries()))
        stale = Chunk("00000000-0000-5000-8000-000000000001", "text", source, "old text", None, {})
        store.upsert_chunks([stale], enc.encode_text(["old text"]), enc.id, writer=INGEST_WRITER)
        evald = Chunk("00000000-0000-5000-8000-000000000002", "text", "scifact/1", "doc", None, {})
        embed_and_write(enc, store, [evald], vector=enc.id, writer=EVAL_WRITER)
        bare = Chunk("00000000-0000-5000-8000-000000000003", "text", "notes/by-hand.txt", "by hand", None, {})
        store.upsert_chunks([bare], enc.encode_text(["by hand"]), enc.id)
        old = Chunk("00000000-0000-5000-8000-000000000004", "text", source, "before markers", None, {})
        store.upsert_chunks([old], enc.encode_text(["before markers"]), enc.id)  # no marker

        before = verify(store, ledger)
        assert not before.ok and sorted(before.missing_in_ledger) == [stale.id, old.id]
        assert before.foreign == {"eval": 1, "unmarked": 1}
        after = verify(store, ledger, repair=True)
        assert after.ok and after.repaired["deleted_untracked_points"] == 2
        assert store.count() == n + 2
        assert {c.id for c in store.get([evald.id, bare.id, old.id, stale.id])} == {evald.id, bare.id}
