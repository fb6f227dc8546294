"""Flickr8k dev recall of the trained `lite` heads for each loss / negative strategy / margin.

Reproduces the table in BENCHMARKS.md: every run trains the heads from the same untrained start on
the same cached tower features (Flickr8k train, 6,000 images x 5 captions) with early stopping on
dev t2i Recall@10, and reports dev R@1/5/10 both ways plus wall time.

Usage: python benchmarks/train_sweep.py [--epochs 40] [--limit N] [--out benchmarks/results/train_sweep.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))

RUNS: list[dict[str, object]] = [
    {"loss": "triplet", "strategy": "given", "margin": 0.2},
    {"loss": "triplet", "strategy": "random", "margin": 0.2},
    {"loss": "triplet", "strategy": "batch_hard", "margin": 0.2},
    {"loss": "triplet", "strategy": "semi_hard", "margin": 0.1},
    {"loss": "triplet", "strategy": "semi_hard", "margin": 0.2},
    {"loss": "triplet", "strategy": "semi_hard", "margin": 0.3},
    {"loss": "infonce", "strategy": "semi_hard", "margin": 0.2},
    # the text head trained too (no lock): same cross-modal recall, but text->text search degrades
    {"loss": "triplet", "strategy": "semi_hard", "margin": 0.2, "lock_text": False},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--limit", type=int, default=None, help="first N images per split (smoke runs)")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "features")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_sweep.json")
    ap.add_argument("--only", type=int, nargs="*", help="indexes into the run list")
    ap.add_argument("--base", default="lite", help="encoder spec to train, e.g. lite:efficientnet_lite2")
    args = ap.parse_args()

    from mmrag.encoders import load_encoder
    from mmrag.train.features import FeatureCache, tower_key
    from mmrag.train.run import dataset_pairs
    from mmrag.train.trainer import TrainConfig, train_heads

    encoder = load_encoder(args.base)
    cache = FeatureCache(args.cache)
    towers = tower_key(encoder)
    t = time.perf_counter()
    train = dataset_pairs(encoder, cache, towers, DATA / "flickr8k", "train", args.limit)
    dev = dataset_pairs(encoder, cache, towers, DATA / "flickr8k", "dev", args.limit)
    feature_seconds = time.perf_counter() - t
    start_state = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    results = []
    for n, run in enumerate(RUNS):
        if args.only is not None and n not in args.only:
            continue
        encoder.model.load_state_dict(start_state)  # every run starts from the same untrained heads
        cfg = TrainConfig(epochs=args.epochs, **run)  # type: ignore[arg-type]
        report = train_heads(encoder, train, dev, cfg, progress=False)
        row = {
            **run,
            "best_epoch": report.best_epoch,
            "epochs_run": report.epochs_run,
            "train_seconds": report.train_seconds,
            "train_loss": report.dev_best["loss"],
            **{k: v for k, v in report.dev_best.items() if "recall" in k or k == "rsum"},
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "base": args.base,
        "train_images": len(train.images),
        "dev_images": len(dev.images),
        "feature_seconds": round(feature_seconds, 1),
        "epochs": args.epochs,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
