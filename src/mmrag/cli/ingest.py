"""``mmrag ingest`` and ``mmrag verify``: fill the store from files, check it against the ledger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag import wiring
from mmrag.cli import _common
from mmrag.cli._common import (
    _emit,
    _ledger,
    _open_store,
    _settings,
    _spec,
    add_common,
    emit_report,
    show_progress,
    status,
)
from mmrag.config import Settings
from mmrag.errors import MmragError

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder
    from mmrag.store import QdrantStore


LEDGER_HELP = (
    "ingest ledger as a SQLite file [default: beside an Edge store; a server or :memory: store keeps "
    "its ledger in the companion collection <collection>__ledger]"
)


def add_ingest_parser(sub: Any) -> None:
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
    p.add_argument(
        "--reranker",
        help="record this cross-encoder as the store's default reranker (see `mmrag model-set`)",
    )
    p.add_argument(
        "--quantization",
        choices=["int8", "none"],
        help="keep an int8 copy of the dense vectors, searched first and rescored (~4x less index RAM); "
        "'none' drops it [default: keep the store's setting; new stores: none]",
    )
    p.add_argument("--ledger", help=LEDGER_HELP)
    p.add_argument(
        "--on-unreadable",
        choices=["keep", "remove"],
        default="keep",
        help="a stored file that no longer loads: keep its chunks (reported as kept stale) or remove them "
        "[default: keep]",
    )
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
    add_common(p)


def add_verify_parser(sub: Any) -> None:
    p = sub.add_parser("verify", help="check that the ingest ledger and the store agree")
    p.add_argument("--repair", action="store_true", help="undo interrupted writes and fix disagreements")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --repair: also delete points of other writers (eval, training, other ledgers, unmarked)",
    )
    p.add_argument("--ledger", help=LEDGER_HELP)
    add_common(p)


def _encoder(s: Settings, store: QdrantStore) -> DualEncoder:
    # Looked up on the module at call time: tests/ingest/fake_cli.py swaps ``_common._encoder`` for a
    # fake encoder and runs the real command.
    encoder: DualEncoder = _common._encoder(s, store)
    return encoder


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
        if args.quantization is not None and (store.quantization or "none") != args.quantization:
            status(args, f"rebuilding the store's index with quantization {args.quantization}…")
            store.set_quantization(args.quantization)
        if args.reranker:
            # Loaded before the ingest: a wrong name fails now, not after an hour of embedding; and
            # stored for the searches that follow (mmrag.rerank.stored).
            status(args, f"loading reranker {args.reranker}…")
            reranker = wiring.load_reranker(s.with_(reranker=args.reranker))
            if reranker is not None:
                wiring.remember_reranker(reranker)
        status(args, f"loading encoder {_spec(s, store)}…")
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
            on_unreadable=args.on_unreadable,
        )
        with _ledger(args, s, store) as ledger:
            kw: dict[str, Any] = {"options": opts, "progress": show_progress(args), "ledger": ledger}
            if args.engine == "ray":
                runner = _ray_runner(args, s, store, encoder, **kw)
            else:
                runner = IngestRunner(encoder, store, **kw)
            summary = runner.run(args.paths, captions=captions, limit=args.limit, files=files)
        wiring.remember_text_tower(encoder)  # the next `mmrag search` starts without torch
        if args.reranker:
            from mmrag.types import RerankerSpec

            store.meta.set_reranker(RerankerSpec(wiring.model_ref(args.reranker)))
        total = store.count()
    d = summary.to_dict() | {"store": s.store, "points_in_store": total}
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(d, indent=2, ensure_ascii=False))
    _emit(args, d, summary.to_text(s.store, total))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from mmrag.ingest.verify import verify

    if args.force and not args.repair:
        raise MmragError("--force goes with --repair (it deletes the points of other writers)")
    s = _settings(args)
    with _open_store(s) as store, _ledger(args, s, store) as ledger:
        rep = verify(store, ledger, repair=args.repair, force=args.force, progress=show_progress(args))
    emit_report(args, rep)
    return 0 if rep.ok or args.repair else 1
