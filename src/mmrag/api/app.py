"""The FastAPI app: ``POST /search`` (a form: text, an image upload or both), ``POST /query`` (a
text search as a JSON body), ``POST /ingest``, ``GET /stats``, ``GET /health``, OpenAPI at ``/docs``.

Every error is JSON ``{"error": reason}`` with a fitting status (400 bad request, 401 no/wrong key,
403 another tenant or a path outside the ingest root, 409 ingest busy, 411/413 body without length or
too large, 422 malformed fields, 503 store unavailable or search queue full (with ``Retry-After``),
504 timeout). Searches go through the service's micro-batcher (bounded queue); other blocking work
(ingest, stats) runs in a bounded thread pool; a timed-out request gets 504 while its thread finishes.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at definition time,
# and they refer to names local to create_app (the auth dependency, the configured limits).

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from mmrag._lazy import require

require("fastapi", "api")
require("python_multipart", "api")

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastapi.security import APIKeyHeader  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402
from starlette.types import ASGIApp, Receive, Scope, Send  # noqa: E402

from mmrag.api.config import ApiConfig  # noqa: E402
from mmrag.api.forms import SEARCH_FORM_OPENAPI, document_search_form, read_search_form  # noqa: E402
from mmrag.api.schemas import (  # noqa: E402
    ERRORS,
    ErrorOut,
    IngestOut,
    QueryIn,
    SearchForm,
    SearchOut,
    query_model,
    with_limits,
)
from mmrag.api.service import ApiError, Principal, Service  # noqa: E402
from mmrag.errors import ConfigError, MissingExtraError, MmragError, OverloadedError, StoreError  # noqa: E402
from mmrag.retriever.core import SearchResult  # noqa: E402
from mmrag.retriever.request import SearchRequest  # noqa: E402

log = logging.getLogger(__name__)
T = TypeVar("T")


class BodyLimit:
    """Refuse oversized bodies before they are read: 413 over the limit, 411 for chunked bodies
    (no length to check up front; uvicorn guarantees a body never exceeds its Content-Length)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            status, reason = 0, ""
            length = headers.get(b"content-length")
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                status, reason = 411, "send the body with a Content-Length (chunked bodies are refused)"
            elif length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    status, reason = 400, "invalid Content-Length"
                elif n > self.limit:
                    status = 413
                    reason = (
                        f"request body is {n} bytes, over the {self.limit} byte limit (MMRAG_MAX_UPLOAD_MB)"
                    )
            if status:
                await JSONResponse({"error": reason}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _status(exc: MmragError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, MissingExtraError):
        return 501
    if isinstance(exc, StoreError | OverloadedError):
        return 503
    return 500


def create_app(service: Service) -> FastAPI:
    """The app over one :class:`Service` (closed when the app shuts down).

    Example:
        >>> app = create_app(Service(Settings.from_env(), ApiConfig.from_env()))  # doctest: +SKIP
    """
    cfg = service.config
    pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="mmrag-api")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=True)
        service.close()

    app = FastAPI(
        title="mmrag",
        summary="Multimodal (text + image) retrieval over Qdrant",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, limit=cfg.max_upload_bytes)
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (when configured)")

    async def principal(key: Annotated[str | None, Depends(key_header)]) -> Principal:
        return service.authenticate(key)

    Auth = Annotated[Principal, Depends(principal)]
    QueryBody = query_model(cfg.max_k, cfg.max_pool)  # POST /query's JSON, with this server's limits
    SearchFormModel = with_limits(SearchForm, cfg.max_k, cfg.max_pool)  # POST /search's form fields
    document_search_form(app, SearchFormModel)

    async def run(fn: Callable[[], T], timeout: float, what: str) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(pool, fn), timeout)
        except TimeoutError as exc:
            raise ApiError(504, f"{what} took longer than {timeout:g} s") from exc

    async def wait(fut: "Future[SearchResult]", timeout: float, what: str) -> SearchResult:
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
        except TimeoutError as exc:
            service.batcher.abandon(fut)  # queued: never runs; running: skips the batches ahead
            raise ApiError(504, f"{what} took longer than {timeout:g} s") from exc

    @app.exception_handler(MmragError)
    async def _mmrag(_: Request, exc: MmragError) -> JSONResponse:
        status = _status(exc)
        if status >= 500:
            log.warning("request failed: %s", exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, OverloadedError) else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/health", summary="liveness and what this server runs (no key needed)")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/stats", summary="point counts (one tenant's when tenancy is on)")
    async def stats(who: Auth, tenant: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        return await run(lambda: service.stats(who, tenant), cfg.search_timeout_s, "stats")

    @app.post(
        "/search",
        response_model=SearchOut,
        summary="search by text, an uploaded image, or both",
        openapi_extra=SEARCH_FORM_OPENAPI,
        responses={422: {"model": ErrorOut, "description": "a malformed or out-of-range field"}},
    )
    async def search(who: Auth, request: Request) -> dict[str, Any]:
        form, data = await read_search_form(request, SearchFormModel)
        flt: Any = None
        if form.filters:
            try:
                flt = json.loads(form.filters)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"filters is not JSON: {exc}") from exc
            if not isinstance(flt, dict):
                raise ConfigError('filters must be a JSON object such as {"source": "a.pdf"}')
        fields = form.model_dump(exclude={"pool_size", "filters"})

        def prepare() -> SearchRequest:
            return service.search_request(who, image=data, pool=form.pool_size, filters=flt, **fields)

        # A text request is checked on the loop (microseconds); an image is decoded off it.
        req = prepare() if data is None else await run(prepare, cfg.search_timeout_s, "search")
        return await answer(req)

    @app.post(
        "/query", response_model=SearchOut, summary="text search with a JSON body (POST /search's fields)"
    )
    async def query(who: Auth, body: QueryBody) -> dict[str, Any]:  # type: ignore[valid-type]
        got: QueryIn = body
        fields = got.model_dump(exclude={"pool_size"})
        return await answer(service.search_request(who, image=None, pool=got.pool_size, **fields))

    async def answer(req: SearchRequest) -> dict[str, Any]:
        # Queued on the batcher, not the pool: a full queue is a 503 now, not a 504 later.
        res = await wait(service.submit(req), cfg.search_timeout_s, "search")
        return service.render(req, res)

    @app.post("/ingest", response_model=IngestOut, summary="ingest uploaded files or a server-side path")
    async def ingest(
        who: Auth,
        files: Annotated[list[UploadFile] | None, File(description="files to ingest")] = None,
        path: Annotated[
            str | None, Form(max_length=4096, description="folder or file under MMRAG_INGEST_ROOT")
        ] = None,
        tenant: Annotated[str | None, Form(max_length=64)] = None,
    ) -> dict[str, Any]:
        owner = service.tenant_for(who, tenant)
        uploads = [(f.filename or "upload", await f.read()) for f in files or [] if f.filename]
        server_paths = [service.resolve_server_path(path)] if path else []

        def work() -> dict[str, Any]:
            saved: list[Path] = [service.save_upload(owner, n, d) for n, d in uploads]
            return service.ingest(who, tenant=owner, files=saved, paths=server_paths)

        return await run(work, cfg.ingest_timeout_s, "ingest")

    return app


def build_app(settings: Any = None, config: ApiConfig | None = None, **service_kwargs: Any) -> FastAPI:
    """The app from settings (``Settings.from_env()`` and ``ApiConfig.from_env()`` by default)."""
    from mmrag.config import Settings

    svc = Service(settings or Settings.from_env(), config or ApiConfig.from_env(), **service_kwargs)
    return create_app(svc)
