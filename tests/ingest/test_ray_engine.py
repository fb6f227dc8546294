"""The Ray Data engine against the default engine on a small mixed folder of real files.

Ray runs as a local single-node cluster (``ray.init(num_cpus=2)``): ``local_mode`` was removed in
Ray 2.54 (``ray.init(local_mode=True)`` raises), and a real local cluster is the better stand-in
for a multi-node one anyway (workers are separate processes, everything crosses by pickle). One
Ray session serves the whole module: starting Ray takes seconds.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmrag import cli
from mmrag.errors import ConfigError, MmragError
from mmrag.ingest import IngestOptions, IngestRunner, Ledger, verify
from mmrag.ingest.ledger import default_ledger_path
from mmrag.ingest.ray_engine import RayIngestRunner, RayOptions
from mmrag.store import QdrantStore
from tests.conftest import REPO
from tests.fakes import HashEncoder

# Ray's own DataContext warns about its deprecated settings when it copies the context.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

DEMO = {
    "markdown/simple-table.md": "md/simple-table.md",
    "markdown/codeblock.md": "md/codeblock.md",
    "text/war-and-peace-chapter1.txt": "war-and-peace.txt",
    "html/steeljis-datasheet.html": "steeljis.html",
    "images/photos/coffee.png": "img/coffee.png",
    "images/photos/917574521_74fab68514.jpg": "img/photo.jpg",
    "pdf/corrosion-paper-figures-tables-1p.pdf": "corrosion.pdf",
}


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the Ray engine needs the extra: pip install 'mmrag[ray]'")
    pytest.importorskip("ray.data", reason="the Ray engine needs the extra: pip install 'mmrag[ray]'")
    # Workers are fresh processes: they import mmrag and tests.fakes (the encoder factory) from here.
    path = os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def folder(tmp_path: Path, data_dir: Path) -> Path:
    root = tmp_path / "docs"
    for src, dst in DEMO.items():
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "ingest_demo" / src, root / dst)
    (root / "empty.txt").write_bytes(b"")  # skipped by the driver's check
    (root / "junk.xyz").write_text("what is this")  # skipped by the driver's check
    data = (root / "img" / "photo.jpg").read_bytes()
    (root / "img" / "truncated.jpg").write_bytes(data[: len(data) // 3])  # skipped by a Ray worker
    (root / "md" / "again.md").symlink_to(root / "md" / "simple-table.md")  # the same file twice
    return root


OPTS = IngestOptions(batch_size=8, text_window=4, ocr=False)  # several windows per run


def _default(store_dir: Path, folder: Path) -> dict[str, Any]:
    with QdrantStore.open(str(store_dir)) as store:
        return IngestRunner(HashEncoder(), store, OPTS, progress=False).run([folder]).to_dict()


def _ray(store_dir: Path, folder: Path, **ray_opts: Any) -> dict[str, Any]:
    with QdrantStore.open(str(store_dir)) as store:
        runner = RayIngestRunner(
            HashEncoder(),
            store,
            OPTS,
            encoder_factory=HashEncoder,
            ray_options=RayOptions(files_per_batch=2, **ray_opts),
            progress=False,
        )
        return runner.run([folder]).to_dict()


def _contents(store_dir: Path) -> dict[str, Any]:
    """Everything the two engines must agree on: points (payload and vector) and ledger rows."""
    with QdrantStore.open(str(store_dir)) as store, Ledger(default_ledger_path(store)) as ledger:
        records = list(store.iter_records(with_vectors=True))
        points = {r.id: dict(r.payload) for r in records}
        vectors = {r.id: {k: np.round(v, 6).tolist() for k, v in r.vectors.items()} for r in records}
        entries = {
            s: (e.hash, e.params, sorted(e.vectors), sorted(ledger.chunk_ids(s)))
            for s, e in ledger.entries().items()
        }
        report = verify(store, ledger)
    return {"points": points, "vectors": vectors, "ledger": entries, "verify": report.ok}


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> None:
    keys = ["files_seen", "files_loaded", "chunks", "embedded", "written", "already_stored"]
    keys += ["files_new", "files_changed", "files_unchanged", "deleted", "vector"]
    assert {k: b[k] for k in keys} == {k: a[k] for k in keys}
    assert sorted(map(str, b["skipped"])) == sorted(map(str, a["skipped"]))


@pytest.mark.slow  # a local Ray cluster: seconds to start, seconds per pipeline
def test_ray_engine_matches_default_engine(tmp_path: Path, folder: Path, ray_session: Any) -> None:
    default = _default(tmp_path / "default", folder)
    on_ray = _ray(tmp_path / "ray", folder)
    _same_run(default, on_ray)
    reasons = {Path(s["path"]).name: s["reason"] for s in on_ray["skipped"]}
    assert set(reasons) == {"empty.txt", "junk.xyz", "truncated.jpg"}
    assert on_ray["chunks"]["image"] >= 3 and on_ray["chunks"]["text"] >= 5  # photos, a PDF figure
    assert {"embed_text", "embed_image", "write", "ledger"} <= set(on_ray["timings"])

    a, b = _contents(tmp_path / "default"), _contents(tmp_path / "ray")
    assert b["verify"] and a["verify"]
    assert b["ledger"] == a["ledger"] and b["points"] == a["points"]
    assert b["vectors"] == a["vectors"]

    again = _ray(tmp_path / "ray", folder)  # nothing to do: no Ray stage runs at all
    assert again["embedded"] == 0 and again["written"] == 0 and again["deleted"] == 0
    assert again["files_unchanged"] == on_ray["files_loaded"]
    assert again["already_stored"] == on_ray["written"]
    assert _contents(tmp_path / "ray") == b


@pytest.mark.slow  # a local Ray cluster: seconds to start, seconds per pipeline
def test_ray_engine_replaces_only_an_edited_files_chunks(
    tmp_path: Path, folder: Path, ray_session: Any
) -> None:
    _default(tmp_path / "default", folder)
    _default(tmp_path / "ray", folder)  # the engines share the store, the ledger and the ids
    (folder / "md" / "codeblock.md").write_text("# Changed\n\nOnly this file is new.\n")
    Image.new("RGB", (40, 40), (0, 90, 200)).save(folder / "img" / "blue.png")
    default = _default(tmp_path / "default", folder)
    on_ray = _ray(tmp_path / "ray", folder, workers=1, parse_tasks=1)
    _same_run(default, on_ray)
    assert on_ray["files_changed"] == 1 and on_ray["files_new"] == 1 and on_ray["deleted"] >= 1
    assert on_ray["embedded"] == on_ray["written"] == default["written"]
    assert _contents(tmp_path / "ray") == _contents(tmp_path / "default")


@pytest.mark.slow  # a local Ray cluster: seconds to start, seconds per pipeline
def test_ray_engine_writes_through_the_server_client(tmp_path: Path, folder: Path, ray_session: Any) -> None:
    """``:memory:`` is qdrant-client's local mode: the code path of a Qdrant server or cluster URL."""
    _default(tmp_path / "edge", folder)
    edge = _contents(tmp_path / "edge")
    with QdrantStore.open(":memory:") as store, Ledger(tmp_path / "ledger.sqlite") as ledger:
        runner = RayIngestRunner(
            HashEncoder(), store, OPTS, encoder_factory=HashEncoder, progress=False, ledger=ledger
        )
        summary = runner.run([folder])
        assert verify(store, ledger).ok
        assert {r.id: dict(r.payload) for r in store.iter_records()} == edge["points"]
    assert summary.written == len(edge["points"])


