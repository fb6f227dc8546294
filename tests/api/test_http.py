"""The API over real HTTP (uvicorn on 127.0.0.1): search, ingest, auth, limits, tenants."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mmrag.errors import TenancyError
from mmrag.store import QdrantStore
from tests.api.conftest import AppFactory, png, serve
from tests.fakes import HashEncoder


def test_search_ingest_auth_and_limits(make_app: AppFactory, docs: Path, client_for: Any) -> None:
    app = make_app(api_key="secret", ingest_root=docs.parent, max_upload_mb=1)
    with serve(app) as url, client_for(url, "secret") as c, client_for(url) as anon:
        health = anon.get("/health")
        assert health.status_code == 200 and health.json()["auth"] is True
        for method, path in (("POST", "/search"), ("POST", "/ingest"), ("GET", "/stats")):
            r = anon.request(method, path, data={"query": "x"} if method == "POST" else None)
            assert r.status_code == 401 and "X-API-Key" in r.json()["error"]
            r = anon.request(method, path, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401

        (docs / "leak.txt").symlink_to(docs.parent.parent / "secret.txt")
        (docs.parent.parent / "secret.txt").write_text("outside the ingest root")
        r = c.post("/ingest", data={"path": "docs"})
        assert r.status_code == 200, r.text
        assert r.json()["written"] == 3 and r.json()["files_seen"] == 3  # the symlink out is left out
        for outside in ("/etc", "../..", str(docs.parent.parent)):
            r = c.post("/ingest", data={"path": outside})
            assert r.status_code == 403 and "outside" in r.json()["error"]

        red = png((255, 0, 0))
        files = [
            ("files", ("red.png", red, "image/png")),
            ("files", ("note.txt", b"a note on bm25", "text/plain")),
        ]
        r = c.post("/ingest", files=files)
        assert r.status_code == 200 and r.json()["written"] == 2
        r = c.post("/ingest", files=files)  # same bytes again: idempotent
        assert r.status_code == 200 and r.json()["written"] == 0 and r.json()["already_stored"] == 2

        r = c.post("/search", data={"query": "dense passage retrieval", "k": "2"})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert len(hits) == 2 and hits[0]["source"].endswith("dual.txt")
        assert hits[0]["scores"]["dense"] > hits[1]["scores"]["dense"] and hits[0]["final_rank"] == 1

        r = c.post("/search", files={"image": ("q.png", red, "image/png")}, data={"modality": "image"})
        assert r.status_code == 200 and r.json()["hits"][0]["image"].endswith("red.png")

        src = str(docs / "cats.txt")
        r = c.post("/search", data={"query": "dense passage", "filters": json.dumps({"source": src})})
        assert [h["source"] for h in r.json()["hits"]] == [src]

        # no reranker configured: asking for the stage is a 400 with the reason, never a silent no-op
        r = c.post("/search", data={"query": "cats", "rerank": "true"})
        assert r.status_code == 400 and "not available" in r.json()["error"]
        # the store has BM25 vectors: hybrid runs and every hit carries its sparse and fused scores
        r = c.post("/search", data={"query": "dense passage retrieval", "hybrid": "true", "k": "2"})
        assert r.status_code == 200, r.text
        assert all(h["scores"]["fused"] is not None for h in r.json()["hits"])
        r = c.post("/search", files={"image": ("x.png", b"not an image", "image/png")})
        assert r.status_code == 400 and "image" in r.json()["error"]
        r = c.post("/search", data={"query": "cats", "filters": "[1]"})
        assert r.status_code == 400
        r = c.post("/search", data={"query": "cats", "k": "0"})
        assert r.status_code == 422 and "error" in r.json()

        before = c.get("/stats").json()["points"]
        assert before == 5
        big = [("files", ("big.txt", b"word " * 300_000, "text/plain"))]  # 1.5 MB > 1 MB
        r = c.post("/ingest", files=big)
        assert r.status_code == 413 and "limit" in r.json()["error"]

        def chunks() -> Any:
            yield b"query=cats"

        r = c.post("/search", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 411
        assert c.get("/stats").json()["points"] == before

        schema = c.get("/openapi.json").json()
        assert {"/search", "/ingest", "/stats", "/health"} <= set(schema["paths"])


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_tenants_cannot_read_each_other(
    make_app: AppFactory, tmp_path: Path, client_for: Any, backend: str
) -> None:
    """Edge store, and the server code path (qdrant-client, local ``:memory:`` mode)."""
    if backend == "server":
        pytest.importorskip("qdrant_client", reason="the server extra is not installed")
    app = make_app(
        tenancy=True,
        api_key="admin",
        tenant_keys={"key-a": "acme", "key-g": "globex"},
        store=":memory:" if backend == "server" else None,
    )
    shared = ("files", ("shared.txt", b"the quarterly secret plan is shared", "text/plain"))
    with (
        serve(app) as url,
        client_for(url, "key-a") as acme,
        client_for(url, "key-g") as globex,
        client_for(url, "admin") as admin,
    ):
        r = acme.post(
            "/ingest", files=[("files", ("a.txt", b"acme secret plan: buy rockets", "text/plain")), shared]
        )
        assert r.status_code == 200 and r.json()["tenant"] == "acme" and r.json()["written"] == 2
        r = globex.post(
            "/ingest",
            files=[("files", ("g.txt", b"globex secret plan: buy volcanoes", "text/plain")), shared],
        )
        assert r.status_code == 200 and r.json()["tenant"] == "globex" and r.json()["written"] == 2
        globex_src = globex.post("/search", data={"query": "volcanoes"}).json()["hits"][0]["source"]

        hits = acme.post("/search", data={"query": "secret plan", "k": "10"}).json()["hits"]
        assert len(hits) == 2 and {h["metadata"]["tenant"] for h in hits} == {"acme"}
        assert not any("volcanoes" in (h["text"] or "") for h in hits)

        # every way of asking for globex's points with acme's key is refused or empty
        assert acme.post("/search", data={"query": "secret", "tenant": "globex"}).status_code == 403
        assert acme.post("/ingest", data={"path": "x", "tenant": "globex"}).status_code == 403
        assert acme.get("/stats", params={"tenant": "globex"}).status_code == 403
        r = acme.post("/search", data={"query": "secret", "filters": json.dumps({"tenant": "globex"})})
        assert r.status_code == 400
        r = acme.post(
            "/search", data={"query": "secret", "filters": json.dumps({"tenant": ["acme", "globex"]})}
        )
        assert r.status_code == 400
        r = acme.post("/search", data={"query": "volcanoes", "source": globex_src})
        assert r.status_code == 200 and r.json()["hits"] == []
        assert acme.get("/stats").json()["points"] == 2

        # the admin key must name a tenant, and then sees only that one
        r = admin.post("/search", data={"query": "secret plan"})
        assert r.status_code == 400 and "tenant" in r.json()["error"]
        assert admin.get("/stats").status_code == 400
        hits = admin.post("/search", data={"query": "secret plan", "tenant": "globex"}).json()["hits"]
        assert {h["metadata"]["tenant"] for h in hits} == {"globex"}
        assert admin.post("/ingest", files=[shared]).status_code == 400  # ingest needs a tenant too
        direct(app.state.service.store)

    if backend == "edge":
        with QdrantStore.open(str(tmp_path / "store")) as store:  # reopened: the flag persisted
            direct(store)


def direct(store: QdrantStore) -> None:
    """The tenancy flag is in the store itself: a direct search without a tenant is refused."""
    assert store.tenancy
    vec = HashEncoder().encode_text(["secret"])
    with pytest.raises(TenancyError):
        store.search(store.default_vector or "", vec, 5)
    assert len(store.search(store.default_vector or "", vec, 5, filters={"tenant": "acme"})[0]) == 2


class SlowEncoder(HashEncoder):
    def encode_text(self, texts: Any, *, batch_size: int | None = None) -> Any:
        if texts and texts[0] == "slow":
            time.sleep(1.0)
        return super().encode_text(texts, batch_size=batch_size)


def test_timeout_and_busy_ingest(make_app: AppFactory, client_for: Any) -> None:
    app = make_app(encoder=SlowEncoder(), search_timeout_s=0.2)
    with serve(app) as url, client_for(url) as c:
        assert c.post("/ingest", files=[("files", ("a.txt", b"fast words", "text/plain"))]).status_code == 200
        r = c.post("/search", data={"query": "slow"})
        assert r.status_code == 504 and "0.2 s" in r.json()["error"]
        # The timed-out search still holds the encoder's batch (one runs at a time, as with a real
        # model's lock); once it has finished, searches are answered again.
        batcher = app.state.service.batcher
        deadline = time.monotonic() + 30
        while batcher.admitted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.post("/search", data={"query": "fast"}).status_code == 200
        lock = app.state.service._ingest_lock
        lock.acquire()
        try:
            r = c.post("/ingest", files=[("files", ("b.txt", b"more words", "text/plain"))])
            assert r.status_code == 409
        finally:
            lock.release()


def test_server_path_ingest_disabled_without_root(make_app: AppFactory, docs: Path) -> None:
    app = make_app()
    with serve(app) as url:
        r = httpx.post(f"{url}/ingest", data={"path": str(docs)})
        assert r.status_code == 403 and "MMRAG_INGEST_ROOT" in r.json()["error"]
