"""LangChain face: :class:`MmragRetriever`, a ``BaseRetriever`` over a :class:`~mmrag.retriever.Retriever`.

``MmragRetriever.from_store("./.mmrag")`` opens a store and runs its model set, as the CLI, the API and
the app do (hybrid where the store has BM25 vectors, then its default reranker); built around a
``Retriever`` of your own, it runs that retriever's stages.

Needs only ``langchain-core`` (extra ``langchain``). Each hit becomes a ``Document`` whose
``page_content`` is the chunk text (for an image: its caption / alt text, empty when it has none)
and whose ``metadata`` keeps the chunk id, modality, source, image path, page and every score, and
the citation (``bbox``, ``boxes``, ``page_size``, ``headings``; see docs/citations.md); with
``expand=N``, ``metadata["context"]`` lists the chunks around it (dicts: id, modality, source, text,
image, page, position, citation: its ``Citation.to_dict()`` or ``None``), in reading order, not in ``k``.

Composed queries: ``invoke("red car", image="photo.jpg", image_weight=0.3)``, or in a chain
``retriever.bind(image="photo.jpg")`` (LangChain passes bound keyword arguments to each call).

Async: with a Qdrant server store, ``ainvoke`` encodes the query in a worker thread (the encoder is
CPU-bound torch code) and awaits the search on qdrant-client's ``AsyncQdrantClient``. The embedded
Edge store has no async API (nor does a search with another stage): there the whole blocking search
runs on the micro-batcher's ``max_batch`` threads, so the event loop never blocks.

Batching: ``batch`` and ``abatch`` run their inputs as one micro-batch (one text-encoder pass, their
rerank pools gathered up to one forward pass of pairs; see :mod:`mmrag.retriever.batching`), and
concurrent ``ainvoke`` calls on that path are gathered the same way (``max_batch``, ``max_wait_ms``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag import wiring
from mmrag._lazy import require
from mmrag.config import Settings
from mmrag.errors import ConfigError
from mmrag.retriever.aio import dense_search_async
from mmrag.retriever.batching import BatchSettings, SearchBatcher
from mmrag.retriever.core import Retriever
from mmrag.retriever.request import RetrievalMode, SearchRequest
from mmrag.types import Citation, Hit

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder

require("langchain_core", "langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManager,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langchain_core.runnables.config import get_config_list  # noqa: E402
from pydantic import ConfigDict, PrivateAttr  # noqa: E402

__all__ = ["MmragRetriever", "hit_to_document"]


def hit_to_document(hit: Hit) -> Document:
    """One hit as a LangChain ``Document`` (text or caption as content; ids, paths, scores as metadata)."""
    c = hit.chunk
    meta: dict[str, Any] = {k: v for k, v in c.metadata.items() if isinstance(k, str)}
    meta.update(
        id=c.id,
        modality=c.modality,
        source=c.source,
        image=c.image,
        page=c.citation.page if c.citation and c.citation.page is not None else c.metadata.get("page"),
        dense=hit.dense,
        sparse=hit.sparse,
        fused=hit.fused,
        rerank=hit.rerank,
        ann_rank=hit.ann_rank,
        final_rank=hit.final_rank,
        vector=hit.vector,
    )
    # Where to cite (boxes in PDF page points, the heading path): the keys are always there.
    cite = (c.citation or Citation()).to_dict()
    meta.update(
        bbox=cite["bbox"], boxes=cite["boxes"], page_size=cite["page_size"], headings=cite["headings"]
    )
    if hit.context:
        meta["context"] = [
            {
                "id": x.id,
                "modality": x.modality,
                "source": x.source,
                "text": x.text,
                "image": x.image,
                "page": x.metadata.get("page"),
                "position": x.metadata.get("position"),
                "citation": x.citation.to_dict() if x.citation else None,
            }
            for x in hit.context
        ]
    return Document(page_content=c.text or "", metadata=meta, id=c.id)


class MmragRetriever(BaseRetriever):
    """mmrag search as a LangChain retriever.

    Args:
        retriever: The mmrag :class:`~mmrag.retriever.Retriever` (encoder + store) to query.
        k: Documents per query.
        pool: ANN candidate pool (``None``: the retriever's).
        modality: Only ``"text"`` or ``"image"`` chunks (``None``: both).
        filters: Payload filter, mmrag's ``{key: value | [values]}`` form (keys ``source``,
            ``modality``, ``tenant``, ... ANDed); per-call ``filters=`` are merged over it.
        tenant: Only this tenant's chunks (required by a multi-tenant store).
        mode: First stage, :class:`~mmrag.retriever.request.RetrievalMode` (``"dense"`` or
            ``"hybrid"``: BM25 + dense); ``None``: the retriever's default.
        hybrid: The older spelling of ``mode``: ``True`` is ``"hybrid"``, ``False`` ``"dense"``
            (``mode`` wins when both are set).
        rerank: Ask for reranking (``False``: skip it); ``None``: the retriever's default.
        max_workers: Threads for blocking work in ``ainvoke`` on a server store (encoder).
        max_batch: Searches gathered into one encoder pass and one rerank batch (``batch``,
            ``abatch``, concurrent ``ainvoke``).
        max_wait_ms: How long a batch's first search waits for others to join.
        group_by: ``"source"``: ``k`` counts documents, each with up to ``group_size`` chunks.
        group_size: Chunks per document when grouping.
        expand: Neighbouring chunks per side attached as ``metadata["context"]`` (0: none).
        mmr_lambda: MMR diversity over the rerank pool, in [0, 1] (``None``: off).
        image_weight: A composed query's image share in [0, 1].

    Per call: ``invoke(query, image=PATH_OR_PIL, image_weight=W, filters={...}, k=N)``; an empty
    query with ``image=`` is an image query, a text query with ``image=`` a composed one.

    Example:
        >>> r = MmragRetriever.from_store("./.mmrag", k=3)                           # doctest: +SKIP
        >>> [d.metadata["source"] for d in r.invoke("dense passage retrieval")]      # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = 4
    pool: int | None = None
    modality: str | None = None
    filters: dict[str, Any] | None = None
    tenant: str | None = None
    mode: RetrievalMode | None = None
    hybrid: bool | None = None
    rerank: bool | None = None
    max_workers: int = 4
    max_batch: int = 32
    max_wait_ms: float = 5.0
    group_by: str | None = None
    group_size: int = 1
    expand: int = 0
    mmr_lambda: float | None = None
    image_weight: float = 0.5

    _executor: ThreadPoolExecutor | None = PrivateAttr(default=None)
    _batcher: SearchBatcher | None = PrivateAttr(default=None)
    _batcher_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_store(
        cls,
        location: str | Path | None = None,
        *,
        model: str | None = None,
        encoder: DualEncoder | None = None,
        reranker: str | None = None,
        collection: str | None = None,
        api_key: str | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> MmragRetriever:
        """Open a store (a directory or a Qdrant URL) with the models it was built with and its model
        set: hybrid where it holds BM25 vectors, then its default reranker when it records one.

        Args:
            location: Store directory or ``http(s)://`` URL (default ``MMRAG_STORE``, else ``./.mmrag``).
            model: Encoder spec (default: the store's own encoder).
            encoder: An encoder object to use instead (injected: tests, custom models).
            reranker: Cross-encoder for the second stage (default: ``MMRAG_RERANKER``, else the
                store's default reranker).
            collection / api_key: Qdrant server collection and key.
            settings: Base settings (default: ``Settings.from_env()``); the arguments above override it.
            options: :class:`MmragRetriever` fields (``k``, ``mode``, ``rerank``, ``tenant``, ...).

        The store stays open for the retriever's lifetime; :meth:`close` releases it (an embedded
        store admits one process at a time).
        """
        s = (settings or Settings.from_env()).with_(
            store=str(location) if location is not None else None,
            model=model,
            reranker=reranker,
            collection=collection,
            api_key=api_key,
        )
        store = wiring.open_store(s)
        try:
            # No second stage asked for: do not load a cross-encoder that would never run.
            second = None if options.get("rerank") is False else wiring.load_reranker(s, store)
            first = wiring.load_encoder(s, store) if encoder is None else encoder
            models = wiring.LoadedModels(first, second)
            return cls(retriever=wiring.build_retriever(models, store), **options)
        except BaseException:
            store.close()  # an embedded store admits one process: never leave it locked
            raise

    def close(self) -> None:
        """Release the store (and the async worker threads)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        self.retriever.store.close()

    # -- helpers ----------------------------------------------------------------------------
    def _mode(self) -> RetrievalMode | None:
        if self.mode is not None or self.hybrid is None:
            return self.mode
        return RetrievalMode.HYBRID if self.hybrid else RetrievalMode.DENSE

    def _request(
        self,
        query: str,
        image: Any,
        filters: Mapping[str, Any] | None,
        k: int | None,
        image_weight: float | None = None,
    ) -> SearchRequest:
        """One call as the retriever's request: per-call ``filters`` over the instance's, its tenant."""
        return SearchRequest(
            text=self._query(query, image),
            image=image,
            k=k or self.k,
            pool=self.pool,
            modality=self.modality,
            filters={**(self.filters or {}), **(filters or {})},
            tenant=self.tenant,
            mode=self._mode(),
            rerank=self.rerank,
            image_weight=self.image_weight if image_weight is None else image_weight,
            group_by=self.group_by,
            group_size=self.group_size,
            expand=self.expand,
            mmr_lambda=self.mmr_lambda,
        )

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mmrag-lc")
        return self._executor

    def _searches(self) -> SearchBatcher:
        """The micro-batcher (created on first use; no bound: every caller's input runs)."""
        with self._batcher_lock:
            if self._batcher is None:
                settings = BatchSettings(
                    max_batch=self.max_batch, max_wait_ms=self.max_wait_ms, queue_size=None
                )
                self._batcher = SearchBatcher(self.retriever, settings)
            return self._batcher

    @staticmethod
    def _query(query: str, image: Any) -> str | None:
        # An empty text beside an image is an image query; text and image together a composed one.
        return None if image is not None and not query.strip() else query

    def _run(self, req: SearchRequest) -> list[Document]:
        return [hit_to_document(h) for h in self.retriever.run(req).hits]

    def _dense_only(self, req: SearchRequest) -> bool:
        # The async store path ranks by dense score alone; a query that will run another stage (asked
        # for here, or on by default in the Retriever) goes through Retriever.
        return not any(self.retriever._stages(req.hybrid, req.rerank, text=req.text is not None))

    # -- BaseRetriever ----------------------------------------------------------------------
    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        image: str | Path | Any = None,
        filters: Mapping[str, Any] | None = None,
        k: int | None = None,
        image_weight: float | None = None,
    ) -> list[Document]:
        return self._run(self._request(query, image, filters, k, image_weight))

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        image: str | Path | Any = None,
        filters: Mapping[str, Any] | None = None,
        k: int | None = None,
        image_weight: float | None = None,
    ) -> list[Document]:
        req = self._request(query, image, filters, k, image_weight)
        # The awaited path is one dense search of one query vector (mmrag.retriever.aio): a composed
        # query or reshaped results (group, expand, MMR) go through Retriever.run, on the micro-batcher.
        if not (self.retriever.store.supports_async and self._dense_only(req)) or req.composed or req.refines:
            res = await asyncio.wrap_future(self._searches().submit(req, bounded=False))
        else:
            res = await dense_search_async(self.retriever, req, self._pool())
        return [hit_to_document(h) for h in res.hits]

    def batch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Document]]:
        """Many text queries as one micro-batch: one encoder pass, rerank pools gathered, the
        store searches per input (see :mod:`mmrag.retriever.batching`).

        Per-call arguments fall back to LangChain's per-input batch. With ``return_exceptions``, an
        input that fails gets its error and the others their documents.
        """
        if not inputs:
            return []
        if kwargs:  # per-call arguments: LangChain's batch, one call per input
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        configs = get_config_list(config, len(inputs))
        runs: list[CallbackManagerForRetrieverRun] = []
        for text, cfg in zip(inputs, configs, strict=True):
            manager = CallbackManager.configure(
                cfg.get("callbacks"),
                None,
                inheritable_tags=cfg.get("tags"),
                local_tags=self.tags,
                inheritable_metadata=cfg.get("metadata"),
                local_metadata=self.metadata,
            )
            runs.append(manager.on_retriever_start(None, text, name=cfg.get("run_name") or self.get_name()))
        try:
            for text in inputs:
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(f"batch takes non-empty text queries, got {text!r}")
            results = self._searches().run_many([self._request(t, None, None, None) for t in inputs])
        except Exception as exc:
            for run in runs:
                run.on_retriever_error(exc)
            if return_exceptions:
                return [exc for _ in inputs]  # type: ignore[misc]
            raise
        out: list[Any] = []
        for run, res in zip(runs, results, strict=True):
            if isinstance(res, Exception):
                run.on_retriever_error(res)
                out.append(res)
            else:
                out.append([hit_to_document(h) for h in res.hits])
                run.on_retriever_end(out[-1])
        failed = [r for r in out if isinstance(r, Exception)]
        if failed and not return_exceptions:
            raise failed[0]
        return out

    async def abatch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Document]]:
        """:meth:`batch` (one micro-batch) off the event loop; per-call arguments fall back to
        LangChain's concurrent ``ainvoke`` per input."""
        if kwargs:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool(), lambda: self.batch(inputs, config, return_exceptions=return_exceptions)
        )
