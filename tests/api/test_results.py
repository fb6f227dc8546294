"""POST /search with grouping, context, MMR and a composed (text + image) query, over real HTTP, on
the Edge store and the server code path (qdrant-client ``:memory:``); context stays in a tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import AppFactory, png, serve


def _words(topic: str, n: int) -> str:
    return " ".join(f"{topic} {topic}{i}" for i in range(n // 2))


# long.txt is cut into several chunks (160 words each, 32 overlap): neighbours to expand into
FILES = {
    "long.txt": " ".join(_words(t, 150) for t in ("solar", "battery", "grid", "turbine")),
    "solar.txt": "solar panels on a roof " * 5,
    "notes.md": "# Notes\n\nsolar energy policy notes\n",
}


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_search_result_options(make_app: AppFactory, client_for: Any, backend: str) -> None:
    if backend == "server":
        pytest.importorskip("qdrant_client", reason="the server extra is not installed")
    app = make_app(store=":memory:" if backend == "server" else None)
    files = [("files", (n, t.encode(), "text/plain")) for n, t in FILES.items()]
    files.append(("files", ("red.png", png((255, 0, 0)), "image/png")))
    with serve(app) as url, client_for(url) as c:
        assert c.post("/ingest", files=files).status_code == 200
        plain = c.post("/search", data={"query": "solar", "k": "3"}).json()["hits"]
        assert all(h["context"] == [] for h in plain)

        r = c.post("/search", data={"query": "solar", "k": "3", "group_by": "source", "expand": "1"})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert len({h["source"] for h in hits}) == len(hits) == 3
        long_hit = next(h for h in hits if h["source"].endswith("long.txt"))
        ctx = long_hit["context"]
        assert ctx and all(x["source"] == long_hit["source"] for x in ctx)
        pos = long_hit["metadata"]["position"]
        assert {x["metadata"]["position"] for x in ctx} <= {pos - 1, pos + 1}

        r = c.post("/search", data={"query": "solar", "k": "2", "group_by": "source", "group_size": "2"})
        assert r.status_code == 200 and len({h["source"] for h in r.json()["hits"]}) == 2

        r = c.post("/search", data={"query": "solar", "k": "3", "mmr": "1"})
        assert r.status_code == 200 and "mmr" in r.json()["timings_ms"]
        assert {h["id"] for h in r.json()["hits"]} == {h["id"] for h in plain}  # λ = 1: the relevance top k

        red = ("q.png", png((250, 10, 10)), "image/png")
        composed = c.post(
            "/search", data={"query": "solar", "k": "1", "image_weight": "1"}, files={"image": red}
        )
        assert composed.status_code == 200, composed.text
        body = composed.json()
        assert body["query"] == "solar" and body["image"] is True
        assert body["hits"][0]["image"].endswith("red.png")  # all weight on the image

        for bad in ({"group_by": "page"}, {"expand": "99"}, {"mmr": "2"}, {"image_weight": "-1"}):
            r = c.post("/search", data={"query": "solar", **bad})
            assert r.status_code == 422, (bad, r.text)
        r = c.post("/search", data={"query": "solar", "group_size": "2"})
        assert r.status_code == 400 and "group_by" in r.json()["error"]


@pytest.mark.parametrize("backend", ["edge", "server"])
def test_context_stays_in_the_tenant(
    make_app: AppFactory, client_for: Any, backend: str, tmp_path: Path
) -> None:
    """Two tenants ingest the same server-side file (same source path): context is the caller's."""
    if backend == "server":
        pytest.importorskip("qdrant_client", reason="the server extra is not installed")
    root = tmp_path / "root"
    root.mkdir()
    (root / "long.txt").write_text(FILES["long.txt"])
    app = make_app(
        tenancy=True,
        tenant_keys={"key-a": "acme", "key-g": "globex"},
        ingest_root=root,
        store=":memory:" if backend == "server" else None,
    )
    with serve(app) as url, client_for(url, "key-a") as acme, client_for(url, "key-g") as globex:
        for c in (acme, globex):
            assert c.post("/ingest", data={"path": "long.txt"}).status_code == 200
        hits = acme.post("/search", data={"query": "battery", "k": "2", "expand": "2"}).json()["hits"]
        ctx = [x for h in hits for x in h["context"]]
        assert ctx and {x["metadata"]["tenant"] for x in ctx} == {"acme"}
