"""The ingest runner on a real Qdrant Edge store with a fake encoder (the model is not the subject)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mmrag.errors import ConfigError
from mmrag.ingest import IngestOptions, IngestRunner, read_captions
from mmrag.store import QdrantStore
from tests.fakes import HashEncoder


@pytest.fixture
def folder(tmp_path: Path, data_dir: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("Qdrant stores vectors. " * 50)
    (root / "b.md").write_text("# Title\n\nDense passage retrieval uses two encoders.\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "junk.xyz").write_text("what is this")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "red.png")
    shutil.copy(next((data_dir / "flickr8k" / "images").glob("*.jpg")), root / "photo.jpg")
    return root


def _run(store_dir: Path, folder: Path, enc: HashEncoder, **kw: object) -> dict[str, object]:
    with QdrantStore.open(str(store_dir)) as store:
        summary = IngestRunner(enc, store, IngestOptions(batch_size=8), progress=False).run([folder], **kw)
        return summary.to_dict() | {"count": store.count()}


def test_ingest_summary_and_idempotent_rerun(tmp_path: Path, folder: Path) -> None:
    enc = HashEncoder()
    first = _run(tmp_path / "s", folder, enc)
    assert first["files_seen"] == 6 and first["files_loaded"] == 4
    skipped = {Path(str(s["path"])).name: s["reason"] for s in first["skipped"]}  # type: ignore[attr-defined]
    assert set(skipped) == {"empty.txt", "junk.xyz"}
    assert "empty" in skipped["empty.txt"] and "unsupported" in skipped["junk.xyz"]
    assert first["chunks"]["image"] == 2 and first["chunks"]["text"] >= 2  # type: ignore[index]
    assert first["embedded"] == first["written"] == first["count"]
    assert set(first["timings"]) >= {"read", "embed_text", "embed_image", "write"}  # type: ignore[arg-type]
    calls = enc.text_calls + enc.image_calls

    second = _run(tmp_path / "s", folder, enc)
    assert second["embedded"] == 0 and second["written"] == 0
    assert second["already_stored"] == first["written"]
    assert second["count"] == first["count"]
    assert enc.text_calls + enc.image_calls == calls  # nothing re-embedded


def test_edited_file_replaces_only_its_chunks(tmp_path: Path, folder: Path) -> None:
    enc = HashEncoder()
    first = _run(tmp_path / "s", folder, enc)
    (folder / "b.md").write_text("# Title\n\nSomething else entirely now.\n")
    second = _run(tmp_path / "s", folder, enc)
    assert second["embedded"] == 1 and second["written"] == 1
    assert second["files_changed"] == 1 and second["files_unchanged"] == 3
    assert second["deleted"] == 1  # the old version of b.md's chunk: the ledger's job
    assert second["count"] == first["count"]


def test_captions_attach_to_images(tmp_path: Path, folder: Path) -> None:
    caps = tmp_path / "caps.jsonl"
    caps.write_text(json.dumps({"image": "red.png", "captions": ["a red square", "plain red"]}) + "\n")
    enc = HashEncoder()
    _run(tmp_path / "s", folder, enc, captions=read_captions(caps))
    with QdrantStore.open(str(tmp_path / "s")) as store:
        texts = {
            Path(r.payload["image"]).name: r.payload["text"]
            for r in store.iter_records({"modality": "image"})
        }
    assert texts["red.png"] == "a red square | plain red"
    assert texts["photo.jpg"] is None


def test_limit_and_bad_arguments(tmp_path: Path, folder: Path) -> None:
    assert _run(tmp_path / "s", folder, HashEncoder(), limit=2)["files_seen"] == 2
    with pytest.raises(ConfigError, match="does not exist"):
        _run(tmp_path / "s2", tmp_path / "missing", HashEncoder())
    with pytest.raises(ConfigError):
        IngestOptions(batch_size=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1"):
        read_captions(bad)


def test_oversized_file_is_skipped(tmp_path: Path, folder: Path) -> None:
    (folder / "big.txt").write_text("x " * 600_000)
    with QdrantStore.open(str(tmp_path / "s")) as store:
        summary = IngestRunner(HashEncoder(), store, IngestOptions(max_file_mb=1.0), progress=False).run(
            [folder]
        )
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert "over the 1 MB limit" in reasons["big.txt"]


def test_a_second_encoder_embeds_everything_again_beside_the_first(tmp_path: Path, folder: Path) -> None:
    first = _run(tmp_path / "s", folder, HashEncoder())
    second = _run(tmp_path / "s", folder, HashEncoder(dim=32, encoder_id="hash-other"))
    assert second["embedded"] == second["written"] == first["written"]
    assert second["already_stored"] == 0 and second["count"] == first["count"]
    third = _run(tmp_path / "s", folder, HashEncoder(dim=32, encoder_id="hash-other"))
    assert third["embedded"] == 0
    with QdrantStore.open(str(tmp_path / "s")) as store:
        assert set(store.vectors) == {"hash-test", "hash-other"}
        assert store.default_vector == "hash-test"  # switching the default is an explicit decision


def test_memory_store_keeps_its_ledger_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `:memory:` store (any collection) never writes a ledger file into the working directory."""
    from mmrag.ingest.ledger import default_ledger_path
    from mmrag.store import QdrantStore

    monkeypatch.chdir(tmp_path)
    with QdrantStore.open(":memory:") as store:
        assert default_ledger_path(store) == ":memory:"
        (tmp_path / "a.txt").write_text("memory stores keep no files " * 10)
        IngestRunner(HashEncoder(), store, progress=False).run([tmp_path / "a.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


class _CallSizes(HashEncoder):
    """Records how many items each encoder call gets."""

    def __init__(self) -> None:
        super().__init__()
        self.text_sizes: list[int] = []
        self.image_sizes: list[int] = []

    def encode_text(self, texts, *, batch_size=None):  # type: ignore[no-untyped-def]
        self.text_sizes.append(len(texts))
        return super().encode_text(texts, batch_size=batch_size)

    def encode_image(self, images, *, batch_size=None):  # type: ignore[no-untyped-def]
        self.image_sizes.append(len(images))
        return super().encode_image(images, batch_size=batch_size)


def test_text_is_embedded_in_windows_and_images_in_batches(tmp_path: Path) -> None:
    """Text chunks gather up to text_window per encoder call (the encoder sorts them by length:
    little padding); decoded images are written every batch_size, so few are held at a time."""
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(30):
        (root / f"t{i:02d}.txt").write_text(f"note {i} about vectors and retrieval")
        Image.new("RGB", (16, 16), (i * 8, 0, 0)).save(root / f"t{i:02d}.png")
    enc = _CallSizes()
    with QdrantStore.open(str(tmp_path / "s")) as store:
        opts = IngestOptions(batch_size=4, text_window=20)
        summary = IngestRunner(enc, store, opts, progress=False).run([root])
        assert store.count() == 60 and summary.embedded == 60
    assert sum(enc.text_sizes) == 30 and sum(enc.image_sizes) == 30
    assert max(enc.image_sizes) == 4 and max(enc.text_sizes) <= 20
    # Texts wait for the window while images flush: text calls are larger than a batch.
    assert max(enc.text_sizes) > 4
    with pytest.raises(ConfigError, match="text_window"):
        IngestOptions(text_window=0)
