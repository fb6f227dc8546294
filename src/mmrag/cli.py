"""The ``mmrag`` command: ingest | search | eval | train | train-reranker | info | verify | ui | serve.

Every command takes ``--store`` (env ``MMRAG_STORE``) and ``--model`` (env ``MMRAG_MODEL``);
``--json`` prints stable, documented JSON on stdout (progress and logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmrag.config import Settings
from mmrag.errors import MmragError

log = logging.getLogger("mmrag")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", help="store directory (Qdrant Edge) or Qdrant URL [env MMRAG_STORE, default ./.mmrag]"
    )
    p.add_argument(
        "--model",
        help="encoder spec: lite | openclip:ARCH/TAG | hf-hub:REPO | checkpoint dir "
        "[env MMRAG_MODEL; default: the store's encoder, else lite]",
    )
    p.add_argument("--api-key", help="Qdrant server API key [env MMRAG_API_KEY]")
    p.add_argument("--collection", help="collection name on a Qdrant server [env MMRAG_COLLECTION]")
    p.add_argument("--threads", type=int, help="torch threads, 0 = default [env MMRAG_THREADS]")
    p.add_argument("--batch-size", type=int, help="encoder batch size [env MMRAG_BATCH_SIZE]")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmrag", description="Multimodal RAG retriever (text + images, Qdrant)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest a folder or files into the store")
    p.add_argument("paths", nargs="+", help="folders or files")
    p.add_argument("--captions", type=Path, help="JSONL of {image, captions} for image captions")
    p.add_argument("--files-from", type=Path, help="only these file names (one per line, relative to PATH)")
    p.add_argument("--limit", type=int, help="ingest at most N files")
    p.add_argument("--workers", type=int, default=2, help="file-parsing threads")
    p.add_argument(
        "--text-window",
        type=int,
        default=256,
        help="text chunks embedded together (sorted by length: less padding) [default: 256]",
    )
    p.add_argument(
        "--chunk-tokens",
        type=int,
        help="tokens per text chunk, counted with the encoder's tokenizer [default: its context length]",
    )
    p.add_argument("--chunk-words", type=int, help="count chunks in words instead of tokens (e.g. 160)")
    p.add_argument("--overlap", type=int, default=32, help="overlap between chunks (tokens, or words)")
    p.add_argument("--max-file-mb", type=float, default=200.0, help="skip files larger than this")
    p.add_argument(
        "--max-image-mpx", type=float, default=64.0, help="skip images over this many megapixels (bombs)"
    )
    p.add_argument("--prune", action="store_true", help="delete chunks of files that no longer exist")
    p.add_argument("--no-ocr", action="store_true", help="do not OCR scans (tesseract)")
    p.add_argument("--no-pdf-images", action="store_true", help="do not store figures of PDF pages")
    p.add_argument("--report", type=Path, help="write the run summary with every skip reason as JSON")
    p.add_argument("--ledger", help="ingest ledger (SQLite) [default: in the store dir; server: ~/.cache]")
    p.add_argument("--tenant", help="owner of the ingested chunks (needed when MMRAG_TENANCY=1)")
    p.add_argument(
        "--engine",
        choices=["default", "ray"],
        default="default",
        help="where parsing and encoding run: threads here, or Ray Data stages (pip install 'mmrag[ray]')",
    )
    p.add_argument("--ray-address", help="Ray cluster to join [default: RAY_ADDRESS, else a local Ray]")
    p.add_argument("--ray-workers", type=int, help="encoder actors, each loading the model once [1]")
    p.add_argument("--ray-gpus", type=float, help="GPUs per encoder actor [0]")
    p.add_argument("--ray-files-per-batch", type=int, help="files per Ray batch [8]")
    _common(p)

    p = sub.add_parser("verify", help="check that the ingest ledger and the store agree")
    p.add_argument("--repair", action="store_true", help="undo interrupted writes and fix disagreements")
    p.add_argument("--ledger", help="ingest ledger (SQLite) [default: in the store dir; server: ~/.cache]")
    _common(p)

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
    _common(p)

    p = sub.add_parser("eval", help="evaluate on a BEIR or image-caption dataset")
    p.add_argument(
        "--dataset", type=Path, required=True, help="dataset folder (BEIR or captions.jsonl + images/)"
    )
    p.add_argument("--split", help="split (BEIR default train; image-caption default dev)")
    p.add_argument("--limit", type=int, help="image-caption: first N images")
    p.add_argument("--queries-from", type=Path, help="BEIR: only these query ids (one per line)")
    p.add_argument("--k", type=int, default=10, help="nDCG cut-off")
    p.add_argument("--eval-store", help="index into this store instead of a temporary one")
    _common(p)

    p = sub.add_parser("train", help="train the lite encoder's heads on an image-caption dataset")
    p.add_argument(
        "--dataset", type=Path, required=True, help="image-caption folder (captions.jsonl + images/)"
    )
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--loss", choices=["triplet", "infonce"], default="triplet")
    p.add_argument(
        "--strategy",
        choices=["given", "random", "batch_hard", "semi_hard"],
        default="semi_hard",
        help="triplet negatives",
    )
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--distance", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--train-batch", type=int, default=256, help="pairs per training step")
    p.add_argument("--lr", type=float, help="AdamW learning rate [3e-3; --from-store: 3e-4, fine-tuning]")
    p.add_argument("--dropout", type=float, default=0.5, help="input dropout on cached features")
    p.add_argument("--patience", type=int, default=6, help="early stopping on dev t2i Recall@10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-text-head",
        action="store_true",
        help="also train the text head (default: locked, so text->text search stays MiniLM's)",
    )
    p.add_argument("--limit", type=int, help="first N images of each split (quick runs)")
    p.add_argument("--cache", type=Path, help="feature cache folder [default .cache/features]")
    p.add_argument(
        "--from-store",
        action="store_true",
        help="closed loop on --store: mine hard negatives from it, train from its default encoder, "
        "re-embed it into a new vector, evaluate both on the dataset's dev split, switch only if better",
    )
    p.add_argument("--mine-k", type=int, default=10, help="mined negatives per caption (--from-store)")
    p.add_argument("--ledger", help="the store's ingest ledger (--from-store) [default: as `mmrag ingest`]")
    p.add_argument("--mined-weight", type=float, default=1.0, help="weight of the mined-negative term")
    p.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="--from-store: switch only if t2i R@10 gains more than this",
    )
    p.add_argument(
        "--text-dataset", type=Path, help="BEIR folder to tune the text head on jointly (e.g. scifact)"
    )
    p.add_argument("--text-triplets", type=Path, help="its triplets file with train/val folds")
    p.add_argument(
        "--unfreeze-blocks",
        type=int,
        default=0,
        help="second stage: also train the last N image-trunk blocks (BatchNorm frozen) [0 = heads only]",
    )
    p.add_argument("--unfreeze-epochs", type=int, default=8, help="epochs of the unfrozen stage")
    p.add_argument("--backbone-lr", type=float, default=1e-4, help="learning rate of the unfrozen blocks")
    p.add_argument("--text-weight", type=float, default=1.0, help="weight of the text triplet term")
    _common(p)

    p = sub.add_parser("train-reranker", help="train the cross-encoder on SciFact (hard negatives mined)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--data", type=Path, help="data root with scifact/ and triplets/ [env MMRAG_DATA]")
    p.add_argument("--base", help="cross-encoder to start from (default: offline all-MiniLM-L6-v2)")
    p.add_argument("--minutes", type=float, default=11.0, help="wall-clock budget for training steps")
    p.add_argument("--negatives", type=int, default=3, help="hard negatives per positive")
    p.add_argument("--depth", type=int, default=30, help="first-stage candidates to mine from")
    p.add_argument("--titles", type=int, default=400, help="title -> abstract groups")
    p.add_argument("--max-length", type=int, default=112, help="tokens per pair")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4, help="encoder learning rate")
    p.add_argument("--head-lr", type=float, default=1e-2, help="scoring head learning rate")
    p.add_argument("--freeze-layers", type=int, default=3, help="bottom layers kept fixed")
    p.add_argument("--batch-groups", type=int, default=8, help="groups (1 positive + negatives) per step")
    p.add_argument("--val-pool", type=int, default=20, help="pool the fusion weight is learned on")
    p.add_argument("--seed", type=int, default=0, help="negative sampling and shuffling seed")
    p.add_argument("--limit-queries", type=int, help="first N training queries (quick runs)")
    p.add_argument("--limit-val", type=int, help="first N validation queries (quick runs)")
    p.add_argument("--cache", type=Path, help="dense-vector cache folder [default .cache/bench]")
    p.add_argument("--eval-store", help="index SciFact into this store instead of a temporary one")
    _common(p)

    p = sub.add_parser("info", help="store statistics and encoder")
    _common(p)

    p = sub.add_parser("ui", help="start the Streamlit app (extra 'ui') on the store")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8501, help="port to listen on")
    p.add_argument(
        "--ingest-root", help="folder the app may ingest from [env MMRAG_INGEST_ROOT; default: cwd and data]"
    )
    p.add_argument(
        "--reranker", help="cross-encoder for the rerank toggle [env MMRAG_RERANKER; default: none]"
    )
    _common(p)

    p = sub.add_parser("serve", help="run the REST API (extra 'api'; see mmrag.api)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--reranker", help="cross-encoder for rerank=true [env MMRAG_RERANKER; default: none]")
    _common(p)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_(
        store=args.store,
        model=args.model,
        api_key=args.api_key,
        collection=args.collection,
        threads=args.threads,
        batch_size=args.batch_size,
    )


def _open_store(s: Settings) -> Any:
    from mmrag.store import QdrantStore

    return QdrantStore.open(
        s.store,
        collection=s.collection,
        api_key=s.api_key,
        tenancy=s.tenancy,
        shards=s.shards or None,
        replication=s.replication or None,
    )


def _spec(s: Settings, store: Any = None) -> str:
    return s.model or (store.default_spec if store is not None else None) or "lite"


def _encoder(s: Settings, store: Any = None) -> Any:
    from mmrag.encoders import cached_encoder

    return cached_encoder(_spec(s, store), batch_size=s.batch_size, threads=s.threads)


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False) if args.json else text)


def _ledger(args: argparse.Namespace, s: Settings, store: Any) -> Any:
    from mmrag.ingest.ledger import Ledger, default_ledger_path

    return Ledger(args.ledger or default_ledger_path(store, s.collection))


def _ray_runner(args: argparse.Namespace, s: Settings, store: Any, encoder: Any, **kw: Any) -> Any:
    import functools

    from mmrag.encoders import load_encoder
    from mmrag.ingest.ray_engine import RayIngestRunner, RayOptions

    given = {"workers": args.ray_workers, "gpus_per_worker": args.ray_gpus}
    given["files_per_batch"] = args.ray_files_per_batch
    opts = RayOptions(address=args.ray_address, **{k: v for k, v in given.items() if v is not None})
    # Each worker loads the driver's model from the same spec (a checkpoint path must exist there).
    factory = functools.partial(load_encoder, _spec(s, store), batch_size=s.batch_size, threads=s.threads)
    return RayIngestRunner(encoder, store, encoder_factory=factory, ray_options=opts, **kw)


def cmd_ingest(args: argparse.Namespace) -> int:
    from mmrag.ingest import ChunkingOptions, IngestOptions, IngestRunner, read_captions

    ray_flags = [args.ray_address, args.ray_workers, args.ray_gpus, args.ray_files_per_batch]
    if args.engine != "ray" and any(v is not None for v in ray_flags):
        raise MmragError("--ray-* options need --engine ray")
    if args.engine == "ray":
        from mmrag._lazy import require

        require("ray.data", "ray")  # before the store opens and the model loads
    s = _settings(args)
    captions = read_captions(args.captions) if args.captions else None
    files = None
    if args.files_from:
        if len(args.paths) != 1 or not Path(args.paths[0]).is_dir():
            raise MmragError("--files-from needs exactly one folder PATH the names are relative to")
        names = [ln.strip() for ln in args.files_from.read_text().splitlines() if ln.strip()]
        files = [Path(args.paths[0]) / n for n in names][: args.limit]
    with _open_store(s) as store:
        encoder = _encoder(s, store)
        if args.chunk_words is not None:
            chunking = ChunkingOptions(words=args.chunk_words, overlap=args.overlap)
        else:
            chunking = ChunkingOptions.for_encoder(
                encoder, overlap=args.overlap, max_tokens=args.chunk_tokens
            )
        opts = IngestOptions(
            batch_size=s.batch_size,
            text_window=args.text_window,
            workers=args.workers,
            max_file_mb=args.max_file_mb,
            chunking=chunking,
            prune=args.prune,
            ocr=not args.no_ocr,
            pdf_images=not args.no_pdf_images,
            max_image_pixels=int(args.max_image_mpx * 1e6),
            tenant=args.tenant,
        )
        with _ledger(args, s, store) as ledger:
            kw: dict[str, Any] = {"options": opts, "progress": not args.quiet, "ledger": ledger}
            if args.engine == "ray":
                runner = _ray_runner(args, s, store, encoder, **kw)
            else:
                runner = IngestRunner(encoder, store, **kw)
            summary = runner.run(args.paths, captions=captions, limit=args.limit, files=files)
        total = store.count()
    d = summary.to_dict() | {"store": s.store, "points_in_store": total}
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(d, indent=2, ensure_ascii=False))
    lines = [
        f"files: {summary.files_seen} seen, {summary.files_loaded} loaded, {len(summary.skipped)} skipped",
        f"chunks: {summary.chunks.get('text', 0)} text, {summary.chunks.get('image', 0)} image "
        f"({summary.already_stored} already stored)",
        f"embedded {summary.embedded}, written {summary.written} into {s.store} (vector {summary.vector}); "
        f"{total} points in store; {summary.seconds:.1f} s",
        f"files: {summary.files_new} new, {summary.files_changed} changed, "
        f"{summary.files_unchanged} unchanged; {summary.deleted} stale chunks deleted, "
        f"{summary.pruned} files pruned",
    ]
    lines += [f"  skipped {sk.path}: {sk.reason}" for sk in summary.skipped]
    _emit(args, d, "\n".join(lines))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from mmrag.retriever import Retriever

    if (args.query is None) == (args.image is None):
        raise MmragError("give a text QUERY or --image FILE (exactly one)")
    s = _settings(args)
    filters: dict[str, str] = {"source": str(Path(args.source).resolve())} if args.source else {}
    if args.tenant:
        filters["tenant"] = args.tenant
    with _open_store(s) as store:
        encoder = _encoder(s, store)
        reranker = None
        if args.rerank:
            if not args.reranker:
                raise MmragError(
                    "--rerank needs --reranker MODEL: a HF cross-encoder name or a "
                    "`mmrag train-reranker` checkpoint"
                )
            from mmrag.rerank import CrossEncoderReranker

            reranker = CrossEncoderReranker(
                args.reranker, max_length=args.max_length, int8=args.int8, threads=s.threads or None
            )
        retriever = Retriever(
            encoder,
            store,
            pool=args.pool,
            hnsw_ef=args.hnsw_ef,
            hybrid=args.hybrid,
            fusion=args.fusion,
            rrf_k=args.rrf_k,
            dense_pool=args.dense_pool,
            sparse_pool=args.sparse_pool,
            reranker=reranker,
        )
        res = retriever.search_with_timings(
            args.query,
            image=args.image,
            k=args.k,
            modality=args.modality,
            filters=filters or None,
            hybrid=args.hybrid or None,
            rerank=args.rerank or None,
        )
    payload = {
        "query": args.query,
        "image": str(args.image) if args.image else None,
        "encoder": encoder.id,
        "aligned": encoder.aligned,
        "hybrid": args.hybrid and args.image is None,
        "fusion": args.fusion if args.hybrid else None,
        "reranker": reranker.id if reranker else None,
        "hits": [h.to_dict() for h in res.hits],
        "timings_ms": {k: round(v * 1000, 2) for k, v in res.timings.items()},
    }
    lines = []
    if not encoder.aligned and (args.image is not None or args.modality == "image"):
        lines.append(
            "note: this encoder's image/text heads are untrained; cross-modal scores are not "
            "meaningful (train with `mmrag train`)"
        )
    for h in res.hits:
        snippet = (h.chunk.text or h.chunk.image or "").replace("\n", " ")[:110]
        page = h.chunk.metadata.get("page")
        where = f"{h.chunk.source}" + (f" p.{page}" if page else "")
        scores = " ".join(
            f"{name} {v:.3f}"
            for name, v in (("dense", h.dense), ("bm25", h.sparse), ("fused", h.fused), ("rerank", h.rerank))
            if v is not None
        )
        moved = f" (was {h.ann_rank})" if h.ann_rank != h.final_rank else ""
        lines.append(f"{h.final_rank:>2}.{moved} {scores} [{h.chunk.modality}] {where}\n    {snippet}")
    if not res.hits:
        lines.append("no results (is the store empty? run `mmrag ingest PATH`)")
    _emit(args, payload, "\n".join(lines))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mmrag.eval.datasets import BeirDataset
    from mmrag.eval.runner import evaluate_beir, evaluate_image_caption, load_for_eval

    s = _settings(args)
    qids = None
    if args.queries_from:
        qids = {ln.strip() for ln in args.queries_from.read_text().splitlines() if ln.strip()}
    ds = load_for_eval(args.dataset, split=args.split, limit=args.limit, query_ids=qids)
    encoder = _encoder(s)
    if isinstance(ds, BeirDataset):
        report = evaluate_beir(encoder, ds, store=args.eval_store, k=args.k, progress=not args.quiet)
    else:
        report = evaluate_image_caption(encoder, ds, store=args.eval_store, progress=not args.quiet)
    text = "\n".join(f"{k:>16}: {v:.4f}" for k, v in report["metrics"].items())
    _emit(args, report, f"{report['dataset']} ({report['layout']}), encoder {report['encoder']}\n{text}")
    return 0


def _apply_threads(s: Settings) -> None:
    """Set torch's intra-op threads from the settings (0: torch's default)."""
    if s.threads:
        from mmrag.encoders import set_threads

        set_threads(s.threads)


def cmd_train(args: argparse.Namespace) -> int:
    from mmrag.train.run import train_image_caption
    from mmrag.train.trainer import TrainConfig

    s = _settings(args)
    _apply_threads(s)
    cfg = TrainConfig(
        loss=args.loss,
        strategy=args.strategy,
        margin=args.margin,
        distance=args.distance,
        epochs=args.epochs,
        batch_size=args.train_batch,
        lr=args.lr if args.lr is not None else (3e-4 if args.from_store else 3e-3),
        input_dropout=args.dropout,
        patience=args.patience,
        seed=args.seed,
        lock_text=not args.train_text_head,
        unfreeze_blocks=args.unfreeze_blocks,
        unfreeze_epochs=args.unfreeze_epochs,
        backbone_lr=args.backbone_lr,
    )
    if args.from_store:
        return _closed_loop(args, s, cfg)
    report = train_image_caption(
        args.dataset,
        args.out,
        cfg,
        base=s.model or "lite",
        cache_dir=args.cache,
        limit=args.limit,
        text_beir=args.text_dataset,
        text_triplets=args.text_triplets,
        text_weight=args.text_weight,
        progress=not args.quiet,
    )
    best, before = report["dev_best"], report["dev_before"]
    keys: tuple[str, ...] = (
        "t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "i2t_recall@1", "i2t_recall@5", "i2t_recall@10",
    )  # fmt: skip
    lines = [
        f"checkpoint: {report['checkpoint']} (best epoch {report['best_epoch']} of {report['epochs_run']})",
        f"features: {report['feature_cache']} ; training {report['train_seconds']} s; "
        f"wall {report['wall_seconds']} s",
    ]
    if "text_ndcg@10" in best:
        keys = (*keys, "text_ndcg@10")
    lines += [f"{k:>16}: {before[k]:.4f} -> {best[k]:.4f}" for k in keys]
    lines.append(f"use it: mmrag ingest PATH --model {report['checkpoint']}")
    _emit(
        args,
        report,
        "\n".join(lines),
    )
    return 0


def _closed_loop(args: argparse.Namespace, s: Settings, cfg: Any) -> int:
    from mmrag.train.closed_loop import closed_loop

    with _open_store(s) as store, _ledger(args, s, store) as ledger:
        report = closed_loop(
            store,
            args.dataset,
            args.out,
            cfg,
            base=s.model,
            mine_k=args.mine_k,
            mined_weight=args.mined_weight,
            min_gain=args.min_gain,
            cache_dir=args.cache,
            limit=args.limit,
            ledger=ledger,
            progress=not args.quiet,
        )
    loop = report["closed_loop"]
    keys = ("t2i_recall@1", "t2i_recall@5", "t2i_recall@10")
    lines = [
        f"checkpoint: {report['checkpoint']}",
        f"mined: {loop['mining']}",
        f"re-embedded: {loop['reembed']}",
        f"old vector {loop['old_vector']} vs new vector {loop['new_vector']} "
        f"({loop['new']['queries']} dev captions over {loop['new']['images_in_store']} stored images):",
    ]
    lines += [f"{k:>16}: {loop['old'][k]:.4f} -> {loop['new'][k]:.4f}" for k in keys]
    lines.append(
        ("switched the default vector: " if loop["switched"] else "kept the default vector: ")
        + loop["reason"]
    )
    _emit(args, report, "\n".join(lines))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from mmrag.ingest.ledger import verify

    s = _settings(args)
    with _open_store(s) as store, _ledger(args, s, store) as ledger:
        rep = verify(store, ledger, repair=args.repair)
    d = rep.to_dict()
    lines = [
        f"ledger: {d['ledger_sources']} files, {d['ledger_chunks']} chunks; "
        f"store: {d['store_points']} points",
        f"pending (interrupted) writes: {d['pending']}",
        f"missing in store: {d['missing_in_store']}; missing in ledger: {d['missing_in_ledger']}",
        f"missing vectors: {d['missing_vectors']}; untracked vectors: {d['untracked_vectors']}",
        "OK: ledger == store" if rep.ok else "MISMATCH (run `mmrag verify --repair`)",
    ]
    if rep.repaired:
        lines.append(f"repaired: {d['repaired']}")
    _emit(args, d, "\n".join(lines))
    return 0 if rep.ok or args.repair else 1


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from mmrag.rerank.train import RerankTrainConfig, train_reranker

    s = _settings(args)
    _apply_threads(s)
    cfg = RerankTrainConfig(
        model=args.base,
        negatives=args.negatives,
        depth=args.depth,
        titles=args.titles,
        max_length=args.max_length,
        epochs=args.epochs,
        lr=args.lr,
        head_lr=args.head_lr,
        freeze_layers=args.freeze_layers,
        batch_groups=args.batch_groups,
        minutes=args.minutes,
        val_pool=args.val_pool,
        seed=args.seed,
        queries=args.limit_queries,
        val_queries=args.limit_val,
    )
    data = args.data or s.data_path
    meta = train_reranker(
        Path(data),
        args.out,
        cfg,
        encoder_spec=s.model or "lite",
        cache=args.cache or Path(".cache/bench"),
        store=args.eval_store,
    )
    val, tr = meta["val"], meta["train"]
    lines = [
        f"checkpoint: {args.out} ({tr['steps']} steps, {tr['groups']} groups mined, {tr['seconds']} s)",
        f"loss {tr['loss_first10']:.3f} -> {tr['loss_last10']:.3f}",
        f"val fold ({val['queries']} queries, pool {val['pool']}) nDCG@10: first stage "
        f"{val['first_stage_ndcg@10']:.4f}, rerank only {val['rerank_only_ndcg@10']:.4f}, "
        f"fused (w={val['weight']:.2f}) {val['fused_ndcg@10']:.4f}",
        f"use it: mmrag search QUERY --hybrid --rerank --reranker {args.out}",
    ]
    _emit(args, meta, "\n".join(lines))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    s = _settings(args)
    with _open_store(s) as store:
        stats = store.stats()
    lines = [
        f"store: {stats['location']}",
        f"points: {stats['points']} {stats['by_modality']}",
        f"sources: {stats['sources']}",
        f"default vector: {stats['default_vector']}",
    ]
    lines += [
        f"  vector {n}: dim {v.get('dim')}, model {v.get('spec')}, aligned {v.get('aligned')}"
        for n, v in stats["vectors"].items()
    ]
    _emit(args, stats, "\n".join(lines))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from mmrag._lazy import require
    from mmrag.ui import app_environment, streamlit_command

    require("streamlit", "ui")
    s = _settings(args).with_(ingest_root=args.ingest_root, reranker=args.reranker)
    if not s.store.startswith(("http://", "https://")) and s.store != ":memory:":
        s = s.with_(store=str(Path(s.store).expanduser().resolve()))
    print(f"mmrag ui: http://{args.host}:{args.port} (store {s.store}); Ctrl-C stops it", file=sys.stderr)
    sys.stderr.flush()
    # exec, not a child process: a signal sent to `mmrag ui` (Ctrl-C, a supervisor's SIGTERM) reaches
    # Streamlit itself instead of orphaning it
    cmd = streamlit_command(args.host, args.port)
    os.execve(cmd[0], cmd, app_environment(s))


def cmd_serve(args: argparse.Namespace) -> int:
    from mmrag.api import serve

    serve(_settings(args).with_(reranker=args.reranker), host=args.host, port=args.port)
    return 0


COMMANDS = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "eval": cmd_eval,
    "train": cmd_train,
    "train-reranker": cmd_train_reranker,
    "info": cmd_info,
    "verify": cmd_verify,
    "ui": cmd_ui,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except MmragError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
