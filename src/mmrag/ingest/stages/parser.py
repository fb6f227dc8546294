"""The parser stage: the bytes the reader read become chunks (and decoded images).

Runs where the reader ran (a worker thread, or a Ray task). A file no loader can read becomes a
skip with the loader's reason; with a tenant, the chunks are the tenant's copies.
"""

from __future__ import annotations

import time
from dataclasses import replace

from mmrag.errors import LoaderError
from mmrag.ingest.loaders import load_document
from mmrag.ingest.stages.context import FileResult, RunContext, skipped


class Parser:
    """Parses the ``"load"`` results of the reader; passes every other result through.

    Args:
        ctx: The run's context (load options, captions, tenant).

    Example:
        >>> parsed = Parser(ctx).parse(reader.read(path, root))                  # doctest: +SKIP
        >>> [c.modality for c in parsed.chunks]                                  # doctest: +SKIP
        ['text', 'text']
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def parse(self, res: FileResult) -> FileResult:
        """``res`` with its chunks and decoded images (its bytes dropped), or a skip."""
        raw = res.raw
        if res.status != "load" or raw is None:
            return res
        t0 = time.perf_counter()
        try:
            doc = load_document(
                raw.path,
                raw.data,
                opts=self.ctx.load,
                captions=self.ctx.captions,
                source=raw.source,
                digest=raw.digest,
            )
        except LoaderError as exc:
            return skipped(res.path, res.source, str(exc), res.seconds + time.perf_counter() - t0)
        except (MemoryError, RecursionError) as exc:  # pathological input; keep going
            reason = f"loader ran out of resources: {type(exc).__name__}"
            return skipped(res.path, res.source, reason, res.seconds + time.perf_counter() - t0)
        chunks, images = doc.chunks, doc.images
        if self.ctx.tenant is not None and chunks:
            from mmrag.tenancy import with_tenant

            owned = with_tenant(chunks, self.ctx.tenant)
            images = {n.id: images[o.id] for o, n in zip(chunks, owned, strict=True) if o.id in images}
            chunks = owned
        seconds = res.seconds + time.perf_counter() - t0
        return replace(res, raw=None, chunks=chunks, images=images, seconds=seconds)
