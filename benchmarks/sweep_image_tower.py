"""Image-tower sweep: trunk blocks unfrozen × augmentation on/off × image tower, on Flickr8k dev.

Per image tower the heads-only stage (the ``fast`` recipe) trains once; every (blocks, augmentation)
cell then starts from those heads and trains the last N trunk blocks with the heads, exactly as
``mmrag train --unfreeze-blocks N [--augment-views V]`` does after its own heads stage. Each row keeps
the device, the wall minutes (heads stage + features computed for that cell + unfrozen stage, so a row
is what the one-shot command costs cold), the dev recalls and the per-epoch learning curve; a PNG
of the curves is written beside the JSON.

``all`` unfreezes every block (the stem stays frozen). Its cached stem output is ~0.8 MB per image and
view, and its training step runs the whole trunk, so on CPU it is skipped (with the reason in the
JSON) unless ``--allow-slow`` is given; with ``--device cuda`` it runs.

Usage:
    python benchmarks/sweep_image_tower.py [--models lite lite:efficientnet_lite2] \\
        [--blocks 0 1 2 3 5 all] [--augment off on] [--views 4] [--epochs 6] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from machine import machine_info
from report_scale import pyplot

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
KEYS = ("t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "i2t_recall@1", "i2t_recall@5", "i2t_recall@10")


def _recalls(m: Mapping[str, Any]) -> dict[str, float]:
    out = {k: round(float(m[k]), 4) for k in KEYS}
    out["rsum"] = round(100 * sum(out.values()), 1)
    return out


def _curve(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [
        {"epoch": h["epoch"], "loss": round(h["loss"], 4), "t2i_recall@10": round(h["t2i_recall@10"], 4)}
        for h in history
    ]


def sweep_model(args: argparse.Namespace, spec: str, emit: Callable[[dict[str, Any]], None]) -> None:
    """Train every cell of one tower; ``emit`` gets each row as soon as it is measured."""
    import torch

    from mmrag.encoders import load_encoder
    from mmrag.train.features import FeatureCache, tower_key
    from mmrag.train.finetune import TrunkTop, trunk_blocks
    from mmrag.train.run import block_pairs, dataset_pairs
    from mmrag.train.tower import Augment, resolve_device
    from mmrag.train.trainer import TrainConfig, train_heads

    device = str(resolve_device(args.device))
    root = DATA / "flickr8k"
    encoder = load_encoder(spec)
    cache = FeatureCache(args.cache, progress=not args.quiet)
    towers = tower_key(encoder)
    cfg = TrainConfig(seed=args.seed, device=args.device)
    t0 = time.perf_counter()
    train = dataset_pairs(encoder, cache, towers, root, "train", args.limit)
    dev = dataset_pairs(encoder, cache, towers, root, "dev", args.limit)
    feat_s = time.perf_counter() - t0
    heads = train_heads(encoder, train, dev, cfg, progress=not args.quiet)
    heads_state = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    base_row = {"model": spec, "device": device, "seed": args.seed, "limit": args.limit}
    emit(
        {
            **base_row,
            "blocks": 0,
            "augment": False,
            "minutes": round((feat_s + heads.train_seconds) / 60, 1),
            "feature_minutes": round(feat_s / 60, 1),
            "dev": _recalls(heads.dev_best),
            "best_epoch": heads.best_epoch,
            "curve": _curve(heads.history),
        }
    )
    n_all = len(trunk_blocks(encoder.model.visual.trunk))
    for blocks in [b for b in args.blocks if b != "0"]:
        n = n_all if blocks == "all" else int(blocks)
        for aug in args.augment:
            row = {**base_row, "blocks": blocks, "augment": aug == "on"}
            if blocks == "all" and device == "cpu" and not args.allow_slow:
                emit({**row, "skipped": "whole trunk on CPU: ~10x the 5-block step; --allow-slow"})
                continue
            encoder.model.load_state_dict(heads_state)
            augment = Augment(views=args.views) if aug == "on" else Augment(views=1)
            top = TrunkTop(encoder.model.visual.trunk, n)
            t1 = time.perf_counter()
            _, train_b = block_pairs(
                encoder, cache, towers, root, "train", top, args.limit, augment, args.seed
            )
            _, dev_b = block_pairs(encoder, cache, towers, root, "dev", top, args.limit)
            cell_feat_s = time.perf_counter() - t1
            stage2 = replace(
                cfg,
                lr=cfg.unfreeze_head_lr,
                epochs=args.epochs,
                patience=args.epochs,
                unfreeze_blocks=n,
                unfreeze_epochs=args.epochs,
                backbone_lr=args.backbone_lr,
                augment_views=augment.views,
                input_dropout=args.unfreeze_dropout,
            )
            rep = train_heads(encoder, train_b, dev_b, stage2, image_top=top, progress=not args.quiet)
            del train_b
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
            emit(
                {
                    **row,
                    "views": augment.views,
                    "backbone_lr": args.backbone_lr,
                    "epochs": args.epochs,
                    "minutes": round(
                        (feat_s + heads.train_seconds + cell_feat_s + rep.train_seconds) / 60, 1
                    ),
                    "feature_minutes": round((feat_s + cell_feat_s) / 60, 1),
                    "unfrozen_minutes": round(rep.train_seconds / 60, 1),
                    "dev": _recalls(rep.dev_best),
                    "best_epoch": rep.best_epoch,
                    "curve": _curve(rep.history),
                }
            )


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """The unfrozen stage's dev R@10 per epoch, per run; False (no file) without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if "curve" in r and r["blocks"] != 0:
            label = f"{r['model']} blocks {r['blocks']} aug {'on' if r['augment'] else 'off'}"
            ax.plot([c["epoch"] for c in r["curve"]], [c["t2i_recall@10"] for c in r["curve"]], label=label)
    ax.set_xlabel("unfrozen-stage epoch")
    ax.set_ylabel("Flickr8k dev t2i R@10")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["lite", "lite:efficientnet_lite2"])
    ap.add_argument("--blocks", nargs="+", default=["0", "1", "2", "3", "5", "all"])
    ap.add_argument("--augment", nargs="+", choices=["off", "on"], default=["off", "on"])
    from mmrag.train.recipes import recipe_options

    quality = recipe_options("quality")
    ap.add_argument("--views", type=int, default=quality["augment_views"], help="views with augmentation on")
    ap.add_argument(
        "--epochs", type=int, default=6, help="epochs of the unfrozen stage (the quality recipe runs 14)"
    )
    ap.add_argument("--backbone-lr", type=float, default=quality["backbone_lr"])
    ap.add_argument("--unfreeze-dropout", type=float, default=0.5, help="input dropout of the unfrozen stage")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--allow-slow", action="store_true", help="run 'all' blocks on CPU too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N images per split (smoke runs)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "features")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "image_tower_sweep.json")
    ap.add_argument(
        "--add-run",
        type=Path,
        nargs="+",
        default=[],
        metavar="REPORT",
        help="also record finished `mmrag train` runs (their training_report.json) as rows, e.g. the "
        "quality recipe; implies --merge and trains nothing",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the cells of --out that this run does not measure (grow a sweep run by run)",
    )
    args = ap.parse_args()
    kept: list[dict[str, Any]] = []
    if (args.merge or args.add_run) and args.out.exists():
        kept = json.loads(args.out.read_text())["rows"]
    rows: list[dict[str, Any]] = []
    machine = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict[str, Any]) -> None:  # written after every cell: a long sweep cut short keeps its rows
        print(json.dumps(row), flush=True)
        rows.append(row)
        measured = {_cell(r) for r in kept if "skipped" not in r}
        # a skipped cell never hides a measured one (e.g. a CPU run's "all" over a GPU run's)
        mine = [r for r in rows if "skipped" not in r or _cell(r) not in measured]
        replaced = {_cell(m) for m in mine}
        merged = [r for r in kept if _cell(r) not in replaced] + mine
        merged.sort(key=lambda r: (r["model"], _block_order(r["blocks"]), r["augment"], _cell(r)[3:]))
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machine": machine, "rows": merged}, indent=2))
        tmp.replace(args.out)  # atomic: an interrupted write never loses the kept rows

    for report in args.add_run:
        emit(run_row(json.loads(report.read_text())))
    for spec in [] if args.add_run else args.models:
        sweep_model(args, spec, emit)
    png = args.out.with_suffix(".png")
    drawn = plot(json.loads(args.out.read_text())["rows"], png)
    print(f"wrote {args.out}" + (f" and {png}" if drawn else " (no plot: matplotlib is not installed)"))


