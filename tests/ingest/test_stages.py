"""The ingest stages: one hash per file, a frozen picklable context, and a distributor that embeds
before the writer (the Ray engine's shape, in-process) writing exactly what the default engine writes."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmrag.encoders.base import DualEncoder, PreparedImage
from mmrag.ingest import IngestOptions, IngestRunner, Ledger
from mmrag.ingest.ledger import default_ledger_path
from mmrag.ingest.stages import Embedder, FileResult, Parser, Precomputed, Reader, RunContext, VectorSource
from mmrag.ingest.stages.reader import Todo
from mmrag.store import QdrantStore
from mmrag.types import IngestSummary
from tests.fakes import HashEncoder

DEMO = {
    "markdown/codeblock.md": "md/codeblock.md",
    "text/war-and-peace-chapter1.txt": "war-and-peace.txt",
    "html/steeljis-datasheet.html": "steeljis.html",
    "images/photos/coffee.png": "img/coffee.png",
    "pdf/corrosion-paper-figures-tables-1p.pdf": "corrosion.pdf",
}
OPTS = IngestOptions(batch_size=4, text_window=8, ocr=False)


@pytest.fixture
def folder(tmp_path: Path, data_dir: Path) -> Path:
    root = tmp_path / "docs"
    for src, dst in DEMO.items():
        (root / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / "ingest_demo" / src, root / dst)
    (root / "empty.txt").write_bytes(b"")
    (root / "md" / "again.md").symlink_to(root / "md" / "codeblock.md")  # the same file twice
    return root


class EmbedFirst:
    """Parses and embeds before the writer, three files at a time, as the Ray engine's workers do."""

    def __init__(self, encoder: DualEncoder) -> None:
        self.encoder = encoder

    def results(
        self, ctx: RunContext, reader: Reader, todo: Todo, prepare: Any = None
    ) -> Iterator[FileResult]:
        parser, embedder = Parser(ctx), Embedder(self.encoder, ctx)
        parsed = [parser.parse(reader.read(path, root)) for path, root in todo]
        for start in range(0, len(parsed), 3):
            yield from embedder.embed_files(parsed[start : start + 3])

    def vector_source(self, ctx: RunContext, encoder: DualEncoder, summary: IngestSummary) -> VectorSource:
        return Precomputed(summary)


def _contents(store_dir: Path) -> dict[str, Any]:
    with QdrantStore.open(str(store_dir)) as store, Ledger(default_ledger_path(store)) as ledger:
        records = list(store.iter_records(with_vectors=True))
        entries = {s: (e.hash, e.params, sorted(ledger.chunk_ids(s))) for s, e in ledger.entries().items()}
        return {
            "points": {r.id: dict(r.payload) for r in records},
            "vectors": {r.id: {k: np.round(v, 6).tolist() for k, v in r.vectors.items()} for r in records},
            "ledger": entries,
        }


def _run(store_dir: Path, folder: Path, distributor: Any = None) -> dict[str, Any]:
    with QdrantStore.open(str(store_dir)) as store:
        runner = IngestRunner(HashEncoder(), store, OPTS, progress=False, distributor=distributor)
        return runner.run([folder]).to_dict()


def test_a_distributor_that_embeds_first_writes_what_the_default_engine_writes(
    tmp_path: Path, folder: Path
) -> None:
    default = _run(tmp_path / "default", folder)
    first = _run(tmp_path / "first", folder, EmbedFirst(HashEncoder()))
    keys = ["files_seen", "files_loaded", "chunks", "embedded", "written", "already_stored", "skipped"]
    assert {k: first[k] for k in keys} == {k: default[k] for k in keys}
    assert first["chunks"]["image"] >= 2 and set(first["timings"]) == set(default["timings"])
    assert _contents(tmp_path / "first") == _contents(tmp_path / "default")


