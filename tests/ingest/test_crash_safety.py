"""SIGKILL a real `mmrag ingest` subprocess at random points, again and again, and check that the
ledger and the store always agree, with nothing lost and nothing duplicated.

The subprocess runs the real CLI, runner, ledger and Qdrant Edge store; only the encoder is the
fake HashEncoder (tests/ingest/fake_cli.py), slowed down so that kills land mid-run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from mmrag.ingest.ledger import Ledger, verify
from mmrag.ingest.loaders import LoadOptions, iter_files, load_document
from mmrag.store import QdrantStore

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 7


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")])
    env["MMRAG_FAKE_ENCODE_DELAY"] = "0.01"
    env["MMRAG_THREADS"] = "1"
    return env


def _cmd(folder: Path, store: Path) -> list[str]:
    return [
        sys.executable, "-m", "tests.ingest.fake_cli", "ingest", str(folder), "--store", str(store),
        "--batch-size", "4", "--chunk-words", "40", "--overlap", "8", "--prune", "-q", "--json",
    ]  # fmt: skip


def _versions(folder: Path, seen: dict[str, list[frozenset[str]]]) -> None:
    """Record the chunk ids of every file as it is now (one more allowed version per source)."""
    from mmrag.ingest.chunking import ChunkingOptions

    opts = LoadOptions(chunking=ChunkingOptions(words=40, overlap=8))
    for path in iter_files(folder):
        doc = load_document(path, path.read_bytes(), opts=opts)
        ids = frozenset(c.id for c in doc.chunks)
        if ids not in seen[str(path.resolve())]:
            seen[str(path.resolve())].append(ids)


def _check(
    store_dir: Path, versions: dict[str, list[frozenset[str]]], recovered: list[int] | None = None
) -> dict[str, frozenset[str]]:
    """What the next run does first (recovery), then ledger == store and one whole version per file."""
    with QdrantStore.open(str(store_dir)) as store, Ledger(store_dir / "ledger.sqlite") as ledger:
        undone = ledger.recover(store)
        if recovered is not None:
            recovered.append(undone["pending"])
        report = verify(store, ledger)
        assert report.ok, report.to_dict()
        by_source: dict[str, set[str]] = defaultdict(set)
        for rec in store.iter_records():
            by_source[str(rec.payload["source"])].add(rec.id)
        ids = [r.id for r in store.iter_records()]
    assert len(ids) == len(set(ids))
    for source, got in by_source.items():
        # Exactly one version of each file: never half of one, never two mixed.
        assert frozenset(got) in versions[source], f"{source}: a mix of versions or a partial file"
    return {s: frozenset(v) for s, v in by_source.items()}


@pytest.mark.timeout(240)
def test_sigkill_at_random_points_never_breaks_ledger_equals_store(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for sub in ("markdown", "text"):
        for f in (data_dir / "ingest_demo" / sub).iterdir():
            shutil.copy(f, folder / f.name)
    for i in range(12):
        (folder / f"note-{i}.txt").write_text(f"Note {i}. " + "Qdrant keeps vectors in segments. " * 30)
    store_dir = tmp_path / "store"
    versions: dict[str, list[frozenset[str]]] = defaultdict(list)
    _versions(folder, versions)
    rng = random.Random(5)
    env = _env()
    kills = 0
    recovered: list[int] = []
    for round_ in range(ROUNDS):
        # Change the folder between rounds: edits (stale chunks to delete) and a removal (prune).
        if round_ == 2:
            (folder / "note-3.txt").write_text("Edited note three. " * 40)
        if round_ == 4:
            (folder / "note-5.txt").unlink()
            (folder / "war-and-peace-chapter1.txt").write_text("A much shorter chapter now.")
        if round_ > 0:  # every round has a changed file, so each chosen crash point is reached
            (folder / f"note-{6 + round_ % 6}.txt").write_text(f"Round {round_} rewrote this. " * 25)
        _versions(folder, versions)
        # Half the rounds crash at a chosen point of the write protocol (deterministic), half at a
        # random moment of the run (whatever it was doing then).
        env_round = dict(env)
        if round_ % 2 == 0:
            op = rng.choice(["upsert", "delete", "begin"])
            env_round["MMRAG_FAKE_KILL_AT"] = f"{op}:1"
        proc = subprocess.Popen(
            _cmd(folder, store_dir), cwd=REPO, env=env_round, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        if round_ % 2 == 1:
            # Start the clock once this run writes to the ledger (imports take long on a busy machine).
            wal = store_dir / "ledger.sqlite-wal"
            before = wal.stat().st_mtime_ns if wal.exists() else 0
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if wal.exists() and wal.stat().st_mtime_ns != before:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        kills += proc.returncode == -signal.SIGKILL
        _check(store_dir, versions, recovered)
    assert kills >= (ROUNDS + 1) // 2, "the chosen crash points were not reached"
    # Some kills landed between a file's intent and its commit (else this tests nothing).
    assert sum(1 for n in recovered if n) >= 2, recovered

    done = subprocess.run(
        _cmd(folder, store_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    final = _check(store_dir, versions)
    # Nothing lost: every file now holds exactly its current version; the deleted one is gone.
    current: dict[str, list[frozenset[str]]] = defaultdict(list)
    _versions(folder, current)
    assert final == {s: v[0] for s, v in current.items()}
    again = json.loads(
        subprocess.run(
            _cmd(folder, store_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        ).stdout
    )
    assert again["embedded"] == 0 and again["written"] == 0 and again["deleted"] == 0
    assert again["files_unchanged"] == len(current)
