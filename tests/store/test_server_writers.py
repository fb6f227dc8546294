"""Two writers on one server collection: adding a vector never deletes the other writer's data.

The server path runs on one qdrant-client ``:memory:`` client shared by two backends (as two
machines share one server); each backend caches the alias it read when it opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.fakes import HashEncoder

from mmrag.encoders.base import vector_spec
from mmrag.errors import StoreError
from mmrag.store import QdrantStore
from mmrag.store.client import ClientBackend
from mmrag.types import Chunk


class _Shared:
    """The shared "server": closing one writer's store must not drop the other's data."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def close(self) -> None:
        """A writer closing its store leaves the server running."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def server() -> Iterator[Any]:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    yield _Shared(client)
    client.close()


def _open(server: Any) -> QdrantStore:
    return QdrantStore(ClientBackend(":memory:", client=server))


def _write(store: QdrantStore, enc: HashEncoder, n: int) -> list[str]:
    vector = store.ensure_vector(vector_spec(enc))
    chunks = [
        Chunk(f"00000000-0000-5000-8000-{i:012d}", "text", "a.txt", f"text {i}", None, {}) for i in range(n)
    ]
    store.upsert_chunks(chunks, enc.encode_text([c.text for c in chunks]), vector)
    return [c.id for c in chunks]


def test_a_writer_opened_before_the_collection_existed_keeps_the_others_points(server: Any) -> None:
    """B opens the store while it is empty; A creates ``mmrag--1`` and writes. B's ensure_vector
    used to take ``mmrag--1`` for a half copy and delete it with A's points."""
    a, b = _open(server), _open(server)
    ids = _write(a, HashEncoder(), 5)
    assert b.ensure_vector(vector_spec(HashEncoder())) == "hash-test"
    assert a.count() == b.count() == 5
    assert {c.id for c in b.get(ids)} == set(ids)
    # B writes into the collection A created, and A sees it.
    _write(b, HashEncoder(), 7)
    assert a.count() == 7


def test_a_stale_writer_adding_another_vector_copies_the_live_collection(server: Any) -> None:
    """B (stale: opened before A's collection existed) adds a second encoder's vector: it follows
    the alias to A's collection and copies A's points into the new one, losing none."""
    a, b = _open(server), _open(server)
    ids = _write(a, HashEncoder(), 5)
    second = HashEncoder(dim=32, encoder_id="hash-b")
    assert b.ensure_vector(vector_spec(second)) == "hash-b"
    assert b.count() == a.count() == 5
    assert set(b.backend.vector_dims()) == {"hash-test", "hash-b"}
    assert all(names >= {"hash-test"} for _, names in a.iter_vector_names())
    assert {c.id for c in a.get(ids)} == set(ids)


def test_a_stale_writer_with_a_clashing_dimension_gets_a_clear_error(server: Any) -> None:
    a, b = _open(server), _open(server)
    _write(a, HashEncoder(), 3)
    with pytest.raises(StoreError, match="another writer added vector 'hash-test'"):
        b.backend.add_vector("hash-test", 32)
    assert a.count() == 3


def test_a_collection_an_alias_names_is_never_taken_for_a_half_copy(server: Any) -> None:
    a = _open(server)
    _write(a, HashEncoder(), 3)
    from qdrant_client import models as m

    # Another tool points an alias at the next collection number's name.
    server.create_collection("mmrag--2", vectors_config={})
    server.update_collection_aliases(
        change_aliases_operations=[
            m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name="mmrag--2", alias_name="keep"))
        ]
    )
    with pytest.raises(StoreError, match="alias"):
        a.ensure_vector(vector_spec(HashEncoder(encoder_id="hash-b")))
    assert server.collection_exists("mmrag--2") and a.count() == 3