def run_row(report: Mapping[str, Any]) -> dict[str, Any]:
    """A row from a finished ``mmrag train`` run's ``training_report.json`` (its own command, cold)."""
    cfg = report["config"]
    views = int(cfg.get("augment_views") or 1)
    return {
        "model": report["base"],
        "device": cfg["device"],
        "seed": cfg["seed"],
        "blocks": str(cfg["unfreeze_blocks"]),
        "augment": views > 1,
        "views": views,
        "backbone_lr": cfg["backbone_lr"],
        "epochs": cfg["unfreeze_epochs"],
        "recipe": cfg.get("recipe") or "mmrag train",
        "minutes": round(report["wall_seconds"] / 60, 1),
        "dev": _recalls(report["dev_best"]),
        "best_epoch": report["best_epoch"],
        "curve": _curve(report["history"]),
    }


def _cell(row: Mapping[str, Any]) -> tuple[str, str, bool, str, str, str]:
    """What a row measures: tower, blocks, augmentation, device, image limit and, for a recorded
    ``mmrag train`` run, its epochs, views and backbone LR; rows of one cell replace each other."""
    run = f"{row.get('epochs')}ep/{row.get('views')}v/{row.get('backbone_lr')}" if row.get("recipe") else ""
    return (
        str(row["model"]),
        str(row["blocks"]),
        bool(row["augment"]),
        str(row.get("device")),
        str(row.get("limit")),
        run,
    )


