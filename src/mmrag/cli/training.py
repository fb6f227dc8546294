"""``mmrag eval``, ``mmrag train`` (and its closed loop ``--from-store``) and ``mmrag train-reranker``.

Each command prints the typed report its library function returns (``to_text()``, or ``to_dict()``
with ``--json``); no rendering lives here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrag import wiring
from mmrag.cli._common import (
    _apply_threads,
    _encoder,
    _ledger,
    _open_store,
    _settings,
    _spec,
    add_common,
    emit_report,
    show_progress,
    status,
)
from mmrag.config import RERANK_PRECISIONS, Settings
from mmrag.errors import MmragError
from mmrag.train.recipes import RECIPES, recipe_options


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate on a BEIR or image-caption dataset")
    p.add_argument(
        "--dataset", type=Path, required=True, help="dataset folder (BEIR or captions.jsonl + images/)"
    )
    p.add_argument("--split", help="split (BEIR default train; image-caption default dev)")
    p.add_argument("--limit", type=int, help="image-caption: first N images")
    p.add_argument("--queries-from", type=Path, help="BEIR: only these query ids (one per line)")
    p.add_argument(
        "--fold",
        choices=["train", "val"],
        help="BEIR: only the queries of this fold of a triplets file (e.g. SciFact's held-out val fold)",
    )
    p.add_argument(
        "--triplets",
        type=Path,
        help="triplets file with folds [default: DATASET/../triplets/NAME_train_triplets.jsonl]",
    )
    p.add_argument("--k", type=int, default=10, help="nDCG cut-off")
    p.add_argument("--eval-store", help="index into this store instead of a temporary one")
    p.add_argument(
        "--hybrid", action="store_true", help="BEIR: the pipeline's first stage fuses BM25 with dense"
    )
    p.add_argument("--rerank", action="store_true", help="BEIR: rerank the top --pool with --reranker")
    p.add_argument("--reranker", help="cross-encoder (HF name, folder or `mmrag train-reranker` checkpoint)")
    p.add_argument("--pool", type=int, default=20, help="candidates the reranker reorders")
    p.add_argument(
        "--stages",
        action="store_true",
        help="also evaluate every stage in one run: BM25, dense, hybrid, hybrid + rerank, rerank alone",
    )
    add_common(p)


def add_train_parser(sub: Any) -> None:
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
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds torch and numpy (shuffling, dropout, negatives, augmentation): the same command and "
        "seed give the same heads on the same kind of CPU [default 0]",
    )
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
        help="second stage: also train the last N image-trunk blocks (BatchNorm frozen) [0 = heads only]",
    )
    p.add_argument("--unfreeze-epochs", type=int, help="epochs of the unfrozen stage [8]")
    p.add_argument("--backbone-lr", type=float, help="learning rate of the unfrozen blocks [1e-4]")
    p.add_argument("--unfreeze-dropout", type=float, help="input dropout of the unfrozen stage [--dropout]")
    p.add_argument(
        "--augment-views",
        type=int,
        help="unfrozen stage: views cached per train image, the clean one included; more adds random "
        "crops, flips and colour jitter [1 = no augmentation]",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where training runs [auto: a CUDA GPU when one is visible]; the checkpoint loads on CPU",
    )
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="a measured preset of the options above (explicit options still win): "
        + "; ".join(f"{k}: {v['help']}" for k, v in sorted(RECIPES.items())),
    )
    p.add_argument("--text-weight", type=float, default=1.0, help="weight of the text triplet term")
    add_common(p)


def add_train_reranker_parser(sub: Any) -> None:
    p = sub.add_parser("train-reranker", help="train the cross-encoder on SciFact (hard negatives mined)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    p.add_argument("--data", type=Path, help="data root with scifact/ and triplets/ [env MMRAG_DATA]")
    p.add_argument("--base", help="cross-encoder to start from (default: offline all-MiniLM-L6-v2)")
    p.add_argument(
        "--steps",
        type=int,
        help="optimisation steps, fixed: same command and seed, same model on the same kind of CPU "
        "[default 800, or --epochs]",
    )
    p.add_argument("--docs", type=int, help="corpus cap: the first N docs plus every judged one (quick runs)")
    p.add_argument(
        "--negatives",
        type=int,
        default=7,
        help="hard negatives per positive [default 7; 3: about half the training time]",
    )
    p.add_argument("--depth", type=int, default=30, help="first-stage candidates to mine from")
    p.add_argument(
        "--titles",
        type=int,
        default=0,
        help="title -> abstract groups from the corpus [default 0: they cost quality]",
    )
    p.add_argument("--max-length", type=int, default=112, help="tokens per pair")
    p.add_argument("--epochs", type=int, help="whole passes over the mined groups (instead of --steps)")
    p.add_argument("--lr", type=float, default=3e-4, help="encoder learning rate")
    p.add_argument("--head-lr", type=float, default=1e-2, help="scoring head learning rate")
    p.add_argument("--freeze-layers", type=int, default=3, help="bottom layers kept fixed")
    p.add_argument(
        "--layers",
        type=int,
        help="keep only the bottom N transformer layers of the base (a faster, shallower reranker)",
    )
    p.add_argument(
        "--teacher",
        help="a trained reranker checkpoint whose scores the new one also learns (distillation)",
    )
    p.add_argument(
        "--distill", type=float, help="weight of the distillation loss, with --teacher [default 1.0]"
    )
    p.add_argument("--batch-groups", type=int, default=8, help="groups (1 positive + negatives) per step")
    p.add_argument("--val-pool", type=int, default=20, help="pool the fusion weight is learned on")
    p.add_argument("--seed", type=int, default=0, help="negative sampling and shuffling seed")
    p.add_argument(
        "--soup",
        type=int,
        default=1,
        help="train N members (seeds SEED..SEED+N-1) and average their weights into one model "
        "(a uniform model soup: steadier across seeds; N x the training time) [default 1]",
    )
    p.add_argument(
        "--train-precision",
        choices=RERANK_PRECISIONS,
        default="fp32",
        help="bf16: train under CPU autocast (~0.55x the time per step on CPUs with bf16 "
        "instructions; weights and calibration stay fp32); auto: bf16 where the CPU has them "
        "(AMX or AVX512-BF16), else fp32; either way the same command and seed give the same "
        "model on the same kind of CPU [default fp32]",
    )
    p.add_argument("--limit-queries", type=int, help="first N training queries (quick runs)")
    p.add_argument("--limit-val", type=int, help="first N validation queries (quick runs)")
    p.add_argument("--cache", type=Path, help="dense-vector cache folder [default .cache/bench]")
    p.add_argument("--eval-store", help="index SciFact into this store instead of a temporary one")
    add_common(p)


def cmd_eval(args: argparse.Namespace) -> int:
    from mmrag.eval.datasets import BeirDataset
    from mmrag.eval.reports import EvalReport
    from mmrag.eval.runner import evaluate_beir, evaluate_image_caption, load_for_eval

    s = _settings(args)
    qids = _fold_queries(args)
    if args.queries_from:
        listed = {ln.strip() for ln in args.queries_from.read_text().splitlines() if ln.strip()}
        qids = listed if qids is None else qids & listed
    ds = load_for_eval(args.dataset, split=args.split, limit=args.limit, query_ids=qids)
    status(args, f"loading encoder {_spec(s)}…")
    encoder = _encoder(s)
    report: EvalReport
    if isinstance(ds, BeirDataset):
        reranker = None
        name = args.reranker or s.reranker  # --reranker, else MMRAG_RERANKER (as `mmrag search`)
        if args.reranker and not (args.rerank or args.stages):
            raise MmragError("--reranker is used with --rerank (the pipeline) or --stages (the ablation)")
        if args.rerank or (args.stages and name):
            if not name:
                raise MmragError("--rerank needs --reranker MODEL (a HF name or a train-reranker checkpoint)")
            status(args, f"loading reranker {name}…")
            reranker = wiring.load_reranker(s.with_(reranker=name))
        report = evaluate_beir(
            encoder,
            ds,
            store=args.eval_store,
            k=args.k,
            progress=show_progress(args),
            hybrid=args.hybrid,
            reranker=reranker if args.rerank else None,
            stage_reranker=reranker,
            pool=args.pool,
            stages=args.stages,
        )
    else:
        if args.hybrid or args.rerank:
            raise MmragError(
                "--hybrid and --rerank apply to BEIR datasets (image-caption images carry no text)"
            )
        report = evaluate_image_caption(
            encoder, ds, store=args.eval_store, progress=show_progress(args), stages=args.stages
        )
    emit_report(args, report)
    return 0


def _fold_queries(args: argparse.Namespace) -> set[str] | None:
    """The query ids of ``--fold`` from the triplets file (``None`` without ``--fold``)."""
    if args.fold is None:
        return None
    from mmrag.eval.datasets import scifact_val_query_ids

    name = args.dataset.resolve().name
    triplets = args.triplets or args.dataset.resolve().parent / "triplets" / f"{name}_train_triplets.jsonl"
    val = scifact_val_query_ids(triplets, args.dataset / "queries.jsonl")
    if val is None:
        raise MmragError(f"{triplets} has no folds; --fold needs a triplets file with a 'fold' field")
    if args.fold == "val":
        return val
    from mmrag.eval.datasets import BeirDataset

    return {q for q in BeirDataset.load(args.dataset, args.split or "train").queries if q not in val}


def _tower_options(args: argparse.Namespace) -> dict[str, Any]:
    """Image-tower options: the recipe's values, overridden by any given explicitly."""
    opts = recipe_options(args.recipe)
    for key in ("unfreeze_blocks", "unfreeze_epochs", "backbone_lr", "augment_views", "unfreeze_dropout"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    return opts


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
        device=args.device,
        **_tower_options(args),
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
        progress=show_progress(args),
    )
    emit_report(args, report)
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
            progress=show_progress(args),
        )
    emit_report(args, report)
    return 0


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from mmrag.rerank.cross_encoder import resolve_precision
    from mmrag.train.reranker import RerankTrainConfig, train_reranker

    if args.steps is not None and args.epochs is not None:
        raise MmragError("give --steps or --epochs, not both")
    if args.distill is not None and args.teacher is None:
        raise MmragError("--distill weighs the teacher's scores: give --teacher CKPT with it")
    s = _settings(args)
    _apply_threads(s)
    cfg = RerankTrainConfig(
        model=args.base,
        negatives=args.negatives,
        depth=args.depth,
        titles=args.titles,
        max_length=args.max_length,
        epochs=args.epochs if args.epochs is not None else 1,
        lr=args.lr,
        head_lr=args.head_lr,
        freeze_layers=args.freeze_layers,
        layers=args.layers,
        teacher=args.teacher,
        distill=args.distill if args.distill is not None else RerankTrainConfig().distill,
        batch_groups=args.batch_groups,
        steps=args.steps
        if args.steps is not None
        else (None if args.epochs is not None else RerankTrainConfig().steps),
        docs=args.docs,
        val_pool=args.val_pool,
        seed=args.seed,
        soup=args.soup,
        train_precision=resolve_precision(args.train_precision),  # auto as this CPU resolves it
        queries=args.limit_queries,
        val_queries=args.limit_val,
    )
    data = args.data or s.data_path
    report = train_reranker(
        Path(data),
        args.out,
        cfg,
        encoder_spec=s.model or "lite",
        cache=args.cache or Path(".cache/bench"),
        store=args.eval_store,
        progress=show_progress(args),
    )
    emit_report(args, report)
    return 0
