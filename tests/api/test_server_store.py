"""What the server code path sends to Qdrant: cluster layout, tenant index (qdrant-client ``:memory:``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

qdrant_client = pytest.importorskip("qdrant_client", reason="the server extra is not installed")

from mmrag.encoders.base import vector_spec  # noqa: E402
from mmrag.store import QdrantStore  # noqa: E402
from mmrag.store.client import ClientBackend  # noqa: E402
from tests.fakes import HashEncoder  # noqa: E402


class RecordingClient(qdrant_client.QdrantClient):  # type: ignore[misc]
    """The real local client, recording the collection and index requests it is given."""

    def __init__(self) -> None:
        super().__init__(location=":memory:")
        self.created: list[dict[str, Any]] = []
        self.indexes: dict[str, Any] = {}

    def create_collection(self, name: str, **kwargs: Any) -> Any:
        self.created.append(kwargs)
        return super().create_collection(name, **kwargs)

    def create_payload_index(self, name: str, field_name: str, **kwargs: Any) -> Any:
        self.indexes[field_name] = kwargs["field_schema"]
        return super().create_payload_index(name, field_name, **kwargs)


def test_cluster_layout_and_tenant_index_on_a_server() -> None:
    client = RecordingClient()
    store = QdrantStore(ClientBackend(":memory:", client=client, shards=3, replication=2))
    store.ensure_vector(vector_spec(HashEncoder()))
    assert client.created[0]["shard_number"] == 3 and client.created[0]["replication_factor"] == 2
    tenant = client.indexes["tenant"]
    assert tenant.type == "keyword" and tenant.is_tenant is True
    assert client.indexes["source"].is_tenant is False


def test_edge_tenant_index_is_a_tenant_index(tmp_path: Path) -> None:
    with QdrantStore.open(str(tmp_path / "s")) as store:
        store.ensure_vector(vector_spec(HashEncoder()))
        schema = store.backend._shard.info().payload_schema  # type: ignore[attr-defined]
        assert schema["tenant"].params.is_tenant is True
        assert {"modality", "source", "tenant"} <= set(schema)


def test_settings_carry_the_cluster_layout() -> None:
    from mmrag.config import Settings

    s = Settings.from_env({"MMRAG_SHARDS": "3", "MMRAG_REPLICATION_FACTOR": "2", "MMRAG_TENANCY": "1"})
    assert (s.shards, s.replication, s.tenancy) == (3, 2, True)