def _block_order(blocks: object) -> int:
    return 10**6 if blocks == "all" else int(str(blocks))


if __name__ == "__main__":
    main()


def report_section(data: dict[str, Any], plot_rel: str | None = None) -> str:
    """The BENCHMARKS.md section of a sweep result (``benchmarks/report.py`` calls this)."""
    lines = [
        "## Fine-tuning the image tower: blocks unfrozen × augmentation × tower",
        "",
        "Command: `python benchmarks/sweep_image_tower.py` (see its `--help` for the grid). Flickr8k dev "
        "(1,000 images, 5,000 captions), exact search on the trained embeddings; the text head stays locked. "
        "Minutes are what the one-shot `mmrag train` costs cold for that cell: heads stage + features + "
        "unfrozen stage. Rows marked `(mmrag train)` are finished `mmrag train` runs recorded with "
        "`--add-run` (e.g. the quality recipe); their minutes are that run's wall time.",
        "",
        "| tower | blocks | aug | device | min | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 "
        "| i2t R@10 | R@sum | best epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        aug = f"{r.get('views', 4)} views" if r["augment"] else "off"
        if "skipped" in r:
            skip = r["skipped"]
            lines.append(f"| {r['model']} | {r['blocks']} | {aug} | {r['device']} | skipped: {skip} |")
            continue
        d = r["dev"]
        cells = " | ".join(f"{d[k]:.3f}" for k in KEYS)
        if r.get("recipe"):
            aug += f", {r['epochs']} ep ({r['recipe']})"
        lines.append(
            f"| {r['model']} | {r['blocks']} | {aug if r['blocks'] else '-'} | {r['device']} | "
            f"{r['minutes']} | {cells} | {d['rsum']} | {r['best_epoch']} |"
        )
    if plot_rel:
        lines += ["", f"![learning curves of the unfrozen stage]({plot_rel})"]
    return "\n".join(lines) + "\n"
