"""``POST /search``'s form read and validated in one step, and its OpenAPI request body.

FastAPI solves each of a route's form fields as a dependency of its own (17 of them here): at 64
concurrent clients that was about a quarter of the Python the server ran per search, all of it
holding the GIL that the encoder's batch and the next requests wait on. Here the body is parsed
once (``application/x-www-form-urlencoded`` by :func:`urllib.parse.parse_qsl`, multipart by
Starlette), and the fields are validated as one pydantic model, with FastAPI's form rules kept:
an empty value is the field's default, the last of repeated values counts, unknown fields are
ignored, and malformed values are a 422 naming the field (``body.<field>``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from mmrag.api.schemas import SearchForm

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
IMAGE_FIELD = "image"


async def read_search_form(request: Request, model: type[SearchForm]) -> tuple[SearchForm, bytes | None]:
    """The validated fields and the uploaded image's bytes (``None`` without one).

    Raises:
        RequestValidationError: A field's value is malformed or out of range (the app's 422).
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    image: bytes | None = None
    if kind == URLENCODED:
        body = await request.body()
        items: list[tuple[str, Any]] = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    else:  # multipart (Starlette's parser, python-multipart); any other body reads as no fields
        form = await request.form()
        try:
            items = list(form.multi_items())
            upload = form.get(IMAGE_FIELD)
            if isinstance(upload, UploadFile):
                data = await upload.read()
                # an empty file field without a name is how some clients send "no file"
                image = data if data or upload.filename else None
        finally:
            await form.close()
    fields = {name: value for name, value in items if value != "" and name != IMAGE_FIELD}
    errors: list[dict[str, Any]] = []
    if any(name == IMAGE_FIELD and isinstance(value, str) and value for name, value in items):
        errors.append({"type": "value_error", "loc": ("body", IMAGE_FIELD), "msg": "send a file upload"})
    try:
        got = model.model_validate(fields)
    except ValidationError as exc:
        errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    return got, image


def search_form_openapi(model: type[SearchForm]) -> dict[str, Any]:
    """The route's ``requestBody`` for the OpenAPI schema: the model's fields plus the image upload
    (multipart), or the fields alone (urlencoded)."""
    schema = model.model_json_schema(by_alias=True)
    with_image = {
        **schema,
        "properties": {
            **schema["properties"],
            IMAGE_FIELD: {
                "type": "string",
                "format": "binary",
                "description": "image query; with a text query too: a composed query",
            },
        },
    }
    return {
        "requestBody": {
            "content": {MULTIPART: {"schema": with_image}, URLENCODED: {"schema": schema}},
            "required": False,
        }
    }
