"""Citations through the store on both backends (Qdrant Edge in tmp_path, qdrant-client ``:memory:``),
and points written before citations existed."""

from __future__ import annotations

import pytest
from store_fakes import FakeEncoder, unit_vectors

from mmrag.encoders.base import vector_spec
from mmrag.store import QdrantStore, chunk_payload
from mmrag.store.base import StoredPoint
from mmrag.types import Chunk, Citation, chunk_id

PDF_CITE = Citation(
    page=2,
    bbox=(72.0, 500.5, 540.0, 620.0),
    boxes=((72.0, 600.0, 540.0, 620.0), (72.0, 500.5, 300.0, 520.0)),
    page_size=(612.0, 792.0),
)
MD_CITE = Citation(headings=("Intro", "Setup"))


def _chunks() -> list[Chunk]:
    return [
        Chunk(chunk_id("a.pdf", "t", 0), "text", "a.pdf", "cited pdf text", None, {"page": 2}, PDF_CITE),
        Chunk(
            chunk_id("b.md", "t", 0),
            "text",
            "b.md",
            "cited markdown",
            None,
            {"headings": ["Intro", "Setup"]},
            MD_CITE,
        ),
        Chunk(chunk_id("c.txt", "t", 0), "text", "c.txt", "plain text", None, {"page": 9}),
    ]


def test_citations_round_trip_through_get_and_search(store: QdrantStore, encoder: FakeEncoder) -> None:
    name = store.ensure_vector(vector_spec(encoder))
    chunks = _chunks()
    vectors = unit_vectors(len(chunks), encoder.dim)
    store.upsert_chunks(chunks, vectors, name)
    back = {c.id: c for c in store.get([c.id for c in chunks])}
    assert [back[c.id].citation for c in chunks] == [PDF_CITE, MD_CITE, None]
    assert back[chunks[0].id] == chunks[0]  # the whole record, citation included
    [[(hit, _)]] = store.search(name, vectors[:1], 1)
    assert hit.citation == PDF_CITE
    assert chunk_payload(chunks[0])["citation"]["boxes"] == [
        [72.0, 600.0, 540.0, 620.0],
        [72.0, 500.5, 300.0, 520.0],
    ]
    # null where there is nothing to cite: read back as None, never guessed from the metadata
    assert chunk_payload(chunks[2])["citation"] is None


def test_points_written_before_citations_still_load(store: QdrantStore, encoder: FakeEncoder) -> None:
    """Payloads as the code before citations wrote them: no ``citation`` key. They load, and cite
    what their metadata tells (page, a figure's box, a Markdown heading path)."""
    name = store.ensure_vector(vector_spec(encoder))
    old = {
        "p1": {"page": 4, "format": "pdf"},
        "p2": {"page": 1, "figure": 1, "bbox": [10, 20, 110, 220], "format": "pdf"},
        "p3": {"heading": "Setup", "headings": ["Intro", "Setup"], "format": "markdown"},
        "p4": {"format": "text", "position": 0},
    }
    ids = {key: chunk_id(key, key, 0) for key in old}
    vectors = unit_vectors(len(old), encoder.dim)
    store.backend.upsert(
        [
            StoredPoint(
                ids[key],
                {name: vectors[i]},
                {"modality": "text", "source": f"{key}.x", "text": key, "image": None, "metadata": meta},
            )
            for i, (key, meta) in enumerate(old.items())
        ]
    )
    back = {c.id: c for c in store.get(list(ids.values()))}
    assert back[ids["p1"]].citation == Citation(page=4)
    assert back[ids["p2"]].citation == Citation(
        page=1, bbox=(10.0, 20.0, 110.0, 220.0), boxes=((10.0, 20.0, 110.0, 220.0),)
    )
    assert back[ids["p3"]].citation == Citation(headings=("Intro", "Setup"))
    assert back[ids["p4"]].citation is None
    assert dict(back[ids["p4"]].metadata) == old["p4"]  # metadata untouched
    hits = store.search(name, vectors[1:2], 1)
    assert hits[0][0][0].citation is not None and hits[0][0][0].citation.page == 1


@pytest.mark.parametrize("stored", [{"page": "two"}, {"bbox": "nope", "boxes": 3, "headings": "ab"}, {}])
def test_a_damaged_citation_payload_loads_without_it_failing(stored: dict[str, object]) -> None:
    from mmrag.store import payload_chunk

    chunk = payload_chunk("x", {"modality": "text", "source": "s", "text": "t", "citation": stored})
    assert chunk.citation == Citation()
