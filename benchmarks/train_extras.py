"""What pays beyond the head-training sweep: joint text tuning, unfreezing trunk blocks, the closed loop.

Each experiment writes its own entry into one JSON file (default benchmarks/results/train_extras.json),
so they can be run one at a time on a busy machine:

* ``joint``: heads trained on Flickr8k train captions↔images *and* SciFact train-fold triplets (text head
  unlocked) in one run, against the locked-text default: Flickr8k dev recall and SciFact val-fold nDCG@10.
* ``unfreeze``: heads first, then the last ``--blocks`` image-trunk blocks unfrozen (BatchNorm frozen).
* ``loop``: ``mmrag train --from-store`` on a store built from the Flickr8k dev images with a checkpoint
  trained by the default recipe: old vs new store recall and the decision taken.

Usage: python benchmarks/train_extras.py joint|unfreeze|loop [--base lite] [--limit N] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
KEYS = (
    "t2i_recall@1",
    "t2i_recall@5",
    "t2i_recall@10",
    "i2t_recall@1",
    "i2t_recall@5",
    "i2t_recall@10",
    "rsum",
)


def _metrics(m: Mapping[str, Any]) -> dict[str, float]:
    return {k: round(float(m[k]), 4) for k in (*KEYS, "text_ndcg@10", "text_ndcg@10_unseen_docs") if k in m}


def joint(args: argparse.Namespace) -> dict[str, Any]:
    from mmrag.encoders import load_encoder
    from mmrag.train.features import FeatureCache, tower_key
    from mmrag.train.run import dataset_pairs
    from mmrag.train.text import scifact_text_data
    from mmrag.train.trainer import TrainConfig, train_heads

    encoder = load_encoder(args.base)
    cache = FeatureCache(args.cache)
    towers = tower_key(encoder)
    t0 = time.perf_counter()
    train = dataset_pairs(encoder, cache, towers, DATA / "flickr8k", "train", args.limit)
    dev = dataset_pairs(encoder, cache, towers, DATA / "flickr8k", "dev", args.limit)
    tt, tdev = scifact_text_data(
        encoder, cache, towers, DATA / "scifact", DATA / "triplets" / "scifact_train_triplets.jsonl"
    )

    features = round(time.perf_counter() - t0, 1)
    start = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    rows = []
    plan: list[tuple[str, bool, float | None]] = [("locked text (default)", True, None)]
    plan += [(f"joint: + SciFact triplets, weight {w:g}", False, w) for w in args.text_weights]
    for name, lock, weight in plan:
        encoder.model.load_state_dict(start)
        cfg = TrainConfig(epochs=args.epochs, lock_text=lock, margin=args.margin)
        text = replace(tt, weight=weight) if weight is not None else None
        rep = train_heads(encoder, train, dev, cfg, text_triplets=text, text_dev=tdev, progress=False)
        rows.append(
            {
                "run": name,
                "before": _metrics(rep.dev_before),
                "best": _metrics(rep.dev_best),
                "best_epoch": rep.best_epoch,
                "train_seconds": rep.train_seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "base": args.base,
        "text_triplets": len(tt.anchor),
        "val_queries": len(tdev.query_ids),
        "val_queries_unseen_docs": len(tdev.unseen),
        "feature_seconds": features,
        "runs": rows,
    }


def unfreeze(args: argparse.Namespace) -> dict[str, Any]:
    from mmrag.train.run import train_image_caption
    from mmrag.train.trainer import TrainConfig

    cfg = TrainConfig(
        epochs=args.epochs,
        margin=args.margin,
        unfreeze_blocks=args.blocks,
        unfreeze_epochs=args.unfreeze_epochs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        rep = train_image_caption(
            DATA / "flickr8k", Path(tmp) / "ckpt", cfg, base=args.base, cache_dir=args.cache, limit=args.limit
        )
    assert rep.stage1 is not None  # unfreeze_blocks >= 1: a heads-only stage ran first
    return {
        "base": args.base,
        "blocks": args.blocks,
        "heads_only": _metrics(rep.stage1.dev_best),
        "unfrozen": _metrics(rep.heads.dev_best),
        "stage2_best_epoch": rep.heads.best_epoch,
        "train_seconds": rep.heads.train_seconds,
        "feature_cache": dict(rep.feature_cache),
        "wall_seconds": rep.wall_seconds,
    }


def loop(args: argparse.Namespace) -> dict[str, Any]:
    from mmrag.encoders import load_encoder
    from mmrag.eval.datasets import ImageCaptionDataset
    from mmrag.ingest import IngestRunner
    from mmrag.store import QdrantStore
    from mmrag.train.closed_loop import closed_loop
    from mmrag.train.run import train_image_caption
    from mmrag.train.trainer import TrainConfig

    root = DATA / "flickr8k"
    cfg = TrainConfig(epochs=args.epochs, margin=args.margin)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.start) if args.start else Path(tmp) / "start"
        if not args.start:
            train_image_caption(root, ckpt, cfg, base=args.base, cache_dir=args.cache, limit=args.limit)
        dev = ImageCaptionDataset.load(root, "dev", limit=args.limit)
        captions = {p.name: list(c) for p, c in zip(dev.images, dev.captions, strict=True)}
        t0 = time.perf_counter()
        with QdrantStore.open(str(Path(tmp) / "store")) as store:
            IngestRunner(load_encoder(str(ckpt)), store).run(
                [root / "images"], files=list(dev.images), captions=captions
            )
            ingest_seconds = round(time.perf_counter() - t0, 1)
            rep = closed_loop(
                store,
                root,
                Path(tmp) / "new",
                replace(cfg, lr=args.loop_lr),
                cache_dir=args.cache,
                limit=args.limit,
                mine_k=args.mine_k,
            )
    return {
        "base": args.base,
        "start_checkpoint": "default recipe" if not args.start else str(args.start),
        "lr": args.loop_lr,
        "ingest_seconds": ingest_seconds,
        **rep.closed_loop.to_dict(),
        "wall_seconds": rep.wall_seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("experiment", choices=["joint", "unfreeze", "loop"])
    ap.add_argument("--base", default="lite")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--blocks", type=int, default=1, help="unfreeze: trunk blocks to train")
    ap.add_argument(
        "--text-weights", type=float, nargs="+", default=[1.0, 0.25], help="joint: text term weights"
    )
    ap.add_argument("--unfreeze-epochs", type=int, default=8)
    ap.add_argument("--mine-k", type=int, default=10, help="loop: mined negatives per caption")
    ap.add_argument("--loop-lr", type=float, default=3e-4, help="loop: fine-tuning learning rate")
    ap.add_argument("--start", type=Path, help="loop: start from this checkpoint instead of training one")
    ap.add_argument("--limit", type=int, default=None, help="first N images per split (smoke runs)")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "features")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_extras.json")
    args = ap.parse_args()
    result = {"joint": joint, "unfreeze": unfreeze, "loop": loop}[args.experiment](args)
    key = args.experiment if args.base == "lite" else f"{args.experiment}:{args.base}"
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[key] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
