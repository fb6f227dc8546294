"""The API's request and response bodies (pydantic models: the OpenAPI schema at ``/docs``)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from mmrag.retriever.request import MAX_EXPAND


class ErrorOut(BaseModel):
    error: str


class CitationOut(BaseModel):
    """Where a hit sits in its document: boxes are PDF page points, origin bottom-left (docs/citations.md)."""

    page: int | None
    bbox: list[float] | None
    boxes: list[list[float]]
    page_size: list[float] | None
    headings: list[str]


class ContextOut(BaseModel):
    """A chunk around a hit (``expand``): no scores, not counted in ``k``."""

    id: str
    modality: str
    source: str
    text: str | None
    image: str | None
    metadata: dict[str, Any]
    citation: CitationOut | None = None


class HitOut(ContextOut):
    """A hit: the chunk's fields (as :class:`ContextOut`) plus every stage's score and rank."""

    scores: dict[str, float | None]
    ann_rank: int
    final_rank: int
    vector: str | None
    context: list[ContextOut] = []


class SearchOut(BaseModel):
    query: str | None
    image: bool
    tenant: str | None
    encoder: str
    aligned: bool
    hits: list[HitOut]
    timings_ms: dict[str, float]


class SkippedOut(BaseModel):
    path: str
    reason: str


class IngestOut(BaseModel):
    files_seen: int
    files_loaded: int
    chunks: dict[str, int]
    embedded: int
    written: int
    already_stored: int
    skipped: list[SkippedOut]
    seconds: float
    timings: dict[str, float]
    vector: str
    tenant: str | None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "bad request (reason given)",
        401: "missing or wrong API key",
        403: "another tenant's data, or a path outside the ingest root",
        411: "request body without Content-Length",
        413: "request body over the upload limit",
        503: "store unavailable, or the search queue is full (retry after Retry-After seconds)",
        504: "request timed out",
    }.items()
}


class SearchFields(BaseModel):
    """The fields ``POST /search`` (a form) and ``POST /query`` (JSON) share; the server's limits on
    ``k``, ``pool`` and ``group_size`` are added by :func:`with_limits`."""

    k: int = Field(10, ge=1, description="hits (or documents with group_by)")
    pool_size: int | None = Field(None, alias="pool", ge=1, description="first-stage candidates")
    modality: str | None = Field(None, pattern="^(text|image)$")
    source: str | None = Field(None, max_length=4096, description="only this source path")
    tenant: str | None = Field(None, max_length=64)
    mode: str | None = Field(
        None, pattern="^(dense|hybrid)$", description="first stage; default: the store's model set"
    )
    hybrid: bool | None = Field(
        None, description="older switch for mode (true = hybrid); 400 when unavailable"
    )
    rerank: bool | None = Field(
        None, description="cross-encoder rerank; default: on when the store has one; 400 when unavailable"
    )
    group_by: str | None = Field(None, pattern="^source$", description="k counts documents, not chunks")
    group_size: int = Field(1, ge=1, description="hits per document")
    expand: int = Field(0, ge=0, le=MAX_EXPAND, description="neighbouring chunks per side as context")
    mmr: float | None = Field(None, ge=0.0, le=1.0, description="MMR diversity lambda (1: relevance only)")


class QueryIn(SearchFields):
    """``POST /query``: a text search as a JSON body (the fields of ``POST /search`` without the
    image upload; ``filters`` is a JSON object, not a string)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=4000, description="text query")
    filters: dict[str, Any] | None = Field(None, description='payload filters {"key": value | [values]}')


class SearchForm(SearchFields):
    """``POST /search``'s form fields other than the image upload, validated as one model
    (``mmrag.api.forms``; ``filters`` is a JSON object in a string)."""

    query: str | None = Field(None, max_length=4000, description="text query")
    filters: str | None = Field(None, description='JSON object {"key": value | [values]}')
    image_weight: float = Field(0.5, ge=0.0, le=1.0, description="composed query: the image's share")


M = TypeVar("M", bound=SearchFields)


def with_limits(model: type[M], max_k: int, max_pool: int) -> type[M]:
    """``model`` with this server's limits on ``k``, ``pool`` and ``group_size``: past them a 422,
    and shown in the OpenAPI schema. ``k``'s default is 10 or ``max_k`` where that is lower (a
    request without ``k`` is never refused for a limit it did not set)."""
    limited: type[M] = create_model(
        model.__name__,
        __base__=model,
        __doc__=model.__doc__,
        k=(int, Field(min(10, max_k), ge=1, le=max_k, description="hits (or documents with group_by)")),
        pool_size=(
            int | None,
            Field(None, alias="pool", ge=1, le=max_pool, description="first-stage candidates"),
        ),
        group_size=(int, Field(1, ge=1, le=max_k, description="hits per document")),
    )
    return limited


def query_model(max_k: int, max_pool: int) -> type[QueryIn]:
    """:class:`QueryIn` with this server's limits."""
    return with_limits(QueryIn, max_k, max_pool)