def test_each_file_is_hashed_once_by_the_reader(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_second_hash(data: bytes | str) -> str:
        raise AssertionError("a loader hashed a file the reader had already hashed")

    # load_document hashes only when no digest is given: the runner always passes the reader's.
    monkeypatch.setattr("mmrag.ingest.loaders.content_hash", no_second_hash)
    summary = _run(tmp_path / "s", folder)
    assert summary["files_loaded"] == len(DEMO) and summary["written"] > 0


def test_run_context_and_file_results_are_frozen_and_cross_processes(tmp_path: Path, folder: Path) -> None:
    ctx = OPTS.context(HashEncoder(), "hash-test", {"coffee.png": ["a cup"]})
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.vector = "other"  # type: ignore[misc]
    res = Parser(ctx).parse(Reader(ctx, {}).read(folder / "img" / "coffee.png", folder))
    assert res.status == "load" and res.raw is None and res.chunks[0].text == "a cup"
    (embedded,) = Embedder(HashEncoder(), ctx).embed_files([res])
    back = pickle.loads(pickle.dumps(embedded))
    assert back.vectors is not None and back.vectors.shape == (1, ctx.dim) and not back.images
    assert back.digest == res.chunks[0].metadata["file_hash"]


def test_ledger_commits_wait_for_a_store_flush_and_flushes_are_batched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    for i in range(30):
        (root / f"note-{i:02d}.txt").write_text(f"note number {i} about topic {i % 7}\n")
    monkeypatch.setattr("mmrag.ingest.stages.writer.FLUSH_POINTS", 8)
    monkeypatch.setattr("mmrag.ingest.stages.writer.FLUSH_SECONDS", 1e9)
    events: list[str] = []
    real_commit = Ledger.commit

    def commit(self: Ledger, items: Any) -> None:
        events.append(f"commit {len(items)}")
        real_commit(self, items)

    monkeypatch.setattr(Ledger, "commit", commit)
    opts = IngestOptions(batch_size=4, text_window=4, ocr=False)
    with QdrantStore.open(str(tmp_path / "store")) as store:
        upsert, flush = store.backend.upsert, store.backend.flush

        def logged_upsert(points: Any, *, flush: bool = True) -> None:
            events.append("upsert" if not flush else "upsert+flush")
            upsert(points, flush=flush)

        def logged_flush() -> None:
            events.append("flush")
            flush()

        monkeypatch.setattr(store.backend, "upsert", logged_upsert)
        monkeypatch.setattr(store.backend, "flush", logged_flush)
        summary = IngestRunner(HashEncoder(), store, opts, progress=False).run([root])
        assert store.count() == 30
    assert summary.files_loaded == 30 and summary.written == 30
    assert events.count("upsert") == 8 and events.count("flush") == 4  # 30 points, a flush per 8 (+ the end)
    unflushed = False
    for e in events:
        if e == "upsert":
            unflushed = True
        elif e == "flush":
            unflushed = False
        else:
            assert not unflushed, f"a ledger commit before the store flushed its chunks: {events}"
    assert sum(int(e.split()[1]) for e in events if e.startswith("commit")) == 30
    with Ledger(default_ledger_path(store)) as ledger:
        assert len(ledger.entries()) == 30


class PreparingEncoder(HashEncoder):
    """A hash encoder that, like the open_clip one, takes images it prepared itself."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared_on: set[str] = set()
        self.given: list[str] = []

    def prepare_image(self, image: Any) -> PreparedImage:
        self.prepared_on.add(threading.current_thread().name)
        return PreparedImage(self.id, image.convert("RGB"))

    def encode_image(self, images: Any, *, batch_size: int | None = None) -> Any:
        self.given += [type(im).__name__ for im in images]
        return super().encode_image([im.data if isinstance(im, PreparedImage) else im for im in images])


def test_the_default_engine_prepares_images_on_its_parsing_threads(tmp_path: Path, folder: Path) -> None:
    encoder = PreparingEncoder()
    with QdrantStore.open(str(tmp_path / "store")) as store:
        summary = IngestRunner(encoder, store, OPTS, progress=False).run([folder])
        stored = {r.id: r.vectors for r in store.iter_records(with_vectors=True)}
    assert summary.chunks["image"] >= 2 and encoder.given
    assert set(encoder.given) == {"PreparedImage"}  # photos and PDF figures alike
    assert encoder.prepared_on and all(name.startswith("mmrag-read") for name in encoder.prepared_on)
    # The same vectors as when the encoder prepares them itself.
    _run(tmp_path / "plain", folder)
    with QdrantStore.open(str(tmp_path / "plain")) as plain:
        again = {r.id: r.vectors for r in plain.iter_records(with_vectors=True)}
    assert again.keys() == stored.keys()
    for cid, vectors in stored.items():
        np.testing.assert_allclose(vectors["hash-test"], again[cid]["hash-test"], atol=1e-6)
