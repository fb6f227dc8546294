"""Fault injection: every fault ends with a clear error or a clean rerun, `verify` OK, and exactly
the points a fault-free ingest stores (nothing lost, nothing duplicated).

Real Qdrant Edge store and the server code path (qdrant-client ``:memory:``, store-side ledger);
the encoder is the fake HashEncoder. Faults that kill a process run the real CLI in a subprocess
(tests/ingest/fake_cli.py), the others run in-process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mmrag.encoders.base import vector_spec
from mmrag.errors import StoreError
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.ingest.ledger import Ledger, verify
from mmrag.ingest.store_ledger import open_ledger
from mmrag.store import QdrantStore
from mmrag.store.base import StoredPoint
from tests.fakes import HashEncoder

REPO = Path(__file__).resolve().parents[2]
OPTS = IngestOptions(batch_size=4, text_window=32, workers=1, optimize=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("faults") / "docs"
    root.mkdir()
    for sub in ("markdown", "text"):
        for f in (data_dir / "ingest_demo" / sub).iterdir():
            shutil.copy(f, root / f.name)
    for i in range(8):
        (root / f"note-{i}.txt").write_text(f"Note {i}. " + "Faults must not lose points. " * 40)
    return root


@pytest.fixture(scope="module")
def reference(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The point ids a fault-free ingest of ``folder`` stores (chunk ids are deterministic)."""
    with QdrantStore.open(str(tmp_path_factory.mktemp("ref") / "store")) as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        return {r.id for r in store.iter_records()}


def _assert_clean(store: QdrantStore, reference: set[str], ledger_path: Path | None = None) -> None:
    ids = [r.id for r in store.iter_records()]
    assert len(ids) == store.count() and set(ids) == reference  # nothing lost, nothing extra
    with open_ledger(store, ledger_path) as ledger:
        report = verify(store, ledger)
        assert report.ok and not report.foreign, report.to_dict()


