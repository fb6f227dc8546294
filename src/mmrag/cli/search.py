"""``mmrag search``, ``mmrag info`` and ``mmrag model-set``: query the store, describe it, choose its
default pipeline.

With no stage flags, ``mmrag search`` runs the store's model set: hybrid (BM25 + dense) where the store
holds BM25 vectors, then the store's default reranker when it has one. ``--dense-only`` / ``--mode`` and
``--no-rerank`` turn stages off for one search.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag import wiring
from mmrag.cli._common import _open_store, _settings, add_common, emit_report, status
from mmrag.config import DEFAULT_FUSION
from mmrag.errors import MmragError

if TYPE_CHECKING:
    from mmrag.retriever.request import RetrievalMode
    from mmrag.store import QdrantStore


def add_search_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search by text or by image (the store's default pipeline)")
    p.add_argument("query", nargs="?", help="text query")
    p.add_argument("--image", type=Path, help="image query (file); with a text QUERY too: a composed query")
    p.add_argument(
        "--image-weight", type=float, default=0.5, help="composed query: the image's share in [0, 1]"
    )
    p.add_argument("--k", type=int, default=10, help="results to return")
    p.add_argument("--pool", type=int, default=50, help="candidate pool handed to the reranker (>= k)")
    p.add_argument("--modality", choices=["text", "image"], help="only this modality")
    p.add_argument("--source", help="only chunks from this source path")
    p.add_argument("--hnsw-ef", type=int, help="HNSW search breadth")
    p.add_argument("--tenant", help="search only this tenant's chunks (needed when MMRAG_TENANCY=1)")
    stage = p.add_mutually_exclusive_group()
    stage.add_argument(
        "--mode", choices=["dense", "hybrid"], help="first stage [default: the store's model set]"
    )
    stage.add_argument("--dense-only", action="store_true", help="dense ANN only (no BM25)")
    stage.add_argument("--hybrid", action="store_true", help="fuse BM25 with dense search (= --mode hybrid)")
    p.add_argument(
        "--fusion",
        choices=["dbsf", "rrf"],
        default=DEFAULT_FUSION,
        help=f"hybrid fusion method [default: {DEFAULT_FUSION}]",
    )
    p.add_argument("--rrf-k", type=int, help="RRF k [default 60; only with --fusion rrf]")
    p.add_argument("--dense-pool", type=int, help="hybrid: dense candidates (default --pool)")
    p.add_argument("--sparse-pool", type=int, help="hybrid: BM25 candidates (default --pool)")
    rr = p.add_mutually_exclusive_group()
    rr.add_argument("--rerank", action="store_true", help="require the rerank stage (error if none)")
    rr.add_argument("--no-rerank", action="store_true", help="first stage only")
    p.add_argument(
        "--reranker",
        help="cross-encoder for this search: HF name (cross-encoder/ms-marco-MiniLM-L-6-v2), folder, or a "
        "`mmrag train-reranker` checkpoint [env MMRAG_RERANKER; default: the store's model set]",
    )
    p.add_argument("--int8", action="store_true", help="run the cross-encoder int8 (dynamic quantization)")
    p.add_argument("--max-length", type=int, help="cross-encoder tokens per pair")
    add_result_options(p)
    add_common(p)


def add_result_options(p: Any) -> None:
    """Grouping, context and diversity flags (docs/search.md, "Results for a RAG app")."""
    g = p.add_argument_group("results for a RAG app")
    g.add_argument("--group-by", choices=["source"], help="k counts documents, not chunks")
    g.add_argument("--group-size", type=int, default=1, help="hits kept per document with --group-by")
    g.add_argument("--expand", type=int, default=0, help="attach N neighbouring chunks per side as context")
    g.add_argument(
        "--mmr", type=float, metavar="LAMBDA", help="MMR diversity over the pool, lambda in [0, 1]"
    )


def add_info_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="store statistics, encoders and the default pipeline")
    add_common(p)


def add_model_set_parser(sub: Any) -> None:
    p = sub.add_parser(
        "model-set",
        help="show or set the store's default pipeline: hybrid on/off and the default reranker",
        description="With no options, print the model set. The choices are stored in the store, so "
        "`mmrag search`, the API, the UI and LangChain all run them by default.",
    )
    rr = p.add_mutually_exclusive_group()
    rr.add_argument("--reranker", help="default cross-encoder (HF name, folder, train-reranker checkpoint)")
    rr.add_argument("--no-reranker", action="store_true", help="first stage only by default")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, help="run the reranker int8")
    p.add_argument("--max-length", type=int, help="reranker tokens per pair")
    p.add_argument("--fusion-weight", type=float, help="text rerank weight in [0, 1] (default: checkpoint's)")
    p.add_argument("--mode", choices=["dense", "hybrid"], help="default first stage")
    p.add_argument("--vector", help="default dense vector (one of `mmrag info`'s)")
    add_common(p)


def _mode(args: argparse.Namespace) -> RetrievalMode | None:
    from mmrag.retriever.request import RetrievalMode

    if args.dense_only:
        return RetrievalMode.DENSE
    if args.hybrid:
        return RetrievalMode.HYBRID
    return RetrievalMode(args.mode) if args.mode else None


def cmd_search(args: argparse.Namespace) -> int:
    from mmrag.retriever.report import SearchReport
    from mmrag.retriever.request import RetrievalMode, SearchRequest

    if args.query is None and args.image is None:
        raise MmragError("give a text QUERY, --image FILE, or both (a composed query)")
    s = _settings(args).with_(reranker=args.reranker)
    mode = _mode(args)
    req = SearchRequest(
        text=args.query,
        image=args.image,
        k=args.k,
        modality=args.modality,
        filters={"source": str(Path(args.source).resolve())} if args.source else None,
        tenant=args.tenant or None,
        mode=mode,
        rerank=False if args.no_rerank else (True if args.rerank else None),
        image_weight=args.image_weight,
        group_by=args.group_by,
        group_size=args.group_size,
        expand=args.expand,
        mmr_lambda=args.mmr,
    )
    with _open_store(s) as store:
        reranker = None
        status(args, f"loading encoder {wiring.encoder_spec(s, store)}…")
        if not args.no_rerank and args.image is None:  # the cross-encoder reads text queries only
            # the stored fp32 ONNX copy when there is one (no torch): see mmrag.rerank.stored
            reranker = wiring.load_query_reranker(
                s, store, max_length=args.max_length, int8=args.int8 or None
            )
        if args.rerank and reranker is None:
            recorded = wiring.reranker_spec(s, store)
            if recorded is not None:
                raise MmragError(
                    f"--rerank: the store's default reranker {recorded.model} could not be loaded here "
                    "(see the warning above); pass --reranker MODEL"
                )
            raise MmragError(
                "--rerank needs a reranker: pass --reranker MODEL, or record one in the store with "
                "`mmrag model-set --reranker MODEL`"
            )
        # a text query runs on the stored text tower when there is one (no torch; under a second)
        load = wiring.load_query_encoder if args.image is None else wiring.load_encoder
        models = wiring.LoadedModels(encoder=load(s, store), reranker=reranker)
        note = None if args.no_rerank else wiring.pipeline_note(models, store)
        retriever = wiring.build_retriever(
            models,
            store,
            pool=args.pool,
            hnsw_ef=args.hnsw_ef,
            hybrid=None if mode is None else mode is RetrievalMode.HYBRID,
            fusion=args.fusion,
            rrf_k=_rrf_k(args),
            dense_pool=args.dense_pool,
            sparse_pool=args.sparse_pool,
        )
        res = retriever.run(req)
    text_query = args.image is None
    hybrid = text_query and retriever.hybrid
    reranked = text_query and any(h.rerank is not None for h in res.hits)
    if note and text_query and not args.quiet:
        print(f"note: {note}", file=sys.stderr)
    report = SearchReport(
        query=args.query,
        image=str(args.image) if args.image else None,
        encoder=models.encoder.id,
        aligned=models.encoder.aligned,
        hybrid=hybrid,
        fusion=args.fusion if hybrid else None,
        reranker=getattr(models.reranker, "id", None) if reranked else None,
        hits=res.hits,
        timings=res.timings,
        modality=args.modality,
    )
    emit_report(args, report)
    return 0


def _info(store: QdrantStore) -> Any:
    """The store's stats with the model set it records (what every face runs unless told otherwise)."""
    from mmrag.store.info import StoreInfo

    model_set = store.meta.model_set() if store.vectors else None
    return StoreInfo.from_stats(store.stats(), model_set=model_set)


