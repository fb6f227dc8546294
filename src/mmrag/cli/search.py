"""``mmrag search`` and ``mmrag info``: query the store, describe it."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from mmrag import wiring
from mmrag.cli._common import _open_store, _settings, add_common, emit_report
from mmrag.errors import MmragError


def add_search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search by text or by image")
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", type=Path, help="image query (file)")
    p.add_argument("--k", type=int, default=10, help="results to return")
    p.add_argument("--pool", type=int, default=50, help="ANN candidate pool (>= k)")
    p.add_argument("--modality", choices=["text", "image"], help="only this modality")
    p.add_argument("--source", help="only chunks from this source path")
    p.add_argument("--hnsw-ef", type=int, help="HNSW search breadth")
    p.add_argument("--tenant", help="search only this tenant's chunks (needed when MMRAG_TENANCY=1)")
    p.add_argument("--hybrid", action="store_true", help="fuse BM25 with dense search")
    p.add_argument("--fusion", choices=["rrf", "dbsf"], default="rrf", help="hybrid fusion method")
    p.add_argument("--rrf-k", type=int, default=60, help="RRF k")
    p.add_argument("--dense-pool", type=int, help="hybrid: dense candidates (default --pool)")
    p.add_argument("--sparse-pool", type=int, help="hybrid: BM25 candidates (default --pool)")
    p.add_argument("--rerank", action="store_true", help="rerank the top --pool with --reranker")
    p.add_argument(
        "--reranker",
        help="cross-encoder: HF name (cross-encoder/ms-marco-MiniLM-L-6-v2, BAAI/bge-reranker-base), "
        "folder, or a `mmrag train-reranker` checkpoint",
    )
    p.add_argument("--int8", action="store_true", help="run the cross-encoder int8 (dynamic quantization)")
    p.add_argument("--max-length", type=int, help="cross-encoder tokens per pair")
    add_common(p)


def add_info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="store statistics and encoder")
    add_common(p)


def cmd_search(args: argparse.Namespace) -> int:
    from mmrag.retriever.report import SearchReport
    from mmrag.retriever.request import RetrievalMode, SearchRequest

    if (args.query is None) == (args.image is None):
        raise MmragError("give a text QUERY or --image FILE (exactly one)")
    # Only --reranker names the search's cross-encoder (MMRAG_RERANKER is the UI's and the API's).
    s = dataclasses.replace(_settings(args), reranker=args.reranker if args.rerank else None)
    if args.rerank and not args.reranker:
        raise MmragError(
            "--rerank needs --reranker MODEL: a HF cross-encoder name or a `mmrag train-reranker` checkpoint"
        )
    req = SearchRequest(
        text=args.query,
        image=args.image,
        k=args.k,
        modality=args.modality,
        filters={"source": str(Path(args.source).resolve())} if args.source else None,
        tenant=args.tenant or None,
        mode=RetrievalMode.HYBRID if args.hybrid else None,
        rerank=args.rerank or None,
    )
    with _open_store(s) as store:
        models = wiring.LoadedModels(
            encoder=wiring.load_encoder(s, store),
            reranker=wiring.load_reranker(s, max_length=args.max_length, int8=args.int8),
        )
        retriever = wiring.build_retriever(
            models,
            store,
            pool=args.pool,
            hnsw_ef=args.hnsw_ef,
            hybrid=args.hybrid,
            fusion=args.fusion,
            rrf_k=args.rrf_k,
            dense_pool=args.dense_pool,
            sparse_pool=args.sparse_pool,
        )
        res = retriever.run(req)
    report = SearchReport(
        query=args.query,
        image=str(args.image) if args.image else None,
        encoder=models.encoder.id,
        aligned=models.encoder.aligned,
        hybrid=args.hybrid and args.image is None,
        fusion=args.fusion if args.hybrid else None,
        reranker=getattr(models.reranker, "id", None),
        hits=res.hits,
        timings=res.timings,
        modality=args.modality,
    )
    emit_report(args, report)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from mmrag.types import StoreInfo

    s = _settings(args)
    with _open_store(s) as store:
        info = StoreInfo.from_stats(store.stats())
    emit_report(args, info)
    return 0
