"""``--on-unreadable keep|remove``: a stored file that no longer loads keeps or loses its chunks, and
the summary says which, with the reason (real Edge store, fake encoder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.errors import ConfigError
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.ingest.ledger import Ledger, verify
from mmrag.store import QdrantStore
from tests.fakes import HashEncoder


def _ingest(store_dir: Path, folder: Path, policy: str = "keep") -> tuple[dict[str, object], str, int]:
    opts = IngestOptions(batch_size=8, on_unreadable=policy)
    with QdrantStore.open(str(store_dir)) as store:
        summary = IngestRunner(HashEncoder(), store, opts, progress=False).run([folder])
        with Ledger(store_dir / "ledger.sqlite") as ledger:
            assert verify(store, ledger).ok
        return summary.to_dict(), summary.to_text(str(store_dir), store.count()), store.count()


@pytest.mark.parametrize("policy", ["keep", "remove"])
def test_a_file_that_becomes_unreadable(tmp_path: Path, policy: str) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Qdrant stores vectors. " * 40)
    (folder / "b.txt").write_text("The ledger records every file. " * 40)
    _, _, before = _ingest(tmp_path / "s", folder)
    (folder / "b.txt").write_bytes(b"")  # now fails to load: an empty file
    summary, text, after = _ingest(tmp_path / "s", folder, policy)
    with QdrantStore.open(str(tmp_path / "s")) as store:
        b_points = store.count(filters={"source": str((folder / "b.txt").resolve())})
    if policy == "keep":
        assert after == before and b_points > 0
        assert [s["path"] for s in summary["kept_stale"]] == [str(folder / "b.txt")]  # type: ignore[index]
        assert "kept stale" in text and "empty" in text
        assert summary["removed_unreadable"] == []
    else:
        assert after < before and b_points == 0
        assert len(summary["removed_unreadable"]) == 1  # type: ignore[arg-type]
        assert "removed" in text and summary["kept_stale"] == []


def test_on_unreadable_rejects_other_values() -> None:
    with pytest.raises(ConfigError, match=r"keep.*remove"):
        IngestOptions(on_unreadable="drop")
