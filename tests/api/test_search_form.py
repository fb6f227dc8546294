"""``POST /search``'s form, read in one step (mmrag.api.forms), keeps FastAPI's form rules, over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api.conftest import AppFactory, png, serve


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


def test_form_edge_cases_read_as_fastapi_read_them(make_app: AppFactory, docs: Path, client_for: Any) -> None:
    app = make_app(ingest_root=docs.parent)
    with serve(app) as url, client_for(url) as c:
        assert c.post("/ingest", data={"path": "docs"}).status_code == 200
        # the last of repeated values is taken first, then an empty one is the default (10: all three)
        assert len(ids(c.post("/search", content=b"query=cats&k=1&k=", headers=_urlencoded()))) == 3
        # an empty file part for a text field is "not sent" too
        empty = {"k": ("", b"", "application/octet-stream")}
        assert len(ids(c.post("/search", data={"query": "cats"}, files=empty))) == 3
        # of an image sent as text and then as a file, the file counts (httpx sends data before files)
        red = png((250, 10, 10))
        r = c.post("/search", data={"image": "x.png"}, files={"image": ("q.png", red, "image/png")})
        assert r.status_code == 200 and r.json()["image"] is True, r.text
        # raw bytes are latin-1, %XX escapes UTF-8 (Starlette's reading)
        r = c.post("/search", content=b"query=caf%C3%A9&k=1", headers=_urlencoded())
        assert r.json()["query"] == "caf\u00e9"
        r = c.post("/search", content=b"query=caf\xe9&k=1", headers=_urlencoded())
        assert r.json()["query"] == "caf\u00e9"
        # Starlette's form limits hold for urlencoded bodies: 1,000 fields, 1 MiB a field
        r = c.post("/search", content=b"query=cats" + b"&a=1" * 1000, headers=_urlencoded())
        assert r.status_code == 400 and "Too many fields" in r.json()["error"]
        r = c.post("/search", data={"query": "cats", "filters": "x" * (1024 * 1024 + 1)})
        assert r.status_code == 400 and "maximum size" in r.json()["error"]
        # errors are listed in the form's order, whatever order the body gave the fields in
        r = c.post("/search", content=b"mmr=5&k=0&query=" + b"q" * 4001, headers=_urlencoded())
        assert r.status_code == 422
        error = r.json()["error"]
        assert error.index("body.query") < error.index("body.k") < error.index("body.mmr"), error


def test_openapi_documents_the_form(make_app: AppFactory) -> None:
    app = make_app(max_k=7)
    spec = app.openapi()
    op = spec["paths"]["/search"]["post"]
    assert set(op["requestBody"]["content"]) == {"multipart/form-data"}
    ref = op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    fields = list(form["properties"])
    assert fields[:3] == ["query", "image", "k"] and "pool" in fields and "pool_size" not in fields
    assert form["properties"]["image"]["anyOf"][0]["contentMediaType"] == "application/octet-stream"
    assert form["properties"]["k"]["maximum"] == 7 and form["properties"]["k"]["default"] == 7
    assert "422" in op["responses"] and "/search" in app.openapi()["paths"]  # cached, not rebuilt


def _urlencoded(params: str = "") -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded" + params}