def _overrides(s: Any) -> None:
    """Say on stderr when this process's settings replace the store's recorded models."""
    for name, value in (("MMRAG_MODEL / --model", s.model), ("MMRAG_RERANKER / --reranker", s.reranker)):
        if value:
            print(f"note: {name} = {value} overrides the store's record for this process", file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> int:
    s = _settings(args)
    with _open_store(s) as store:
        info = _info(store)
    _overrides(s)
    emit_report(args, info)
    return 0


def cmd_model_set(args: argparse.Namespace) -> int:
    from mmrag.types import RerankerSpec

    s = _settings(args)
    with _open_store(s) as store:
        if not store.vectors:
            raise MmragError(f"store {store.location} is empty: ingest something first (mmrag ingest PATH)")
        current = store.meta.model_set().reranker
        options = args.int8 is not None or args.max_length is not None or args.fusion_weight is not None
        if args.reranker or (current and options):
            base = RerankerSpec(wiring.model_ref(args.reranker)) if args.reranker else current
            assert base is not None
            weights = {"text": args.fusion_weight} if args.fusion_weight is not None else base.fusion_weights
            spec = dataclasses.replace(
                base,
                int8=base.int8 if args.int8 is None else args.int8,
                max_length=args.max_length or base.max_length,
                fusion_weights=weights,
            )
            # Load it once now, so a wrong name fails here and not in every later search.
            status(args, f"loading reranker {spec.model} to check it…")
            wiring.load_reranker(s.with_(reranker=spec.model), max_length=spec.max_length, int8=spec.int8)
            store.meta.set_reranker(spec)
        elif args.no_reranker:
            store.meta.set_reranker(None)
        elif options:
            raise MmragError("--int8/--max-length/--fusion-weight need a reranker: add --reranker MODEL")
        if args.mode:
            if args.mode == "hybrid" and not store.has_sparse:
                raise MmragError(f"store {store.location} has no BM25 vectors: hybrid search cannot run")
            store.meta.set_hybrid(args.mode == "hybrid")
        if args.vector:
            store.set_default_vector(args.vector)
        info = _info(store)
    emit_report(args, _ModelSetView(info))
    return 0


@dataclasses.dataclass(frozen=True, slots=True)
class _ModelSetView:
    """``mmrag model-set``'s output: just the model-set part of ``mmrag info``."""

    info: Any

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.info.location, "model_set": self.info.to_dict().get("model_set")}

    def to_text(self) -> str:
        return "\n".join([f"store: {self.info.location}", *self.info.model_set_lines()])


def _rrf_k(args: argparse.Namespace) -> int:
    """``--rrf-k`` only means something to RRF: with DBSF (the default) it is an error, not ignored."""
    if args.rrf_k is None:
        return 60
    if args.fusion != "rrf":
        raise MmragError(f"--rrf-k applies to --fusion rrf only (this search fuses with {args.fusion})")
    return int(args.rrf_k)
