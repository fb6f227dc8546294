"""Package-level guarantees: lazy heavy imports, records, settings, the lazy-import helper."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmrag._lazy import require
from mmrag.config import Settings
from mmrag.errors import ConfigError, MissingExtraError, MmragError
from mmrag.types import Chunk, Hit, chunk_id


def test_importing_the_package_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, mmrag, mmrag.encoders, mmrag.store, mmrag.ingest, mmrag.retriever, mmrag.eval, "
        "mmrag.rerank, mmrag.train, mmrag.api, mmrag.ui, mmrag.cli\n"
        "heavy = [m for m in ('torch', 'open_clip', 'transformers', 'qdrant_edge', 'qdrant_client', "
        "'pypdfium2', 'timm') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'mmrag\[ui\]'"):
        require("definitely_not_installed_module_xyz", "ui")
    assert issubclass(MissingExtraError, MmragError) and issubclass(MissingExtraError, ImportError)


def test_chunk_ids_are_deterministic_and_position_sensitive() -> None:
    assert chunk_id("a", "x", 0) == chunk_id("a", "x", 0)
    assert (
        len({chunk_id("a", "x", 0), chunk_id("a", "x", 1), chunk_id("b", "x", 0), chunk_id("a", "y", 0)}) == 4
    )


def test_chunk_validation() -> None:
    with pytest.raises(ValueError, match="modality"):
        Chunk(id="1", modality="video", source="s", text="t", image=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text"):
        Chunk(id="1", modality="text", source="s", text="", image=None)
    with pytest.raises(ValueError, match="image"):
        Chunk(id="1", modality="image", source="s", text="caption", image=None)


def test_hit_json_keeps_every_score() -> None:
    c = Chunk(id="1", modality="text", source="s", text="t", image=None, metadata={"page": 2})
    d = Hit(c, dense=0.5, sparse=None, fused=None, rerank=1.5, ann_rank=3, final_rank=1).to_dict()
    assert d["scores"] == {"dense": 0.5, "sparse": None, "fused": None, "rerank": 1.5}
    assert (d["ann_rank"], d["final_rank"], d["metadata"]) == (3, 1, {"page": 2})


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {"MMRAG_STORE": "/x", "MMRAG_MODEL": "lite", "MMRAG_THREADS": "1", "MMRAG_DATA": "/d"}
    )
    assert (s.store, s.model, s.threads, str(s.data_path)) == ("/x", "lite", 1, "/d")
    assert Settings.from_env({}).store == "./.mmrag"
    with pytest.raises(ConfigError, match="MMRAG_THREADS"):
        Settings.from_env({"MMRAG_THREADS": "two"})
    with pytest.raises(ConfigError):
        Settings(batch_size=0)
    assert s.with_(store="/y", model=None).model == "lite"
    assert Settings.from_env({}).edge_search_threads == 1
    assert [Settings.from_env({"MMRAG_TENANCY": v}).tenancy for v in ("", "0", "off", "1", "Yes")] == [
        False,
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(ConfigError, match="MMRAG_TENANCY"):  # not read as "off" any more
        Settings.from_env({"MMRAG_TENANCY": "enabled"})
    assert Settings.from_env({"MMRAG_EDGE_SEARCH_THREADS": "4"}).edge_search_threads == 4
    with pytest.raises(ConfigError, match="MMRAG_EDGE_SEARCH_THREADS"):
        Settings.from_env({"MMRAG_EDGE_SEARCH_THREADS": "0"})
