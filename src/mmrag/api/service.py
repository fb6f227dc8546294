"""What the REST API does, without HTTP: open the store once, search, ingest, stats, tenants.

The API process holds the store for its lifetime (an Edge store's directory lock is exclusive, so a
CLI ``mmrag ingest`` into the same directory fails with StoreLockedError while it runs: ingest through
``POST /ingest`` instead). Concurrency inside the process:

* the encoder's vector is created in the store at start-up (:meth:`QdrantStore.ensure_vector`), so
  no request ever triggers the shard copy-and-swap that adding a vector needs;
* searches run concurrently with each other and with an ingest: Qdrant Edge's shard takes
  concurrent queries, upserts and ``optimize`` from several threads (checked by
  ``tests/api/test_concurrency.py``), and a server handles its own concurrency;
* searches go through a :class:`~mmrag.retriever.batching.SearchBatcher` (shared encoder passes and
  rerank batches; a full queue is an OverloadedError at once, the app's 503 with ``Retry-After``);
* ingests are serialised by one lock; a second ingest while one runs is refused (409), not queued.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag import wiring
from mmrag.api.config import ApiConfig, safe_name
from mmrag.api.turns import TurnTakingEncoder
from mmrag.config import Settings
from mmrag.encoders.base import vector_spec
from mmrag.errors import ConfigError, MmragError, TenancyError
from mmrag.ingest import IngestOptions, IngestRunner
from mmrag.retriever.batching import SearchBatcher
from mmrag.retriever.request import RetrievalMode, SearchRequest
from mmrag.store import QdrantStore
from mmrag.tenancy import check_tenant
from mmrag.types import MODALITIES, IngestSummary

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.retriever.core import SearchResult

log = logging.getLogger(__name__)


class ApiError(MmragError):
    """An error with an HTTP status; the app renders it as ``{"error": reason}``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: ``tenant`` is set when its API key belongs to one tenant."""

    tenant: str | None = None


class Service:
    """One store, one encoder, one retriever, shared by every request.

    Args:
        settings: Store location, model, tenancy (``mmrag.config.Settings``).
        config: API settings.
        encoder: Injected encoder (tests); default: ``settings.model``, else the store's, else ``lite``.
        store: Injected store; default: opened from ``settings``.
    """

    def __init__(
        self,
        settings: Settings,
        config: ApiConfig,
        *,
        encoder: DualEncoder | None = None,
        store: QdrantStore | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store or wiring.open_store(settings)
        if settings.tenancy and not self.store.tenancy:
            self.store.enable_tenancy()
        models = wiring.resolve_models(settings, self.store, encoder=encoder, warm=True)
        self.encoder = models.encoder
        # before any request: no vector swap later
        self.vector = self.store.ensure_vector(vector_spec(self.encoder))
        if self.store.tenancy:
            self.store.enable_tenancy()  # persist the flag now that the store has a vector
        self.retriever = wiring.build_retriever(models, self.store)
        self.batcher = SearchBatcher(self.retriever, config.batching)
        self._ingest_lock = threading.Lock()
        self._gate = threading.Condition()  # searches in flight; ingest batches yield to them
        self._searching = 0
        if config.upload_dir is not None:
            self.upload_dir = config.upload_dir
        elif "://" in self.store.location or self.store.location.startswith(":memory:"):
            # A server store has no local folder of its own: keep uploads in the user's data dir.
            self.upload_dir = Path.home() / ".local" / "share" / "mmrag" / "uploads"
        else:
            self.upload_dir = Path(self.store.location) / "uploads"

    def close(self) -> None:
        self.batcher.close()
        self.store.close()

    # -- auth and tenants -------------------------------------------------------------------
    @property
    def auth_enabled(self) -> bool:
        return bool(self.config.api_key or self.config.tenant_keys)

    def authenticate(self, key: str | None) -> Principal:
        if not self.auth_enabled:
            return Principal()
        if key:
            if self.config.api_key and hmac.compare_digest(key.encode(), self.config.api_key.encode()):
                return Principal()
            for known, tenant in self.config.tenant_keys.items():
                if hmac.compare_digest(key.encode(), known.encode()):
                    return Principal(tenant)
        raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header")

    def tenant_for(self, principal: Principal, requested: str | None) -> str | None:
        """The tenant a request acts as; refuses any attempt to reach another tenant's data."""
        if requested is not None and requested != "":
            check_tenant(requested)
        else:
            requested = None
        if principal.tenant is not None:
            if requested is not None and requested != principal.tenant:
                raise ApiError(403, f"this API key belongs to tenant {principal.tenant!r}, not {requested!r}")
            return principal.tenant
        if requested is None and self.store.tenancy:
            raise TenancyError("this store is multi-tenant: pass tenant=NAME")
        return requested

    # -- search -----------------------------------------------------------------------------
    def search(self, principal: Principal, **fields: Any) -> dict[str, Any]:
        """One search, blocking; ``fields`` as :meth:`search_request` (unset stages: the model set)."""
        req = self.search_request(principal, **fields)
        return self.render(req, self.submit(req).result())

    def search_request(
        self,
        principal: Principal,
        *,
        query: str | None,
        image: bytes | None,
        k: int,
        pool: int | None,
        modality: str | None,
        source: str | None,
        filters: Mapping[str, Any] | None,
        tenant: str | None,
        hybrid: bool | None,
        rerank: bool | None,
        mode: str | None = None,
        image_weight: float = 0.5,
        group_by: str | None = None,
        group_size: int = 1,
        expand: int = 0,
        mmr: float | None = None,
    ) -> SearchRequest:
        """A search's fields checked (limits, filters, tenant) and turned into a request.

        A text and an image together are a composed query (``image_weight``: the image's share);
        ``group_by`` / ``group_size``, ``expand`` and ``mmr`` shape the hits (SearchRequest's fields).
        """
        if not 1 <= k <= self.config.max_k:
            raise ConfigError(f"k must be between 1 and {self.config.max_k}, got {k}")
        if pool is not None and not 1 <= pool <= self.config.max_pool:
            raise ConfigError(f"pool must be between 1 and {self.config.max_pool}, got {pool}")
        if modality is not None and modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES}, got {modality!r}")
        flt: dict[str, Any] = {}
        for key, value in (filters or {}).items():
            if key == "tenant":
                raise ConfigError("filter on tenants with the tenant field, not inside filters")
            if key in ("modality",):
                raise ConfigError("use the modality field, not a modality filter")
            ok = isinstance(value, str | int | bool) or (
                isinstance(value, list) and value and all(isinstance(v, str) for v in value)
            )
            if not ok:
                raise ConfigError(f"filter {key!r}: expected a string, number, bool or list of strings")
            flt[str(key)] = value
        if source:
            flt["source"] = source
        who = self.tenant_for(principal, tenant)
        if query is not None and not query.strip():
            query = None
        if query is None and image is None:
            raise ConfigError("send a text query, an image, or both (a composed query)")
        if group_size > self.config.max_k:
            raise ConfigError(f"group_size must be at most {self.config.max_k}, got {group_size}")
        img = _open_image(image) if image is not None else None
        return SearchRequest(
            text=query,
            image=img,
            k=k,
            pool=pool,
            modality=modality,
            filters=flt or None,
            tenant=who,
            mode=_mode(mode, hybrid),
            rerank=rerank,
            image_weight=image_weight,
            group_by=group_by,
            group_size=group_size,
            expand=expand,
            mmr_lambda=mmr,
        )

    def submit(self, req: SearchRequest) -> Future[SearchResult]:
        """Queue a search on the batcher (raises OverloadedError when its queue is full)."""
        with self._gate:
            self._searching += 1
        try:
            fut = self.batcher.submit(req)
        except BaseException:
            self._search_done()
            raise
        fut.add_done_callback(lambda _: self._search_done())
        return fut

    def _search_done(self) -> None:
        with self._gate:
            self._searching -= 1
            self._gate.notify_all()

    def render(self, req: SearchRequest, res: SearchResult) -> dict[str, Any]:
        """A finished search as the API's JSON body."""
        return {
            "query": req.text,
            "image": req.image is not None,
            "tenant": req.tenant,
            "encoder": self.encoder.id,
            "aligned": bool(getattr(self.encoder, "aligned", False)),
            "hits": [h.to_dict() for h in res.hits],
            "timings_ms": {n: round(v * 1000, 3) for n, v in res.timings.items()},
        }

    # -- ingest -----------------------------------------------------------------------------
    def save_upload(self, tenant: str | None, name: str, data: bytes) -> Path:
        """Keep an uploaded file (content-addressed, so a re-upload is an idempotent re-ingest)."""
        digest = hashlib.sha256(data).hexdigest()[:16]
        folder = self.upload_dir / (tenant or "_shared") / digest
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / safe_name(name)
        if not path.exists():
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return path.resolve()

    def resolve_server_path(self, raw: str) -> Path:
        root = self.config.ingest_root
        if root is None:
            raise ApiError(403, "server-side paths are disabled: set MMRAG_INGEST_ROOT, or upload files")
        path = Path(raw)
        path = (path if path.is_absolute() else root / path).resolve()
        if not path.is_relative_to(root):
            raise ApiError(403, f"path {raw!r} is outside the allowed ingest root")
        if not path.exists():
            raise ConfigError(f"path {raw!r} does not exist under the ingest root")
        return path

    def _inside_root(self, path: Path) -> list[Path]:
        """Files under ``path`` whose real location is inside the ingest root (a symlink to a file
        elsewhere is left out with a warning)."""
        from mmrag.ingest.loaders import iter_files

        root = self.config.ingest_root
        files = []
        for f in iter_files(path):
            if root is not None and not f.resolve().is_relative_to(root):
                log.warning("not ingesting %s: it links outside the ingest root", f)
                continue
            files.append(f)
        return files

    def ingest(
        self, principal: Principal, *, tenant: str | None, files: Sequence[Path], paths: Sequence[Path]
    ) -> dict[str, Any]:
        if not files and not paths:
            raise ConfigError("send files or a server-side path to ingest")
        who = self.tenant_for(principal, tenant)
        if not self._ingest_lock.acquire(blocking=False):
            raise ApiError(409, "another ingest is running; retry when it has finished")
        try:
            runner = IngestRunner(
                TurnTakingEncoder(self.encoder, self._yield_to_searches, self.config.ingest_batch_size),
                self.store,
                IngestOptions(batch_size=self.config.ingest_batch_size, tenant=who),
                progress=False,
            )
            summary = IngestSummary()
            if files:
                summary = runner.run([], files=list(files))
            for p in paths:
                _merge(summary, runner.run([], files=self._inside_root(p)))
        finally:
            self._ingest_lock.release()
        return summary.to_dict() | {"tenant": who}

    def _yield_to_searches(self) -> None:
        """Before an ingest batch: wait for the searches in flight, at most ``ingest_yield_s``."""
        with self._gate:
            self._gate.wait_for(lambda: self._searching == 0, timeout=self.config.ingest_yield_s)

    # -- stats ------------------------------------------------------------------------------
    def stats(self, principal: Principal, tenant: str | None) -> dict[str, Any]:
        if (who := self.tenant_for(principal, tenant)) is None:
            return self.store.stats()
        flt = {"tenant": who}
        return {
            "location": self.store.location,
            "tenant": who,
            "points": self.store.count(filters=flt),
            "by_modality": {m: self.store.count(m, filters=flt) for m in MODALITIES},
            "vectors": self.store.vectors,
            "default_vector": self.store.default_vector,
            "tenancy": self.store.tenancy,
        }

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "encoder": self.encoder.id,
            "vector": self.vector,
            "capabilities": self.retriever.capabilities,
            # What a request runs when it names no stage: the store's model set.
            "defaults": {"hybrid": self.retriever.hybrid, "rerank": self.retriever.rerank},
            "reranker": getattr(self.retriever.reranker, "id", None),
            # the cross-encoder as one TorchScript call (after its first pass; rerank/traced.py)
            "reranker_traced": bool(getattr(self.retriever.reranker, "traced", False)),
            "fusion": self.retriever.fusion,  # how hybrid search merges BM25 and dense (dbsf | rrf)
            "text_batch_precision": (enc := self.encoder.describe()).get("text_batch_precision", "fp32"),
            "text_bf16_traced": enc.get("text_bf16_traced", False),
            "text_packed": enc.get("text_packed", False),  # short query batches run without padding
            "tenancy": self.store.tenancy,
            "auth": self.auth_enabled,
            "batching": {**dataclasses.asdict(self.batcher.settings), **self.batcher.stats()},
        }


def _mode(mode: str | None, hybrid: bool | None) -> RetrievalMode | None:
    """The first stage a request asks for: ``mode`` (dense | hybrid), else the older ``hybrid`` switch."""
    if mode is not None and hybrid is not None and (RetrievalMode(mode) is RetrievalMode.HYBRID) != hybrid:
        raise ConfigError(f"mode={mode!r} contradicts hybrid={hybrid}; send one of them")
    if mode is not None:
        return RetrievalMode(mode)
    return None if hybrid is None else RetrievalMode.HYBRID if hybrid else RetrievalMode.DENSE


def _merge(into: IngestSummary, other: IngestSummary) -> None:
    into.files_seen += other.files_seen
    into.files_loaded += other.files_loaded
    for m, n in other.chunks.items():
        into.chunks[m] = into.chunks.get(m, 0) + n
    into.embedded += other.embedded
    into.written += other.written
    into.already_stored += other.already_stored
    into.skipped.extend(other.skipped)
    into.seconds += other.seconds
    into.vector = other.vector or into.vector


def _open_image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"the uploaded image cannot be read: {exc}") from exc
    return img.convert("RGB")
