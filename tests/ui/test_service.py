"""The app's non-Streamlit logic on a real Qdrant Edge store with the hashing fake encoder (fast)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from mmrag.cli import build_parser
from mmrag.config import Settings
from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError, StoreError
from mmrag.store import QdrantStore
from mmrag.types import Chunk, Hit, chunk_id
from mmrag.ui import APP_PATH, app_environment, streamlit_command
from mmrag.ui.service import (
    STORE_LOCK,
    QueryRequest,
    allowed_roots,
    build_retriever,
    capability_notes,
    common_root,
    fmt_score,
    highlight,
    load_query_image,
    neighbours,
    open_store,
    query_terms,
    rank_shift,
    resolve_ingest_folder,
    run_query,
    save_uploads,
)
from tests.fakes import HashEncoder


def _text(source: str, text: str, position: int, **meta: object) -> Chunk:
    return Chunk(
        id=chunk_id(source, text, position),
        modality="text",
        source=source,
        text=text,
        image=None,
        metadata={"position": position, **meta},
    )


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """Two sources: a 'paper' of 5 chunks over 2 pages (written out of order) and a one-chunk note."""
    enc = HashEncoder()
    paper = [
        _text("/docs/paper.pdf", f"section {i} about {w}", i, page=1 + i // 3)
        for i, w in enumerate(["harbours", "lighthouses", "ships", "tides", "storms"])
    ]
    note = [_text("/docs/note.md", "a note about ships and tides", 0, tenant="acme")]
    chunks = [paper[3], paper[0], paper[4], paper[1], paper[2], *note]
    loc = tmp_path / "store"
    with QdrantStore.open(str(loc)) as store:
        vec = store.ensure_vector(vector_spec(enc))
        store.upsert_chunks(chunks, enc.encode_text([c.text or "" for c in chunks]), vec)
    return loc


def _hit(ann: int, final: int) -> Hit:
    return Hit(
        _text("s", "t", 0), dense=0.5, sparse=None, fused=None, rerank=None, ann_rank=ann, final_rank=final
    )


def test_highlight_escapes_html_and_marks_whole_words() -> None:
    out = highlight("Ships <b>& shipping</b>: the SHIP ships.", "ship ships")
    assert out == (
        "<mark>Ships</mark> &lt;b&gt;&amp; shipping&lt;/b&gt;: the <mark>SHIP</mark> <mark>ships</mark>."
    )
    assert highlight("<i>x</i>", None) == "&lt;i&gt;x&lt;/i&gt;"
    assert highlight("one two three four", "two", limit=7) == "one <mark>two</mark> …"
    assert query_terms("the Dense  passage, of a") == ["passage", "dense"]


def test_scores_and_rank_shift_markers() -> None:
    assert fmt_score(None) == "—" and fmt_score(0.123456) == "0.1235"
    assert rank_shift(_hit(5, 2)) == "▲3" and rank_shift(_hit(1, 4)) == "▼3" and rank_shift(_hit(2, 2)) == "="
    notes = capability_notes({"hybrid": False, "rerank": True})
    assert set(notes) == {"hybrid"} and notes["hybrid"].startswith("not available")


def test_neighbours_follow_reading_order(store_dir: Path) -> None:
    with QdrantStore.open(str(store_dir)) as store:
        ids = [r.id for r in store.iter_records({"source": "/docs/paper.pdf"})]
        paper = sorted(store.get(ids), key=lambda c: int(c.metadata["position"]))
        before, after = neighbours(store, paper[2])
        assert [c.metadata["position"] for c in before] == [0, 1]
        assert [c.metadata["position"] for c in after] == [3, 4]
        assert [c.metadata["page"] for c in before + after] == [1, 1, 2, 2]
        assert neighbours(store, paper[0], width=1) == ([], [paper[1]])
        [note] = store.get([r.id for r in store.iter_records({"source": "/docs/note.md"})])
        assert neighbours(store, note) == ([], [])


def test_run_query_text_image_both_and_filters(store_dir: Path) -> None:
    enc = HashEncoder()
    with QdrantStore.open(str(store_dir)) as store:
        r = build_retriever(enc, store)
        out = run_query(r, QueryRequest(text="ships tides", k=2, pool=5))
        assert len(out.pool) == 5 and len(out.shown) == 2
        assert out.shown[0].chunk.source == "/docs/note.md"  # both words
        assert [h.final_rank for h in out.pool] == [1, 2, 3, 4, 5]
        assert set(out.timings) == {"encode", "ann", "total"} and not out.filtered

        only = run_query(r, QueryRequest(text="ships", tenants=["acme"], k=3, pool=3))
        assert [h.chunk.source for h in only.pool] == ["/docs/note.md"] and only.filtered
        none = run_query(r, QueryRequest(text="ships", tenants=["nobody"]))
        assert none.pool == [] and none.filtered

        img = Image.new("RGB", (32, 32), (200, 10, 10))
        both = run_query(r, QueryRequest(text="ships", image=img, k=2, pool=4, rerank=True))
        assert len(both.pool) == 4
        assert any("dense only" in n for n in both.notes)  # asked for rerank, said it did not run
        with pytest.raises(ConfigError, match="type a query, upload an image"):
            run_query(r, QueryRequest(text="   "))


def test_broken_image_is_a_config_error() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    assert load_query_image(buf.getvalue()).size == (8, 8)
    with pytest.raises(ConfigError, match=r"x\.jpg is not a readable image"):
        load_query_image(b"\xff\xd8\xff garbage", "x.jpg")
    with pytest.raises(ConfigError, match="not a readable image"):
        load_query_image(buf.getvalue()[:40], "cut.png")  # truncated: fails on decode, not later


def test_open_store_is_serialised_in_process(store_dir: Path) -> None:
    s = Settings(store=str(store_dir))
    with open_store(s) as store:
        assert store.count() == 6
        # a second session of the same server waits for the first instead of a false "locked" error
        with pytest.raises(StoreError, match="busy in this app"), open_store(s, wait_s=0.05):
            pass
    done = threading.Event()

    def other() -> None:
        with open_store(s, wait_s=5) as st2:
            assert st2.count() == 6
        done.set()

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert done.is_set() and not STORE_LOCK.locked()
    QdrantStore.open(str(store_dir)).close()  # closed after each use: free for other processes


def test_ingest_folder_must_be_inside_a_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    roots = allowed_roots(Settings(ingest_root=str(root)))
    assert resolve_ingest_folder("docs", roots) == (root / "docs").resolve()
    assert resolve_ingest_folder(str(root / "docs"), roots) == (root / "docs").resolve()
    for bad in ("../secret", "escape", "/etc"):
        with pytest.raises(ConfigError, match="outside the folders"):
            resolve_ingest_folder(bad, roots)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_ingest_folder("missing", roots)
    monkeypatch.chdir(tmp_path)
    default = allowed_roots(Settings(data=str(root)))
    assert default == [tmp_path.resolve(), root.resolve()]


def test_save_uploads_sanitises_names(tmp_path: Path) -> None:
    saved = save_uploads([("../../evil.txt", b"a"), ("evil.txt", b"b"), (".hidden", b"c")], tmp_path)
    assert [p.name for p in saved] == ["evil.txt", "evil-1.txt", "hidden"]
    assert all(p.parent.parent == tmp_path for p in saved)
    assert saved[1].read_bytes() == b"b"
    with pytest.raises(ConfigError, match="choose one or more files"):
        save_uploads([], tmp_path)


def test_common_root() -> None:
    assert common_root(["/a/b/c/x.pdf", "/a/b/d/y.jpg"]) == "/a/b"
    assert common_root(["/x.pdf", "/y.pdf"]) is None
    assert common_root(["http://h/x", "/a/b/x"]) is None


def test_cli_ui_command_and_environment(tmp_path: Path) -> None:
    args = build_parser().parse_args(["ui", "--port", "9999", "--host", "0.0.0.0", "--ingest-root", "/srv"])
    assert (args.port, args.host, args.ingest_root) == (9999, "0.0.0.0", "/srv")
    cmd = streamlit_command("0.0.0.0", 9999)
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP_PATH)] and APP_PATH.is_file()
    assert cmd[cmd.index("--server.port") + 1] == "9999" and "--server.headless" in cmd
    env = app_environment(
        Settings(store=str(tmp_path), model="lite", threads=1, ingest_root="/srv"), {"MMRAG_API_KEY": "old"}
    )
    assert env["MMRAG_STORE"] == str(tmp_path) and env["MMRAG_MODEL"] == "lite"
    assert env["MMRAG_INGEST_ROOT"] == "/srv" and env["MMRAG_THREADS"] == "1"
    assert "MMRAG_API_KEY" not in env  # a stale key from the parent is not passed on
    assert Settings.from_env(env).ingest_root == "/srv"


def test_configured_reranker_and_bm25_turn_the_stages_on(store_dir: Path) -> None:
    """With BM25 vectors in the store and a cross-encoder configured, both toggles work for real."""
    from mmrag.rerank import cached_reranker

    enc = HashEncoder()
    with open_store(Settings(store=str(store_dir))) as store:
        plain = build_retriever(enc, store)
        assert plain.capabilities == {"hybrid": store.has_sparse, "rerank": False}
        r = build_retriever(enc, store, pool=6, reranker=cached_reranker("minilm"))
        assert r.capabilities["rerank"] and capability_notes(r.capabilities).get("rerank") is None
        out = run_query(
            r, QueryRequest(text="ships and tides", k=3, pool=6, hybrid=store.has_sparse, rerank=True)
        )
        assert out.shown and all(h.rerank is not None for h in out.shown)
        assert "rerank" in out.timings
