"""The Streamlit app driven by Streamlit's ``AppTest`` against a real Qdrant Edge store and ``lite``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mmrag.store import QdrantStore
from mmrag.ui import APP_PATH

pytestmark = pytest.mark.integration

# dense ran; sparse, fused and rerank did not ("—"); no stage moved the hit ("=")
SCORES_LINE = re.compile(
    r"dense \*\*(\d\.\d{4})\*\* · sparse \*\*—\*\* · fused \*\*—\*\* · rerank \*\*—\*\* "
    r"· rank (\d+) → (\d+) \*\*=\*\*"
)


def _app(monkeypatch: pytest.MonkeyPatch, store: Path | str, **env: str) -> AppTest:
    monkeypatch.setenv("MMRAG_STORE", str(store))
    monkeypatch.setenv("MMRAG_THREADS", "1")  # the same cached encoder as the ui_encoder fixture
    monkeypatch.delenv("MMRAG_MODEL", raising=False)
    monkeypatch.delenv("MMRAG_INGEST_ROOT", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return AppTest.from_file(str(APP_PATH), default_timeout=90)


def _submit(at: AppTest, label: str) -> AppTest:
    [button] = [b for b in at.button if b.label == label]
    return button.click().run()


def _markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def _no_crash(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_text_query_shows_cards_scores_timings_and_chart(
    monkeypatch: pytest.MonkeyPatch, ui_store: Path
) -> None:
    at = _app(monkeypatch, ui_store).run()
    _no_crash(at)
    assert not at.error
    # The store has BM25 vectors, so hybrid is on by default (the store's model set); no reranker is
    # configured or recorded, so the rerank toggle is off and says why.
    assert not at.toggle(key="hybrid").disabled and at.toggle(key="hybrid").value
    assert at.toggle(key="rerank").disabled and not at.toggle(key="rerank").value
    assert any("not available" in c.value for c in at.caption)

    at.toggle(key="hybrid").set_value(False)  # dense only: its scores order the cards
    at.text_input(key="q").input("layout detection models")
    at.number_input(key="k").set_value(3)
    _submit(at, "Search")
    _no_crash(at)
    assert not at.error
    lines = [SCORES_LINE.search(m) for m in _markdown(at)]
    scores = [(float(m.group(1)), int(m.group(2)), int(m.group(3))) for m in lines if m]
    assert len(scores) == 3  # k cards
    assert [s[2] for s in scores] == [1, 2, 3]
    assert scores == sorted(scores, key=lambda s: -s[0]) and scores[0][0] > 0.3
    # the best hits come from the LayoutParser paper, with its page, and the query words marked
    md = "\n".join(_markdown(at))
    assert "layoutparser-paper-2p.pdf` · page" in md
    assert "<mark>layout</mark>" in md.lower()
    assert {m.label for m in at.metric} >= {"encode (ms)", "ann (ms)", "total (ms)"}
    assert any(h.value.startswith("Top 3 of") for h in at.subheader)
    charts = at.get("vega_lite_chart")  # score by rank and histogram of the whole pool
    assert len(charts) == 2
    assert all("top 3 (shown)" in c.proto.spec and "rest of the pool" in c.proto.spec for c in charts)


def test_inspect_shows_whole_chunk_neighbours_and_metadata(
    monkeypatch: pytest.MonkeyPatch, ui_store: Path
) -> None:
    at = _app(monkeypatch, ui_store).run()
    at.text_input(key="q").input("layout detection models")
    _submit(at, "Search")
    first = next(b for b in at.button if b.label == "Inspect")
    first.click().run()
    _no_crash(at)
    md = "\n".join(_markdown(at))
    assert "##### Whole chunk" in md and "##### Neighbours in" in md
    assert any(e.label.startswith(("before", "after")) for e in at.expander)
    [meta] = at.json
    assert '"layoutparser-paper-2p.pdf"' not in meta.value  # the full source path, not a short name
    assert "layoutparser-paper-2p.pdf" in meta.value and '"page"' in meta.value
    assert any(b.label == "Close" for b in at.button)


def test_image_query_and_broken_image(
    monkeypatch: pytest.MonkeyPatch, ui_store: Path, flickr_images: list[Path]
) -> None:
    at = _app(monkeypatch, ui_store).run()
    query = flickr_images[2]
    at.file_uploader(key="qimg").upload(query.name, query.read_bytes(), "image/jpeg")
    at.selectbox(key="modality").set_value("image")
    _submit(at, "Search")
    _no_crash(at)
    assert not at.error
    md = _markdown(at)
    # the photo itself is in the store: it comes first with cosine 1
    top = next(m for m in md if m.startswith("**#1**"))
    assert top.startswith("**#1** · image ·") and query.name in top
    first = next(SCORES_LINE.search(m) for m in md if SCORES_LINE.search(m))
    assert first is not None and float(first.group(1)) > 0.999
    assert len(at.get("image")) >= 3  # thumbnails
    assert any("untrained" in w.value for w in at.warning)  # lite's heads are not trained: said so

    at.file_uploader(key="qimg").upload("broken.jpg", b"\xff\xd8\xff not a jpeg", "image/jpeg")
    _submit(at, "Search")
    _no_crash(at)
    assert any("broken.jpg is not a readable image" in e.value for e in at.error)


def test_no_results_and_empty_store(monkeypatch: pytest.MonkeyPatch, ui_store: Path, tmp_path: Path) -> None:
    at = _app(monkeypatch, ui_store).run()
    readme = next(s for s in at.multiselect(key="sources").options if "README" in s)
    at.multiselect(key="sources").select(readme)
    at.selectbox(key="modality").set_value("image")  # a markdown file has no images
    at.text_input(key="q").input("anything")
    _submit(at, "Search")
    _no_crash(at)
    assert any(i.value.startswith("No results.") and "filters" in i.value for i in at.info)

    empty = _app(monkeypatch, tmp_path / "empty").run()
    _no_crash(empty)
    assert any("is empty" in i.value for i in empty.info)
    assert not empty.text_input  # no search form on an empty store


def test_locked_store_and_bad_model_are_messages(
    monkeypatch: pytest.MonkeyPatch, ui_store: Path, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mmrag.store import QdrantStore; "
            f"s = QdrantStore.open({str(ui_store)!r}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        at = _app(monkeypatch, ui_store).run()
        _no_crash(at)
        assert any("locked by another process" in e.value for e in at.error)
        at.sidebar.radio(key="page").set_value("Collection").run()
        _no_crash(at)
        assert any("locked by another process" in e.value for e in at.error)
    finally:
        holder.communicate("", timeout=30)

    bad = _app(monkeypatch, ui_store, MMRAG_MODEL=str(tmp_path / "no-such-checkpoint")).run()
    _no_crash(bad)
    assert any("encoder could not be loaded" in e.value for e in bad.error)


def test_collection_page_counts_and_vectors(monkeypatch: pytest.MonkeyPatch, ui_store: Path) -> None:
    with QdrantStore.open(str(ui_store)) as store:
        stats = store.stats()
    at = _app(monkeypatch, ui_store).run()
    at.sidebar.radio(key="page").set_value("Collection").run()
    _no_crash(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["points"] == str(stats["points"])
    assert metrics["text chunks"] == str(stats["by_modality"]["text"])
    assert metrics["images"] == str(stats["by_modality"]["image"])
    assert metrics["sources"] == str(stats["sources"])
    vectors, by_source = at.dataframe[0].value, at.dataframe[1].value
    assert list(vectors["vector"]) == ["lite-untrained-v1"] and list(vectors["model spec"]) == ["lite"]
    assert int(by_source["chunks"].sum()) == stats["points"]


def test_collection_ingest_folder_and_upload(
    monkeypatch: pytest.MonkeyPatch, fresh_store: Path, tmp_path: Path, data_dir: Path
) -> None:
    root = tmp_path / "allowed"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.md").write_text("# Harbour\n\nThe lighthouse keeper logs every ship that passes.\n")
    at = _app(monkeypatch, fresh_store, MMRAG_INGEST_ROOT=str(root)).run()
    at.sidebar.radio(key="page").set_value("Collection").run()
    before = int(next(m.value for m in at.metric if m.label == "points"))

    at.text_input(key="ingest_path").input("../../etc")
    _submit(at, "Ingest folder")
    _no_crash(at)
    assert any("outside the folders this app may ingest from" in e.value for e in at.error)

    at.text_input(key="ingest_path").input("notes")
    _submit(at, "Ingest folder")
    _no_crash(at)
    assert not at.error
    assert any("Ingested 1 of 1 files: 1 text chunks" in s.value for s in at.success)
    assert int(next(m.value for m in at.metric if m.label == "points")) == before + 1

    photo = data_dir / "ingest_demo" / "images" / "photos" / "rocket.jpg"
    at.file_uploader(key="ingest_files").set_value(
        [(photo.name, photo.read_bytes(), "image/jpeg"), ("empty.txt", b"", "text/plain")]
    )
    _submit(at, "Upload and ingest")
    _no_crash(at)
    assert any("Ingested 1 of 2 files" in s.value and "1 images" in s.value for s in at.success)
    assert any("empty.txt" in w.value for w in at.warning)  # the skip and its reason are shown
    assert int(next(m.value for m in at.metric if m.label == "points")) == before + 2
    assert list((fresh_store / "uploads").glob("*/rocket.jpg"))  # kept: the image chunk points at it
    QdrantStore.open(str(fresh_store)).close()  # the app closed the store after each run


def test_default_search_runs_the_store_model_set(monkeypatch: pytest.MonkeyPatch, fresh_store: Path) -> None:
    """A store that records a default reranker: both toggles start on, and a plain search reranks."""
    from mmrag.store import QdrantStore
    from mmrag.types import RerankerSpec

    with QdrantStore.open(str(fresh_store)) as store:
        store.meta.set_reranker(RerankerSpec("minilm", max_length=64))  # offline MiniLM, untrained head
    at = _app(monkeypatch, fresh_store).run()
    _no_crash(at)
    assert at.toggle(key="hybrid").value and at.toggle(key="rerank").value
    at.text_input(key="q").input("layout detection models")
    at.number_input(key="k").set_value(3)
    _submit(at, "Search")
    _no_crash(at)
    assert not at.error
    md = "\n".join(_markdown(at))
    # every stage's score is on the cards: dense, BM25, fused, and the cross-encoder's
    assert re.search(r"fused \*\*\d\.\d{4}\*\* · rerank \*\*-?\d+\.\d{4}\*\*", md), md[:2000]
    assert {m.label for m in at.metric} >= {"sparse (ms)", "fuse (ms)", "rerank (ms)"}
