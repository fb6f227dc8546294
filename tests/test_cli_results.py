"""`mmrag search` with grouping, context, MMR and a composed (text + image) query, end to end with
the real `lite` encoder on real files (integration)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmrag.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A paper, three READMEs and a photo."""
    root = tmp_path_factory.mktemp("docs")
    demo = data_dir / "ingest_demo"
    shutil.copy(demo / "pdf" / "layoutparser-paper-2p.pdf", root)
    for name in ("unstructured-README.md", "itm-flickr8k-project-README.md", "simple-table.md"):
        shutil.copy(demo / "markdown" / name, root)
    shutil.copy(next(iter(sorted((demo / "images" / "photos").glob("*.jpg")))), root / "photo.jpg")
    return root


@pytest.fixture(scope="module")
def store(docs: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = docs
    location = str(tmp_path_factory.mktemp("store") / "s")
    assert main(["ingest", str(root), "--store", location, "--quiet", "--json"]) == 0
    return location


def _search(capsys: pytest.CaptureFixture[str], store: str, *argv: str) -> dict[str, object]:
    capsys.readouterr()
    code = main(["search", *argv, "--store", store, "--json", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result: dict[str, object] = json.loads(out.out)
    return result


def test_search_groups_expands_and_diversifies(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    q = "document layout analysis"
    plain = _search(capsys, store, q, "--k", "3")["hits"]
    grouped = _search(capsys, store, q, "--k", "3", "--group-by", "source", "--expand", "1")["hits"]
    assert isinstance(plain, list) and isinstance(grouped, list)
    assert len({h["source"] for h in plain}) < 3  # the paper fills most of the plain top 3
    assert len(grouped) == 3 and len({h["source"] for h in grouped}) == 3
    assert all(isinstance(h["context"], list) for h in grouped) and any(h["context"] for h in grouped)
    assert all(c["source"] == h["source"] for h in grouped for c in h["context"])
    two = _search(capsys, store, q, "--k", "2", "--group-by", "source", "--group-size", "2")["hits"]
    assert isinstance(two, list) and len({h["source"] for h in two}) == 2 and len(two) <= 4
    mmr = _search(capsys, store, q, "--k", "3", "--mmr", "0.5")["hits"]
    assert isinstance(mmr, list) and len(mmr) == 3 and plain[0]["id"] == mmr[0]["id"]

    capsys.readouterr()
    assert main(["search", q, "--store", store, "--k", "1", "--expand", "1", "--quiet"]) == 0
    assert "\n      + [" in capsys.readouterr().out  # the text report lists the context under the hit


def test_composed_query_on_the_cli(store: str, docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = str(docs / "photo.jpg")
    image_only = _search(capsys, store, "--image", photo, "--k", "3")
    leaning = _search(capsys, store, "a photo", "--image", photo, "--image-weight", "1", "--k", "3")
    assert [h["id"] for h in leaning["hits"]] == [h["id"] for h in image_only["hits"]]  # type: ignore[union-attr]
    assert leaning["query"] == "a photo" and leaning["image"] == photo
    assert main(["search", "x", "--image", photo, "--image-weight", "2", "--store", store, "--quiet"]) == 2
    assert "image_weight" in capsys.readouterr().err
