"""BENCHMARKS.md sections of the training benchmarks: the triplet-head sweeps and the extras (joint
text tuning, unfrozen trunk blocks, the closed loop)."""

from __future__ import annotations

from typing import Any


def train_section(r: dict[str, Any]) -> str:
    rows = []
    for run in r["runs"]:
        name = "InfoNCE (CLIP loss)" if run["loss"] == "infonce" else f"triplet, {run['strategy']} negatives"
        margin = "-" if run["loss"] == "infonce" else f"{run['margin']}"
        text_head = "trained" if run.get("lock_text") is False else "locked"
        rows.append(
            f"| {name} | {margin} | {text_head} | {run['t2i_recall@1']:.3f} | {run['t2i_recall@5']:.3f} | "
            f"{run['t2i_recall@10']:.3f} | {run['i2t_recall@1']:.3f} | {run['i2t_recall@5']:.3f} | "
            f"{run['i2t_recall@10']:.3f} | {run['best_epoch']}/{run['epochs_run']} | "
            f"{run['train_seconds']:.0f} |"
        )
    table = "\n".join(rows)
    base = r.get("base", "lite")
    tower = "EfficientNet-Lite2 (260 px)" if "lite2" in base else "EfficientNet-Lite0"
    return f"""## Triplet head training: Flickr8k dev recall of the `{base}` encoder

Command: `python benchmarks/train_sweep.py --base {base}` (features cached in `.cache/features`;
loading them took
{r["feature_seconds"]} s in this run, extraction ~6-8 min cold). Frozen {tower} + MiniLM towers,
linear heads to 512-d trained on {r["train_images"]:,} train images x 5 captions, input dropout 0.5,
batch 256,
AdamW lr 3e-3, early stopping on dev t2i R@10 (patience 6, at most {r["epochs"]} epochs).
Dev:
{r["dev_images"]:,} images / 5,000 captions, exact search. "given" = a random other train image (as in the
shipped triplet files). "locked" text head (the default): only the image head learns, text->text search stays
MiniLM's (SciFact nDCG@10 0.660 either way); "trained": both heads learn, SciFact nDCG@10 drops to 0.580.
Untrained heads score chance (t2i R@10 0.008). "ep" = best / run epochs; "s" = wall seconds of head training.

| loss, negatives | margin | text | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 | ep | s |
|---|---|---|---|---|---|---|---|---|---|---|
{table}
"""


def _recall_cells(m: dict[str, Any]) -> str:
    keys = ("t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "i2t_recall@1", "i2t_recall@5", "i2t_recall@10")
    return " | ".join(f"{m[k]:.3f}" for k in keys)


def extras_section(r: dict[str, Any]) -> str:
    out = ["## Beyond the heads: joint text tuning, unfrozen trunk blocks, the closed loop\n"]
    out.append(
        "Command: `python benchmarks/train_extras.py joint|unfreeze|loop [--base SPEC]`; Flickr8k dev recall "
        "(exact search on the head embeddings, or through the store for the loop), SciFact nDCG@10 on the "
        "val fold of the train queries (whole corpus).\n"
    )
    head = "| run | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 |"
    sep = "|---|---|---|---|---|---|---|"
    for key, res in sorted(r.items()):
        kind = key.split(":")[0]
        if kind == "joint":
            nq, nu = res["val_queries"], res.get("val_queries_unseen_docs", "?")
            out.append(
                f"### Joint run (`{res['base']}`): {res['text_triplets']} SciFact train-fold triplets "
                "(BM25 hard negatives) beside the caption-image triplets\n"
            )
            out.append(
                f"SciFact nDCG@10 on the val fold ({nq} queries), and on its slice whose relevant abstracts "
                f"are never a training positive ({nu} queries): SciFact claims often cite the same "
                "abstracts, "
                "so the full fold rewards a head that learns those abstracts; the slice shows what carries "
                "over.\n"
            )
            out.append(head[:-1] + " | SciFact val | unseen-docs slice | s |\n" + sep + "---|---|---|")
            first = res["runs"][0]["before"]
            cells = f"{first['text_ndcg@10']:.3f} | {first.get('text_ndcg@10_unseen_docs', float('nan')):.3f}"
            out.append(f"| untrained heads | {_recall_cells(first)} | {cells} | - |")
            for run in res["runs"]:
                b = run["best"]
                cells = f"{b['text_ndcg@10']:.3f} | {b.get('text_ndcg@10_unseen_docs', float('nan')):.3f}"
                secs = f"{run['train_seconds']:.0f}"
                out.append(f"| {run['run']} | {_recall_cells(b)} | {cells} | {secs} |")
            out.append("")
        elif kind == "unfreeze":
            fc = res["feature_cache"]
            out.append(f"### Unfreezing the last {res['blocks']} image-trunk block(s) of `{res['base']}`\n")
            out.append(head + "\n" + sep)
            out.append(f"| heads only | {_recall_cells(res['heads_only'])} |")
            out.append(
                f"| + last {res['blocks']} block(s), BatchNorm frozen | {_recall_cells(res['unfrozen'])} |"
            )
            out.append(
                f"\nTraining {res['train_seconds']:.0f} s in all; wall {res['wall_seconds']:.0f} s "
                f"including {fc['seconds']:.0f} s of features ({fc['misses']} of {fc['hits'] + fc['misses']} "
                "computed, the rest from the cache).\n"
            )
        elif kind == "loop":
            o, n, mine = res["old"], res["new"], res["mining"]
            out.append(f"### Closed loop (`mmrag train --from-store`, `{res['base']}`)\n")
            out.append(
                f"Store: the {o['images_in_store']} Flickr8k dev images, ingested with a checkpoint of the "
                f"default recipe ({res['ingest_seconds']:.0f} s). Mined {mine['k']} negatives for each of "
                f"{mine['captions']:,} train captions ({mine['unique_images']} distinct images, "
                f"{mine['positives_dropped']} known positives dropped); re-embedded "
                f"{res['reembed']['reembedded']} points into `{res['new_vector']}` beside "
                f"`{res['old_vector']}`. "
                f"{o['queries']:,} dev captions as queries through the store:\n"
            )
            out.append("| vector | t2i R@1 | t2i R@5 | t2i R@10 |\n|---|---|---|---|")
            for name, m in (("old (default before)", o), ("new (mined negatives)", n)):
                cells = " | ".join(f"{m[f't2i_recall@{k}']:.3f}" for k in (1, 5, 10))
                out.append(f"| {name} | {cells} |")
            verdict = "switched the default vector" if res["switched"] else "kept the old default"
            out.append(f"\nFine-tuning lr {res.get('lr', '?')}, start: {res['start_checkpoint']}.")
            out.append(f"\nDecision: **{verdict}**: {res['reason']}. Wall {res['wall_seconds']:.0f} s.\n")
    return "\n".join(out) + "\n"