@pytest.fixture(params=["edge", "memory"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Opens "the same" store again: an Edge directory, or one ``:memory:`` store kept open."""
    if request.param == "edge":
        yield lambda: QdrantStore.open(str(tmp_path / "store"))
        return
    shared = QdrantStore.open(":memory:")

    class _Keep:  # closing a `:memory:` store would drop its data; the test closes it at the end
        def __enter__(self) -> QdrantStore:
            return shared

        def __exit__(self, *exc: object) -> None:
            return None

    yield _Keep
    shared.close()


def test_backend_upsert_failing_mid_batch_then_a_clean_rerun(
    store_factory: Any, folder: Path, reference: set[str]
) -> None:
    calls = {"n": 0}
    with store_factory() as store:
        upsert = store.backend.upsert

        def flaky(points: list[StoredPoint], *, flush: bool = True) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                upsert(points[: len(points) // 2], flush=flush)  # half of the batch reached the store
                raise ConnectionError("injected: connection reset mid-batch")
            upsert(points, flush=flush)

        store.backend.upsert = flaky  # type: ignore[method-assign]
        with pytest.raises(ConnectionError, match="mid-batch"):
            IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        store.backend.upsert = upsert  # type: ignore[method-assign]
        assert 0 < store.count() < len(reference)
    with store_factory() as store:
        again = IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        assert again.recovered["pending"] >= 1  # the failed batch's files were undone first
        _assert_clean(store, reference)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_ledger_file_is_a_clear_error_then_a_rebuild(
    tmp_path: Path, folder: Path, reference: set[str], damage: str
) -> None:
    store_dir = tmp_path / "store"
    with QdrantStore.open(str(store_dir)) as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
    path = store_dir / "ledger.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x00garbage" * 64 + data[512:])
    with (
        QdrantStore.open(str(store_dir)) as store,
        pytest.raises(StoreError, match=r"unreadable.*move it away and re-run the ingest"),
    ):
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
    path.rename(tmp_path / "ledger.damaged")
    with QdrantStore.open(str(store_dir)) as store:
        enc = HashEncoder()
        rebuilt = IngestRunner(enc, store, OPTS, progress=False).run([folder])
        assert rebuilt.written == 0 and enc.text_calls == 0  # the ledger is rebuilt, no point re-written
        _assert_clean(store, reference)


def test_ledger_locked_by_another_process_is_a_clear_error_then_a_clean_rerun(
    tmp_path: Path, folder: Path, reference: set[str]
) -> None:
    store_dir = tmp_path / "store"
    with QdrantStore.open(str(store_dir)) as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
    (folder / "note-0.txt").write_text("Note zero, edited while the ledger is locked. " * 30)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
            str(store_dir / "ledger.sqlite"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            QdrantStore.open(str(store_dir)) as store,
            pytest.raises(StoreError, match=r"busy.*another process holds its write lock"),
        ):
            IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
    finally:
        holder.communicate(input="", timeout=30)  # the other process finishes: the lock is released
    with QdrantStore.open(str(store_dir)) as store:
        again = IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        assert again.files_changed == 1
        with Ledger(store_dir / "ledger.sqlite") as ledger:
            assert verify(store, ledger).ok
        ids = {r.id for r in store.iter_records()}
    # note-0 holds its new version now; every other file exactly its reference points
    (folder / "note-0.txt").write_text("Note 0. " + "Faults must not lose points. " * 40)
    with QdrantStore.open(str(store_dir)) as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        _assert_clean(store, reference)
    assert len(ids) >= len(reference) - 2


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    env["MMRAG_THREADS"] = "1"
    env.update(extra)
    return env


def _cli(folder: Path, store: Path, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "tests.ingest.fake_cli", "ingest", str(folder), "--store", str(store),
        "--batch-size", "4", "--text-window", "8", "--workers", "1", "-q", "--json",
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("at", ["copy", "swap", "cleanup"])
def test_sigkill_during_vector_add_then_a_clean_rerun(
    tmp_path: Path, folder: Path, reference: set[str], at: str
) -> None:
    """A second encoder's vector is added by copying the shard and switching to the copy; a kill
    at any step leaves one whole shard, and the rerun adds the vector to every point."""
    store_dir = tmp_path / "store"
    with QdrantStore.open(str(store_dir)) as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
    killed = _cli(folder, store_dir, MMRAG_FAKE_KILL_AT=at, MMRAG_FAKE_ENCODER_ID="hash-b")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with QdrantStore.open(str(store_dir)) as store:
        _assert_clean(store, reference)  # the first vector's points are all there, as before
        assert len(list(store_dir.glob("shard-*"))) == 1  # the half copy (or the old one) is gone
    done = _cli(folder, store_dir, MMRAG_FAKE_ENCODER_ID="hash-b")
    assert done.returncode == 0, done.stderr[-2000:]
    with QdrantStore.open(str(store_dir)) as store:
        _assert_clean(store, reference)
        assert {"hash-test", "hash-b"} <= set(store.vectors)
        assert store.vectors["hash-b"].get("spec") == "hash"  # recorded even if killed after the switch
        assert all(names >= {"hash-test", "hash-b"} for _, names in store.iter_vector_names())


def test_server_vector_add_failing_mid_copy_then_a_clean_rerun(
    folder: Path, reference: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server adds a vector by copying into a new collection and swapping the alias; a copy that
    fails half-way leaves the alias on the old collection, and the retry replaces the half copy."""
    from mmrag.store import client

    with QdrantStore.open(":memory:") as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
        original = client.scroll_all

        def failing(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for page in original(*args, **kwargs):
                yield page
                raise ConnectionError("injected: server went away during the copy")

        monkeypatch.setattr(client, "scroll_all", failing)
        second = HashEncoder(encoder_id="hash-b")
        with pytest.raises(ConnectionError, match="during the copy"):
            IngestRunner(second, store, OPTS, progress=False).run([folder])
        monkeypatch.setattr(client, "scroll_all", original)
        _assert_clean(store, reference)
        IngestRunner(second, store, OPTS, progress=False).run([folder])
        _assert_clean(store, reference)
        assert store.vector_for(vector_spec(second)) == "hash-b"
        assert all(names >= {"hash-test", "hash-b"} for _, names in store.iter_vector_names())


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; the reason when it cannot be done here."""
    if os.geteuid() != 0:
        return "a full disk is simulated with a small tmpfs, which needs root"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return None if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"


def test_full_disk_then_a_clean_rerun(tmp_path: Path, folder: Path, reference: set[str]) -> None:
    """The store fills its disk mid-ingest (ENOSPC: Qdrant Edge dies on its memory-mapped files, or
    the ledger reports the full disk); after space is freed the rerun completes the store."""
    mnt = tmp_path / "small"
    reason = _mount_tmpfs(mnt, "1m")
    if reason:
        pytest.skip(reason)
    try:
        full = _cli(folder, mnt / "store")
        assert full.returncode != 0, "the store fit in the small disk: nothing was tested"
        assert full.returncode == -signal.SIGBUS or "full" in full.stderr or "space" in full.stderr, (
            full.stderr
        )
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        done = _cli(folder, mnt / "store")
        assert done.returncode == 0, done.stderr[-2000:]
        with QdrantStore.open(str(mnt / "store")) as store:
            _assert_clean(store, reference)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


_REEMBED_AND_DIE = """
import os, signal, sys
from mmrag.encoders.base import vector_spec
from mmrag.store import QdrantStore
from mmrag.train import closed_loop
from tests.fakes import HashEncoder

write, calls = closed_loop.embed_and_write, [0]

def dying(*args, **kwargs):
    n = write(*args, **kwargs)
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # mid re-embed: some points carry the new vector
    return n

closed_loop.embed_and_write = dying
enc = HashEncoder(encoder_id="hash-b")
store = QdrantStore.open(sys.argv[1])
closed_loop.reembed(store, enc, store.ensure_vector(vector_spec(enc)), batch=16, progress=False)
"""


def test_sigkill_during_closed_loop_reembed_then_repair(
    tmp_path: Path, folder: Path, reference: set[str]
) -> None:
    """The closed loop re-embeds every point into a new vector and records it in the ledger only at
    the end; killed mid-way, `verify` finds the unrecorded vector and `--repair` removes it."""
    store_dir = tmp_path / "store"
    with QdrantStore.open(str(store_dir)) as store:
        IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder])
    killed = subprocess.run(
        [sys.executable, "-c", _REEMBED_AND_DIE, str(store_dir)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with QdrantStore.open(str(store_dir)) as store, Ledger(store_dir / "ledger.sqlite") as ledger:
        found = verify(store, ledger)
        assert not found.ok and 0 < found.untracked_vectors["hash-b"] < len(reference)
        assert not found.missing_in_store and not found.missing_in_ledger  # no point lost or added
        assert verify(store, ledger, repair=True).ok
        assert not any("hash-b" in names for _, names in store.iter_vector_names())
    with QdrantStore.open(str(store_dir)) as store:
        _assert_clean(store, reference)
