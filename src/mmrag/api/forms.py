"""``POST /search``'s form read and validated in one step, and its OpenAPI request body.

FastAPI solves each of a route's form fields as a dependency of its own (17 of them here): at 64
concurrent clients that was about a quarter of the Python the server ran per search, all of it
holding the GIL that the encoder's batch and the next requests wait on. Here the body is parsed
once (``application/x-www-form-urlencoded`` by :func:`urllib.parse.parse_qsl`, multipart by
Starlette) and the fields are validated as one pydantic model, with FastAPI's form handling kept:
Starlette's limits (1,000 fields, 1 MiB a field: a 400 past them), raw bytes read as latin-1 and
``%XX`` escapes as UTF-8, the last of repeated values taken and then an empty value (or an empty
file part) read as the field's default, unknown fields ignored, and malformed values a 422 naming
``body.<field>`` in the order of the form's fields.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from mmrag.api.schemas import SearchForm

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
IMAGE_FIELD = "image"
COMPONENT = "Body_search_search_post"  # the name FastAPI gave the form: generated clients keep theirs
MAX_FIELDS = 1000  # Starlette's defaults for request.form(), which FastAPI's form routes use
MAX_PART_BYTES = 1024 * 1024
# The form's fields in the order the route documents them (and reports their errors in).
ORDER = (
    "query", IMAGE_FIELD, "k", "pool", "modality", "source", "filters", "tenant", "mode", "hybrid",
    "rerank", "image_weight", "group_by", "group_size", "expand", "mmr",
)  # fmt: skip


async def read_search_form(request: Request, model: type[SearchForm]) -> tuple[SearchForm, bytes | None]:
    """The validated fields and the uploaded image's bytes (``None`` without one).

    Raises:
        HTTPException: 400, a body past the form limits or a malformed multipart body.
        RequestValidationError: A field's value is malformed or out of range (the app's 422).
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == URLENCODED:
        last: dict[str, Any] = _urlencoded(await request.body())
        return _validate(model, last), None
    form = await request.form()  # multipart (python-multipart); any other body reads as no fields
    try:
        last = dict(form)  # the last of repeated values, as FastAPI reads a form
        image: bytes | None = None
        upload = last.get(IMAGE_FIELD)
        if isinstance(upload, UploadFile):
            data = await upload.read()
            # an empty part without a filename is how some clients send "no file"
            image = data if data or upload.filename else None
            del last[IMAGE_FIELD]
        return _validate(model, last), image
    finally:
        await form.close()


def _urlencoded(body: bytes) -> dict[str, Any]:
    try:
        items = parse_qsl(body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError as exc:  # parse_qsl counts the fields before it parses them
        raise HTTPException(400, f"Too many fields. Maximum number of fields is {MAX_FIELDS}.") from exc
    if any(len(value) > MAX_PART_BYTES for _, value in items):
        raise HTTPException(400, f"Field exceeded maximum size of {MAX_PART_BYTES // 1024}KB.")
    return dict(items)


def _validate(model: type[SearchForm], last: dict[str, Any]) -> SearchForm:
    errors: list[dict[str, Any]] = []
    if IMAGE_FIELD in last:  # a text value where the upload belongs ("" reads as no image)
        value = last.pop(IMAGE_FIELD)
        if value != "":
            msg = f"Value error, Expected UploadFile, received: {type(value)}"
            errors.append({"type": "value_error", "loc": ("body", IMAGE_FIELD), "msg": msg})
    fields = {name: value for name, value in last.items() if not _empty(value)}
    try:
        got = model.model_validate(fields)
    except ValidationError as exc:
        errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        rank = {name: i for i, name in enumerate(ORDER)}
        errors.sort(key=lambda e: rank.get(str(e["loc"][1]) if len(e["loc"]) > 1 else "", len(ORDER)))
        raise RequestValidationError(errors)
    return got


def _empty(value: Any) -> bool:
    """FastAPI reads an empty value, or an empty file part without a filename, as not sent."""
    if isinstance(value, UploadFile):
        return not value.filename and not value.size
    return isinstance(value, str) and not value


def document_search_form(app: FastAPI, model: type[SearchForm]) -> None:
    """Put ``POST /search``'s form in the app's OpenAPI schema as FastAPI documented its form
    parameters: one multipart component, the fields in the form's order, the image an upload."""
    schema = model.model_json_schema(by_alias=True)
    if "$defs" in schema:
        raise TypeError(f"{model.__name__}: nested models cannot be inlined as {COMPONENT}")
    props = dict(schema["properties"])
    props[IMAGE_FIELD] = {
        "anyOf": [{"type": "string", "contentMediaType": "application/octet-stream"}, {"type": "null"}],
        "title": "Image",
        "description": "image query; with a text query too: a composed query",
    }
    if set(props) != set(ORDER):  # a field added to the model and not to ORDER, or the reverse
        raise TypeError(f"{model.__name__}: fields and ORDER differ: {sorted(set(props) ^ set(ORDER))}")
    component = {
        "properties": {name: props[name] for name in ORDER},
        "type": "object",
        "title": COMPONENT,
    }
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            out = generate()  # FastAPI's, cached on the app
            out.setdefault("components", {}).setdefault("schemas", {})[COMPONENT] = component
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


SEARCH_FORM_OPENAPI: dict[str, Any] = {
    "requestBody": {"content": {MULTIPART: {"schema": {"$ref": f"#/components/schemas/{COMPONENT}"}}}}
}
