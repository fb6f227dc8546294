"""``POST /query``: the text search as a JSON body, over real HTTP, against ``POST /search``'s form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.api.conftest import AppFactory, serve


def ranked(r: Any) -> list[tuple[str, float | None]]:
    assert r.status_code == 200, r.text
    return [(h["id"], h["scores"]["dense"]) for h in r.json()["hits"]]


def test_json_query_answers_as_the_form_does(make_app: AppFactory, docs: Path, client_for: Any) -> None:
    app = make_app(api_key="secret", ingest_root=docs.parent, max_k=20)
    with serve(app) as url, client_for(url, "secret") as c, client_for(url) as anon:
        assert c.post("/ingest", data={"path": "docs"}).status_code == 200
        src = str(docs / "cats.txt")
        for form, body in (
            ({"query": "dense passage retrieval", "k": "2"}, {"query": "dense passage retrieval", "k": 2}),
            (
                {"query": "cats", "mode": "hybrid", "pool": "3"},
                {"query": "cats", "mode": "hybrid", "pool": 3},
            ),
            (
                {"query": "dense passage", "filters": json.dumps({"source": src})},
                {"query": "dense passage", "filters": {"source": src}},
            ),
            (
                {"query": "cats", "group_by": "source", "expand": "1"},
                {"query": "cats", "group_by": "source", "expand": 1},
            ),
        ):
            expected = ranked(c.post("/search", data=form))
            assert expected and ranked(c.post("/query", json=body)) == expected
        r = c.post("/query", json={"query": "dense passage", "filters": {"source": src}})
        assert [h["source"] for h in r.json()["hits"]] == [src] and r.json()["query"] == "dense passage"

        # the same checks and statuses as the form: values past the server's limits and malformed
        # bodies 422, bad filters 400 with the reason, a missing key 401, a stage the server lacks 400
        for form, body in (({"k": "21"}, {"k": 21}), ({"pool": "10001"}, {"pool": 10001})):
            statuses = (
                c.post("/search", data={"query": "cats", **form}),
                c.post("/query", json={"query": "cats", **body}),
            )
            assert [r.status_code for r in statuses] == [422, 422], [r.text for r in statuses]
        r = c.post("/query", json={"query": "cats", "filters": {"source": [1]}})
        assert r.status_code == 400 and "filter 'source'" in r.json()["error"]
        r = c.post("/query", json={"query": "cats", "rerank": True})
        assert r.status_code == 400 and "not available" in r.json()["error"]
        bad_bodies = ({"query": ""}, {"k": 2}, {"query": "cats", "k": 0}, {"query": "cats", "image": "x.png"})
        for bad in (*bad_bodies, {"query": "cats", "pool_size": 3}):  # the field is "pool" only
            r = c.post("/query", json=bad)
            assert r.status_code == 422 and "error" in r.json(), bad
        r = c.post("/query", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert anon.post("/query", json={"query": "cats"}).status_code == 401
        assert "/query" in c.get("/openapi.json").json()["paths"]


def test_json_query_keeps_tenants_apart(make_app: AppFactory, docs: Path, client_for: Any) -> None:
    app = make_app(tenancy=True, api_key="admin", tenant_keys={"key-a": "acme"}, ingest_root=docs.parent)
    with serve(app) as url, client_for(url, "admin") as admin, client_for(url, "key-a") as acme:
        for tenant in ("acme", "globex"):
            assert admin.post("/ingest", data={"path": "docs", "tenant": tenant}).status_code == 200
        r = acme.post("/query", json={"query": "cats", "k": 5})
        assert r.status_code == 200 and {h["metadata"]["tenant"] for h in r.json()["hits"]} == {"acme"}
        assert acme.post("/query", json={"query": "cats", "tenant": "globex"}).status_code == 403
        r = acme.post("/query", json={"query": "cats", "filters": {"tenant": "globex"}})
        assert r.status_code == 400


def test_every_query_field_is_a_search_request_argument() -> None:
    """A field added to ``QueryIn`` that the service does not take would be a 500 on every call."""
    import inspect

    from mmrag.api.schemas import QueryIn, query_model
    from mmrag.api.service import Service

    takes = set(inspect.signature(Service.search_request).parameters)
    assert set(QueryIn.model_fields) - {"pool_size"} <= takes and "pool" in takes
    assert set(query_model(5, 7).model_fields) == set(QueryIn.model_fields)
