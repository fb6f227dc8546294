"""The awaited dense search: one query vector, encoded off the event loop, searched on the store's
async client (a Qdrant server's ``AsyncQdrantClient``), traced like :meth:`Retriever.run`.

LangChain's ``ainvoke`` takes this path for a plain dense query on a server store; every other
search runs :meth:`Retriever.run` on the micro-batcher (:mod:`mmrag.retriever.batching`).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

from mmrag.errors import ConfigError
from mmrag.retriever.core import Retriever, SearchResult
from mmrag.retriever.hits import dense_hits
from mmrag.retriever.request import SearchRequest
from mmrag.tracing import span

__all__ = ["dense_search_async"]


async def dense_search_async(
    retriever: Retriever, req: SearchRequest, executor: Executor | None = None
) -> SearchResult:
    """One text or one image query, dense only: the encoder runs on ``executor`` (CPU-bound torch
    code must not block the loop), the store search is awaited. Spans: ``mmrag.search`` with
    ``mmrag.encode`` and ``mmrag.ann`` as its children.

    Example:
        >>> res = await dense_search_async(retriever, SearchRequest(text="solar panels"))  # doctest: +SKIP
    """
    if req.composed or req.refines:
        raise ConfigError("the awaited search takes one text or one image, without group/expand/MMR")
    if req.text is not None and not req.text.strip():
        raise ConfigError("the text query is empty")
    loop = asyncio.get_running_loop()
    enc, size = retriever.encoder, max(req.k, req.pool or retriever.pool)
    with span("search", k=req.k, image=req.image is not None, awaited=True) as s:
        t0 = time.perf_counter()
        with span("encode", queries=1):
            if req.text is not None:
                qvec = await loop.run_in_executor(executor, enc.encode_text, [req.text])
            elif req.image is not None:
                qvec = await loop.run_in_executor(executor, enc.encode_image, [req.image])
            else:
                raise ConfigError("pass a text query or an image")
        t1 = time.perf_counter()
        with span("ann", k=req.k, pool=size, vector=retriever.vector) as sp:
            results = await retriever.store.asearch(
                retriever.vector, qvec, size, modality=req.modality, filters=req.search_filters(),
                options=retriever.options,
            )  # fmt: skip
            hits = dense_hits(results, req.k, retriever.vector)[0]
            sp.set(hits=len(hits))
        t2 = time.perf_counter()
        s.set(hits=len(hits))
    return SearchResult(hits, {"encode": t1 - t0, "ann": t2 - t1, "total": t2 - t0})
