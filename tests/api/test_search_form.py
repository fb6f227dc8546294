"""``POST /search``'s form, read in one step (mmrag.api.forms), keeps FastAPI's form rules, over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api.conftest import AppFactory, serve


def ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [h["id"] for h in r.json()["hits"]]


def test_form_rules_over_both_encodings(make_app: AppFactory, docs: Path, client_for: Any) -> None:
    app = make_app(ingest_root=docs.parent, max_k=10)
    with serve(app) as url, client_for(url) as c:
        assert c.post("/ingest", data={"path": "docs"}).status_code == 200
        plain = ids(c.post("/search", data={"query": "cats", "k": "2"}))
        assert len(plain) == 2
        # multipart (a form with a file part) answers as urlencoded does
        empty_file = {"image": ("", b"", "application/octet-stream")}  # "no file", as some clients send
        assert ids(c.post("/search", data={"query": "cats", "k": "2"}, files=empty_file)) == plain
        # an empty value is the field's default; unknown fields are ignored
        assert ids(c.post("/search", data={"query": "cats", "k": "2", "mode": "", "colour": "red"})) == plain
        three = ids(c.post("/search", data={"query": "cats", "k": ""}))
        assert len(three) == 3  # k's default (10) capped by the three stored chunks
        # the last of repeated values counts
        r = c.post("/search", content=b"query=cats&k=1&k=2", headers=_urlencoded())
        assert ids(r) == plain
        # a value with a charset parameter in the content type, and percent-encoded text
        r = c.post("/search", content=b"query=cats%20sleep&k=2", headers=_urlencoded("; charset=utf-8"))
        assert r.status_code == 200 and r.json()["query"] == "cats sleep"
        # booleans in the forms pydantic reads ("true", "1", "on"...), malformed ones a 422 naming the field
        r = c.post("/search", data={"query": "cats", "hybrid": "on", "k": "2"})
        assert r.status_code == 200 and all(h["scores"]["fused"] is not None for h in r.json()["hits"])
        for bad, field in (
            ({"k": "two"}, "body.k"),
            ({"k": "11"}, "body.k"),  # past this server's max_k
            ({"rerank": "maybe"}, "body.rerank"),
            ({"image": "cats.png"}, "body.image"),  # a text value where a file belongs
        ):
            r = c.post("/search", data={"query": "cats", **bad})
            assert r.status_code == 422 and field in r.json()["error"], (bad, r.text)
        # no body, or a JSON one, reads as no fields: the request names what is missing
        for r in (c.post("/search"), c.post("/search", json={"query": "cats"})):
            assert r.status_code == 400 and "query" in r.json()["error"], r.text


def test_k_defaults_within_the_server_limit(make_app: AppFactory, docs: Path, client_for: Any) -> None:
    app = make_app(ingest_root=docs.parent, max_k=2)  # under the usual default of 10
    with serve(app) as url, client_for(url) as c:
        assert c.post("/ingest", data={"path": "docs"}).status_code == 200
        assert len(ids(c.post("/search", data={"query": "cats"}))) == 2
        assert len(ids(c.post("/query", json={"query": "cats"}))) == 2
        assert c.post("/search", data={"query": "cats", "k": "3"}).status_code == 422


def test_openapi_documents_the_form(make_app: AppFactory) -> None:
    app = make_app(max_k=7)
    body = app.openapi()["paths"]["/search"]["post"]["requestBody"]["content"]
    multipart = body["multipart/form-data"]["schema"]["properties"]
    assert multipart["image"]["format"] == "binary"
    assert multipart["k"]["maximum"] == 7 and "pool" in multipart and "pool_size" not in multipart
    fields = body["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert set(fields) == set(multipart) - {"image"}


def _urlencoded(params: str = "") -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded" + params}
