"""Bad input never stops a run: each bad file is skipped with a reason, in the summary and in the
JSON report; and a hypothesis fuzz over the loaders with corrupted real files never crashes."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmrag.errors import LoaderError
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.ingest.chunking import ChunkingOptions
from mmrag.ingest.loaders import LoadOptions, load_document
from mmrag.store import QdrantStore
from tests.fakes import HashEncoder

_ENCRYPTED_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"3 0 obj<</Filter/Standard/V 1/R 2/O(0123456789abcdef0123456789abcdef)"
    b"/U(0123456789abcdef0123456789abcdef)/P -4>>endobj\n"
    b"trailer<</Root 1 0 R/Encrypt 3 0 R/ID[<00><00>]>>\n%%EOF\n"
)


@pytest.fixture
def bad_folder(tmp_path: Path, data_dir: Path) -> Path:
    demo = data_dir / "ingest_demo"
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.txt").write_text("A perfectly fine note about vectors. " * 5)
    (root / "zero.md").write_bytes(b"")
    jpg = (demo / "images/photos/2419221084_01a14176b4.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    pdf = (demo / "pdf/layoutparser-paper-2p.pdf").read_bytes()
    (root / "truncated.pdf").write_bytes(pdf[:2000])
    (root / "encrypted.pdf").write_bytes(_ENCRYPTED_PDF)
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (root / "huge.txt").write_bytes(b"word " * 300_000)  # 1.5 MB, over the 1 MB limit below
    # A decompression bomb: a small PNG file that decodes to 10,000 x 10,000 pixels.
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")
    (root / "bomb.png").write_bytes(buf.getvalue())
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the root " * 10)
    (root / "escape.txt").symlink_to(outside)
    (root / "unreadable.txt").write_text("locked away " * 10)
    (root / "unreadable.txt").chmod(0)
    return root


def test_every_bad_file_is_skipped_with_a_reason_and_reported(tmp_path: Path, bad_folder: Path) -> None:
    from mmrag.cli import main

    report = tmp_path / "report.json"
    opts = IngestOptions(max_file_mb=1.0, max_image_pixels=50_000_000)
    with QdrantStore.open(str(tmp_path / "s")) as store:
        summary = IngestRunner(HashEncoder(), store, opts, progress=False).run([bad_folder])
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert summary.files_loaded >= 1 and summary.written >= 1  # the run went on
    assert "empty" in reasons["zero.md"]
    assert "corrupt image" in reasons["truncated.jpg"]
    assert "PDF" in reasons["truncated.pdf"]
    assert "encrypted" in reasons["encrypted.pdf"]
    assert "binary" in reasons["binary.txt"]
    assert "over the 1 MB limit" in reasons["huge.txt"]
    assert "100 Mpx" in reasons["bomb.png"] and "decompression bomb" in reasons["bomb.png"]
    assert "outside the ingest root" in reasons["escape.txt"]
    if os.geteuid() == 0:
        # root reads files whatever their mode bits say: nothing to skip, and we do not pretend.
        assert "unreadable.txt" not in reasons
    else:
        assert "Permission denied" in reasons["unreadable.txt"]

    # The CLI writes the same skips, machine-readable, with --report.
    args = ["ingest", str(bad_folder), "--store", str(tmp_path / "s2"), "--max-file-mb", "1", "-q"]
    code = main([*args, "--chunk-words", "160", "--report", str(report)])
    assert code == 0
    data = json.loads(report.read_text())
    assert {Path(s["path"]).name for s in data["skipped"]} == set(reasons)
    assert all(s["reason"] for s in data["skipped"])


# --------------------------------------------------------------------------- fuzz

_SAMPLES = [
    "pdf/corrosion-paper-figures-tables-1p.pdf",
    "html/paul-graham-how-to-get-new-ideas.html",
    "markdown/codeblock.md",
    "markdown/simple-table.md",
    "text/war-and-peace-chapter1.txt",
    "images/photos/917574521_74fab68514.jpg",
    "images/photos/chelsea.png",
]
_OPTS = LoadOptions(chunking=ChunkingOptions(words=40, overlap=4), ocr=False, max_image_pixels=4_000_000)


def _corrupt(data: bytes, edits: list[tuple[int, int]], cut: float | None, junk: bytes) -> bytes:
    out = bytearray(data)
    for pos, val in edits:
        out[pos % len(out)] = val
    if cut is not None:
        out = out[: int(len(out) * cut)]
    return bytes(out) + junk


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sample=st.sampled_from(_SAMPLES),
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), max_size=40),
    cut=st.none() | st.floats(0.0, 1.0),
    junk=st.binary(max_size=64),
)
def test_fuzzed_real_files_never_crash_a_loader(
    data_dir: Path, tmp_path: Path, sample: str, edits: list[tuple[int, int]], cut: float | None, junk: bytes
) -> None:
    original = data_dir / "ingest_demo" / sample
    path = tmp_path / original.name
    data = _corrupt(original.read_bytes(), edits, cut, junk)
    try:
        doc = load_document(path, data, opts=_OPTS)
    except LoaderError:
        return  # a skip with a reason: the only acceptable failure
    assert doc.chunks and all(c.source for c in doc.chunks)
