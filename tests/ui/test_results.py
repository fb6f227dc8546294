"""The search page's result shaping: group by document, context, MMR, image weight; the service
part on a real Edge store with the hashing encoder, the page through ``AppTest`` with ``lite``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmrag.encoders.base import vector_spec
from mmrag.store import QdrantStore
from mmrag.types import Chunk, chunk_id
from mmrag.ui.service import QueryRequest, build_retriever, run_query
from tests.fakes import HashEncoder
from tests.ui.test_app import _app, _no_crash, _submit


def _text(source: str, text: str, position: int, **meta: object) -> Chunk:
    return Chunk(chunk_id(source, text, position), "text", source, text, None, {"position": position, **meta})


@pytest.fixture
def store(tmp_path: Path) -> QdrantStore:
    enc = HashEncoder()
    # "filler" words give the paper's chunks distinct scores (no ties whose order a backend may choose)
    chunks = [
        _text("/d/paper.pdf", f"ships and tides part {i} " + "filler " * i, i, page=1 + i // 2)
        for i in range(5)
    ]
    chunks += [_text("/d/note.md", "ships in the harbour", 0), _text("/d/log.txt", "tides today", 0)]
    s = QdrantStore.open(str(tmp_path / "store"))
    s.upsert_chunks(
        chunks, enc.encode_text([c.text or "" for c in chunks]), s.ensure_vector(vector_spec(enc))
    )
    return s


def test_run_query_groups_expands_and_diversifies(store: QdrantStore) -> None:
    r = build_retriever(HashEncoder(), store)
    plain = run_query(r, QueryRequest(text="ships tides part", k=3, pool=7))
    assert {h.chunk.source for h in plain.shown} == {"/d/paper.pdf"} and len(plain.pool) == 7
    grouped = run_query(r, QueryRequest(text="ships tides part", k=3, pool=7, group_by="source", expand=1))
    assert len({h.chunk.source for h in grouped.shown}) == 3 == len(grouped.shown)
    assert grouped.shown[0].context and "group" in grouped.timings and "expand" in grouped.timings
    two = run_query(r, QueryRequest(text="ships tides part", k=2, pool=7, group_by="source", group_size=2))
    assert len(two.shown) == 3  # paper (2 hits) and one more document: every hit is shown
    same = run_query(r, QueryRequest(text="ships tides part", k=3, pool=7, mmr_lambda=1.0))
    assert [h.chunk.id for h in same.shown] == [h.chunk.id for h in plain.shown]
    img = Image.new("RGB", (16, 16), (10, 200, 10))
    text_side = run_query(r, QueryRequest(text="ships tides part", image=img, k=3, pool=7, image_weight=0.0))
    assert [h.chunk.id for h in text_side.shown] == [h.chunk.id for h in plain.shown]
    store.close()


@pytest.mark.integration
def test_page_groups_by_document_with_context(monkeypatch: pytest.MonkeyPatch, ui_store: Path) -> None:
    at = _app(monkeypatch, ui_store).run()
    at.text_input(key="q").input("layout detection models")
    at.number_input(key="k").set_value(2)
    at.toggle(key="group").set_value(True)
    at.number_input(key="expand").set_value(1)
    _submit(at, "Search")
    _no_crash(at)
    assert not at.error
    cards = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert len(cards) == 2 and cards[0].split("`")[1] != cards[1].split("`")[1]  # two documents
    assert any(e.label.startswith("context: ") for e in at.expander)