@pytest.mark.slow  # a local Ray cluster: seconds to start, seconds per pipeline
def test_a_worker_with_another_encoder_fails_with_the_reason(
    tmp_path: Path, folder: Path, ray_session: Any
) -> None:
    with QdrantStore.open(str(tmp_path / "s")) as store:
        runner = RayIngestRunner(
            HashEncoder(),
            store,
            OPTS,
            encoder_factory=functools.partial(HashEncoder, dim=32),
            progress=False,
        )
        with pytest.raises(MmragError, match="give the workers the same model"):
            runner.run([folder])
        with Ledger(default_ledger_path(store)) as ledger:
            assert verify(store, ledger).ok and store.count() == 0


@pytest.mark.slow  # a local Ray cluster: seconds to start, seconds per pipeline
def test_too_small_a_cluster_fails_instead_of_hanging(tmp_path: Path, folder: Path, ray_session: Any) -> None:
    with pytest.raises(ConfigError, match="lower --ray-workers"):
        _ray(tmp_path / "ray", folder, workers=2)


def test_cli_without_ray_names_the_extra(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as if not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    rc = cli.main(["ingest", str(folder), "--store", str(tmp_path / "s"), "--engine", "ray", "-q"])
    assert rc == 2
    assert "pip install 'mmrag[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # failed before opening the store or loading a model


def test_cli_ray_flags_need_the_ray_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["ingest", str(tmp_path), "--store", str(tmp_path / "s"), "--ray-workers", "2", "-q"])
    assert rc == 2 and "--engine ray" in capsys.readouterr().err
