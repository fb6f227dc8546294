"""Tenants on a real Qdrant Edge store: tenant-owned ids and payloads, untenanted reads refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmrag.cli import build_parser
from mmrag.errors import TenancyError
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.retriever import Retriever
from mmrag.store import QdrantStore, SparseVec
from mmrag.tenancy import check_tenant, tenant_chunk_id
from tests.fakes import HashEncoder


def bm25(store: QdrantStore, *texts: str) -> list[SparseVec]:
    """Query vectors the way the retriever makes them: the store's own BM25 settings."""
    return [store.sparse_encoder.embed_query(t) for t in texts]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.txt").write_text("quarterly plan for rockets")
    (root / "b.md").write_text("# Notes\n\nvolcano lair maintenance schedule")
    return root


def test_two_tenants_get_their_own_points(tmp_path: Path, folder: Path) -> None:
    enc = HashEncoder()
    with QdrantStore.open(str(tmp_path / "s"), tenancy=True) as store:
        with pytest.raises(TenancyError, match="multi-tenant"):
            IngestRunner(enc, store, progress=False).run([folder])
        a = IngestRunner(enc, store, IngestOptions(tenant="acme"), progress=False).run([folder])
        g = IngestRunner(enc, store, IngestOptions(tenant="globex"), progress=False).run([folder])
        assert a.written == g.written == 2 and store.count() == 4
        again = IngestRunner(enc, store, IngestOptions(tenant="acme"), progress=False).run([folder])
        assert again.written == 0 and again.already_stored == 2  # idempotent per tenant
        records = list(store.iter_records())
        assert {r.payload["tenant"] for r in records} == {"acme", "globex"}
        assert all(r.payload["metadata"]["tenant"] == r.payload["tenant"] for r in records)

        r = Retriever(enc, store)
        with pytest.raises(TenancyError):
            r.search("rockets")
        with pytest.raises(TenancyError):
            r.search("rockets", filters={"tenant": ["acme", "globex"]})
        with pytest.raises(TenancyError):
            r.search_batch(["rockets", "volcano"])
        hits = r.search("rockets", filters={"tenant": "globex"}, k=10)
        assert len(hits) == 2 and {h.chunk.metadata["tenant"] for h in hits} == {"globex"}
        assert store.count(filters={"tenant": "acme"}) == 2
    # the flag lives in store.json: reopening without asking keeps the store multi-tenant
    with QdrantStore.open(str(tmp_path / "s")) as store:
        assert store.tenancy and store.stats()["tenancy"] is True


def test_tenant_names_and_ids() -> None:
    assert check_tenant("acme_1.eu-west") == "acme_1.eu-west"
    for bad in ("", "-x", "a b", "x" * 65, "a/b", "ü"):
        with pytest.raises(TenancyError):
            check_tenant(bad)
    assert tenant_chunk_id("acme", "id") == tenant_chunk_id("acme", "id") != tenant_chunk_id("globex", "id")


def test_cli_takes_tenant_and_serve() -> None:
    p = build_parser()
    assert p.parse_args(["ingest", "docs", "--tenant", "acme"]).tenant == "acme"
    assert p.parse_args(["search", "q", "--tenant", "acme"]).tenant == "acme"
    args = p.parse_args(["serve", "--port", "9000", "--store", "http://qdrant:6333"])
    assert (args.command, args.port, args.host) == ("serve", 9000, "127.0.0.1")


def test_two_tenants_ingest_the_same_folder_with_one_ledger(tmp_path: Path) -> None:
    """Each tenant's copy of a file is its own ledger entry: re-ingest, prune and verify stay per tenant."""
    from mmrag.ingest.ledger import Ledger, verify

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"n{i}.txt").write_text(f"note {i} " + "vectors live in segments " * 20)
    enc = HashEncoder()
    with QdrantStore.open(str(tmp_path / "store")) as store:
        a = IngestRunner(enc, store, IngestOptions(tenant="acme"), progress=False).run([folder])
        b = IngestRunner(enc, store, IngestOptions(tenant="bolt"), progress=False).run([folder])
        assert a.written == b.written > 0 and store.count() == a.written + b.written
        again = IngestRunner(enc, store, IngestOptions(tenant="acme"), progress=False).run([folder])
        assert again.embedded == 0 and again.written == 0 and again.files_unchanged == 3
        (folder / "n0.txt").unlink()
        pruned = IngestRunner(enc, store, IngestOptions(tenant="acme", prune=True), progress=False).run(
            [folder]
        )
        assert pruned.pruned == 1  # acme's copy only
        bolt = {r.id for r in store.iter_records({"tenant": "bolt"})}
        assert len(bolt) == b.written  # bolt's copy of n0 is untouched
        with Ledger(tmp_path / "store" / "ledger.sqlite") as ledger:
            assert verify(store, ledger).ok


def test_bm25_search_also_requires_the_tenant(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("qdrant segments hold vectors " * 20)
    enc = HashEncoder()
    with QdrantStore.open(str(tmp_path / "store"), tenancy=True) as store:
        IngestRunner(enc, store, IngestOptions(tenant="acme"), progress=False).run([folder])
        IngestRunner(enc, store, IngestOptions(tenant="bolt"), progress=False).run([folder])
        with pytest.raises(TenancyError):
            store.search_sparse(bm25(store, "qdrant segments"), 5)
        hits = store.search_sparse(bm25(store, "qdrant segments"), 5, filters={"tenant": "acme"})[0]
        assert hits and {c.metadata.get("tenant") for c, _ in hits} == {"acme"}
        r = Retriever(enc, store, hybrid=True)
        with pytest.raises(TenancyError):
            r.search("qdrant segments", k=3)
        got = r.search("qdrant segments", k=3, filters={"tenant": "bolt"})
        assert got and {h.chunk.metadata.get("tenant") for h in got} == {"bolt"}
