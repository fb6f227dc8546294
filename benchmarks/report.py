"""Regenerate BENCHMARKS.md from benchmarks/results/*.json (written by the bench scripts)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from machine import describe
from report_speed import (
    image_path_section,
    quantization_section,
    recipe,
    rerank_depth_section,
    speed_summary_rows,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _ok(ratio: float) -> str:
    return "meets target" if ratio <= 1.0 else "misses target"


def query_section(r: dict[str, Any]) -> str:
    m = r["median_of_runs_ms"]
    p95_ratio = float(r["p95_total_ratio_to_50ms"])
    rss_ratio = float(r["rss_ratio_to_1500mb"])
    return f"""## Query latency and memory: embedded default (Qdrant Edge), `lite`, ANN only

Command: `python benchmarks/bench_query.py --points {r["points"]} --queries {r["queries"]} \
--repeats {r["repeats"]} --threads {r["threads"]}` (`make bench`).

Store: {r["points"]:,} points: the `lite` text embeddings of the {r["real_points"]:,} SciFact abstracts,
topped up with perturbed copies (real vector + Gaussian noise, renormalised, cosine ~0.9 to the original).
Queries: {r["queries"]} real SciFact queries, each timed end to end (query encoding + ANN + payload),
k = 10. Figures are medians over {r["repeats"]} runs; torch threads = {r["threads"]};
hnsw_ef = {r["hnsw_ef"] or "Qdrant default"}.

| stage | p50 ms | p95 ms |
|---|---|---|
| encode query | {m["encode_p50"]:.1f} | {m["encode_p95"]:.1f} |
| ANN (Qdrant Edge) | {m["ann_p50"]:.1f} | {m["ann_p95"]:.1f} |
| total | {m["total_p50"]:.1f} | {m["total_p95"]:.1f} |

* **p95 total / 50 ms limit = {p95_ratio:.2f}** ({_ok(p95_ratio)}).
* ANN recall@10 against exact search on the same store: {m["recall@10"]:.3f}
  ({r.get("indexed_vectors", "?")} of {r["points"]} vectors in the HNSW index after `optimize()`).
* **Peak RSS of a `mmrag search` process (model load + one query) / 1.5 GB = {rss_ratio:.2f}**
  ({float(r["search_peak_rss_mb"]):.0f} MB, median of {r["repeats"]}; {_ok(rss_ratio)}).
"""


def _ms(st: dict[str, Any], key: str) -> str:
    v = st.get(key)
    return "-" if v is None else f"{v['p50']:.1f} / {v['p95']:.1f}"


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def scale_plot(r: dict[str, Any], path: Path) -> bool:
    """Latency vs collection size (log-log), per backend and query kind; False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines = [
        ("edge", "text", "ann", "Edge: ANN, text query", "C0", "-"),
        ("edge", "image", "ann", "Edge: ANN, image query", "C0", "--"),
        ("memory", "text", "ann", ":memory:: search, text query", "C3", "-"),
        ("edge", "text", "total", "Edge: text query end to end", "C2", "-"),
        ("edge", "image", "total", "Edge: image query end to end", "C2", "--"),
        ("memory", "text", "total", ":memory:: text query end to end", "C1", "-"),
    ]
    for backend, kind, stage, label, color, style in lines:
        runs = sorted((x for x in r["runs"] if x["backend"] == backend), key=lambda x: x["size"])
        pts = [(x["size"], x["stages"][kind][stage]) for x in runs if stage in x["stages"].get(kind, {})]
        if not pts:
            continue
        ax = ax1 if stage == "ann" else ax2
        sizes = [p[0] for p in pts]
        ax.plot(sizes, [p[1]["p50"] for p in pts], style, color=color, marker="o", label=label + " p50")
        ax.fill_between(
            sizes, [p[1]["p50"] for p in pts], [p[1]["p95"] for p in pts], color=color, alpha=0.12
        )
    ax2.axhline(50, color="grey", linestyle=":", label="50 ms target (text query)")
    for ax, title in ((ax1, "vector search (band: p50 to p95)"), (ax2, "query end to end, no rerank")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("points in the collection")
        ax.set_ylabel("ms per query")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def rerank_pool_plot(r: dict[str, Any], path: Path) -> bool:
    """nDCG@10 against the rerank pool size (from rerank.json); False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    q = r["quality"]
    pools = sorted({int(k.split("@")[1].split("_")[0]) for k in q if k.startswith("hybrid+rerank@")})
    fig, ax = plt.subplots(figsize=(6, 4))
    for prefix, suffix, label in (
        ("hybrid+rerank@", "_crossfit", "hybrid + rerank, fusion weight cross-fitted"),
        ("hybrid+rerank@", "", "hybrid + rerank, weight tuned on the fold"),
        ("rerank_only@", "", "cross-encoder order alone"),
    ):
        ys = [q.get(f"{prefix}{p}{suffix}", {}).get("ndcg@10") for p in pools]
        if all(y is not None for y in ys):
            ax.plot(pools, ys, marker="o", label=label)
    if "hybrid_rrf" in q:  # results written before DBSF became the default fusion
        q = {**q, "hybrid": q["hybrid_rrf"]}
    for name, style in (("hybrid", "--"), ("bm25", ":"), ("dense", "-.")):
        if name in q:
            ax.axhline(q[name]["ndcg@10"], linestyle=style, color="grey", alpha=0.8)
            ax.annotate(name, (pools[-1], q[name]["ndcg@10"]), fontsize=7, va="bottom", ha="right")
    ax.set_xlabel("rerank pool (candidates re-ordered)")
    ax.set_ylabel("nDCG@10, SciFact val fold")
    ax.set_xticks(pools)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def scale_section(r: dict[str, Any], plot: str | None) -> str:
    a = r["args"]
    runs = sorted(r["runs"], key=lambda x: (x["size"], x["backend"]))
    names = {"edge": "Qdrant Edge", "memory": "qdrant-client :memory:"}
    build = "\n".join(
        f"| {x['size']:,} | {names[x['backend']]} | {x['write_s']:.1f} | {x['size'] / x['write_s']:,.0f} | "
        f"{x['index_s']:.1f} | {x.get('started', '-')} |"
        for x in runs
    )
    hy = "text_hybrid_rerank" if r.get("reranker") else "text_hybrid"
    cells = [
        ("text", "encode"),
        ("text", "ann"),
        ("text", "total"),
        (hy, "sparse"),
        (hy, "rerank"),
        (hy, "total"),
        ("image", "encode"),
        ("image", "ann"),
        ("image", "total"),
    ]
    stages = "\n".join(
        f"| {x['size']:,} | {names[x['backend']]} | "
        + " | ".join(_ms(x["stages"][kind], stage) for kind, stage in cells)
        + " |"
        for x in runs
    )
    stage_head = (
        "| points | backend | text: encode | text: ANN | text: total | hybrid: BM25 | hybrid: rerank "
        "| hybrid+rerank: total | image: encode | image: ANN | image: total |\n|---|---|"
        + "---|"
        * len(cells)
    )
    edge = [x for x in runs if x["backend"] == "edge"]
    efs = list(edge[0]["ef"]) if edge else []

    def ef_cell(v: dict[str, Any]) -> str:
        ratio = f" / {v['score_ratio']:.4f}" if "score_ratio" in v else " / -"
        return f"{v['recall@10']:.3f}{ratio} ({v['p50']:.2f} ms)"

    ef_rows = "\n".join(
        f"| {x['size']:,} | " + " | ".join(ef_cell(x["ef"][e]) for e in efs) + " |" for x in edge
    )
    ratios = []
    for x in edge:
        mem = next((m for m in runs if m["backend"] == "memory" and m["size"] == x["size"]), None)
        t95 = x["stages"]["text"]["total"]["p95"]
        line = f"* {x['size']:,} points: p95 text query (encode + ANN) / 50 ms target = **{t95 / 50:.2f}**"
        if mem:
            ann = x["stages"]["text"]["ann"]["p50"] / mem["stages"]["text"]["ann"]["p50"]
            tot = x["stages"]["text"]["total"]["p50"] / mem["stages"]["text"]["total"]["p50"]
            line += f"; Edge / :memory: p50, ANN **{ann:.3f}**, whole text query **{tot:.2f}**"
        else:
            line += "; :memory: not run at this size (see above)"
        ratios.append(line)
    biggest = max((x["size"] for x in edge), default=0)
    cmd = (
        "python benchmarks/bench_scale.py"
        + f" --sizes {' '.join(str(s) for s in a['sizes'])} --queries {a['queries']}"
        + f" --rerank-queries {a['rerank_queries']} --image-queries {a['image_queries']}"
        + f" --repeats {a['repeats']} --threads {a['threads']}"
    )
    img = f"\n![latency vs collection size]({plot})\n" if plot else ""
    smallest = min(x["size"] for x in runs)
    real = r["real_points"]
    return f"""## Query latency against collection size: {smallest:,} to {biggest:,} points, stage by stage

Command: `{cmd}` (`make bench`). Encoder `{r["encoder"]}` ({r["dim"]}-d), torch threads {a["threads"]}.

Points: the real embeddings of {real["text"]:,} SciFact abstracts and {real["image"]:,} Flickr8k dev images,
topped up to each size with perturbed copies (a random real vector + Gaussian noise, renormalised, cosine
~0.9 to its original), each carrying its original's modality and text, so the reranker reads real
abstracts. Each size is a fresh store written the way `mmrag ingest` writes (payload, dense and BM25
vectors), then `optimize()` (HNSW, Qdrant's defaults m=16, ef_construct=100). qdrant-client's `:memory:`
mode scans every vector (no HNSW) and is run up to {a["memory_max"]:,} points: beyond that one query takes
seconds. Queries: {a["queries"]} SciFact queries (dense), {a["rerank_queries"]} of them through hybrid +
int8 rerank of the top {a["pool"]}, and {a["image_queries"]} Flickr8k train images (not in the store;
encode = load + preprocess + image tower). Each cell is p50 / p95 ms, median over {a["repeats"]} rounds;
hnsw_ef for the stage timings: {a["ef"] or "Qdrant's default"}. "ANN" is timed inside the query, right
after encoding, so it includes the cache misses a real query pays; the ef table below times searches back
to back.
{img}
Build (write = upsert of payload + dense + BM25 vectors; index = `optimize()`):

| points | backend | write s | points/s | index s | measured |
|---|---|---|---|---|---|
{build}

Stages (ms, p50 / p95):

{stage_head}
{stages}

Ratios, same run:
{chr(10).join(ratios)}

HNSW against exact search on the same Edge store, for each `hnsw_ef` ({a["queries"]} text +
{a["image_queries"]} image query vectors; "default" = no hnsw_ef sent). Each cell: recall@10 / score ratio
(sum of the top-10 cosines found / the exact top-10's; 1 = neighbours as close as the true ones; "-" where the
run predates this measure) (ANN p50, back to back). Recall falls at 1M. Our reading, not yet checked by a
score ratio at that size: each real vector has ~160 perturbed copies there, whose scores against a query
differ only by their noise, so the true top 10 is a near-tie among hundreds of noise-dominated neighbours,
close to HNSW's worst case (random high-dimensional points); real collections of 1M need their own check, and
m / ef_construct were left at Qdrant's defaults.

| points | {" | ".join(f"ef {e}" for e in efs)} |
|---|{"---|" * len(efs)}
{ef_rows}
"""


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    return json.loads(path.read_text()) if path.exists() else None


def summary_section(results: Path) -> str:
    """The headline figures of every result file present, each with its target or peer ratio."""
    rows: list[str] = []
    sweep = _load(results, "train_sweep.json")
    if sweep:
        best = max(sweep["runs"], key=lambda x: x["t2i_recall@10"])
        rows.append(
            f"| Flickr8k dev text->image R@1/5/10 (`lite`, best head recipe: {best['loss']}"
            f"{'' if best['loss'] == 'infonce' else ', ' + best['strategy']}) | {best['t2i_recall@1']:.3f} / "
            f"{best['t2i_recall@5']:.3f} / {best['t2i_recall@10']:.3f} | - |"
        )
    rr = _load(results, "rerank.json")
    if rr:
        q = rr["quality"]
        stages = [
            ("bm25", "BM25"),
            ("dense", "dense"),
            ("hybrid_rrf", "hybrid"),
            ("hybrid", "hybrid"),
            ("hybrid+rerank@20_crossfit", "+rerank@20 (fusion weight cross-fitted)"),
        ]
        cells = " / ".join(f"{label} {q[k]['ndcg@10']:.3f}" for k, label in stages if k in q)
        rows.append(f"| SciFact val nDCG@10 by stage | {cells} | - |")
    peers = _load(results, "peers.json")
    if peers:
        sy = peers["systems"]
        for name in ("langchain", "haystack"):
            if name in sy:
                r = sy[name]["ratio_to_mmrag"]
                rows.append(
                    f"| {name} / mmrag, same encoder + cross-encoder, SciFact | dense query p50 "
                    f"**{r['dense_p50']:.2f}x**, +rerank p50 **{r['rerank_p50']:.2f}x**, index time "
                    f"{r['index']:.2f}x | nDCG@10 {sy[name]['quality']['dense']['ndcg@10']:.3f} dense "
                    f"(mmrag {sy['mmrag']['quality']['dense']['ndcg@10']:.3f}) |"
                )
    scale = _load(results, "scale.json")
    if scale:
        for run in sorted(scale["runs"], key=lambda x: x["size"]):
            if run["backend"] != "edge":
                continue
            t = run["stages"]["text"]["total"]["p95"]
            img = run["stages"]["image"]["total"]["p50"]
            ef = run["ef"].get("default", {}).get("recall@10")
            mem = next(
                (m for m in scale["runs"] if m["backend"] == "memory" and m["size"] == run["size"]), None
            )
            vs = ""
            if mem:
                slower = mem["stages"]["text"]["total"]["p50"] / run["stages"]["text"]["total"]["p50"]
                vs = f"; :memory: / Edge p50 {slower:.1f}x"
            rows.append(
                f"| {run['size']:,} points, Qdrant Edge: text query p95 (encode + ANN) | {t:.1f} ms "
                f"(image query p50 {img:.1f} ms, HNSW recall@10 {ef:.3f}) | **{t / 50:.2f}** of 50 ms{vs} |"
            )
    ing = _load(results, "ingest.json")
    if ing:
        for key in ("images", "text"):
            x = ing[key]
            rows.append(
                f"| ingest {key}, end to end / raw encoder ({x['items']:,} items) | {x['end_to_end_per_s']} "
                f"{x['unit']} | **{x['ratio']:.2f}** (target >= 0.9) |"
            )
    rss = _load(results, "ingest_rss.json")
    if rss:
        rows.append(
            f"| peak RSS, ingest_demo + {rss['images']:,} images | {rss['peak_rss_mb']:.0f} MB "
            f"(+{rss['slope_mb_per_1000_files_second_half']:.1f} MB / 1,000 files) | "
            f"**{rss['peak_ratio_to_3gb']:.2f}** of 3 GB |"
        )
    api = _load(results, "api_load.json")
    if api:
        rows.append(
            f"| REST API, {api['clients']} clients while an ingest writes | {api['searches']} searches, "
            f"{api['errors']} errors | p95 during ingest / before "
            f"**{api['p95_ratio_during_ingest_to_baseline']:.2f}** |"
        )
    rows += speed_summary_rows(results)
    cold = _load(results, "cold_demo.json")
    if cold:
        ph = cold["phases_s"]
        install = sum(v for k, v in ph.items() if k.startswith(("sysdeps", "install")))
        parts = f"install {install / 60:.1f}, " + ", ".join(
            f"{name} {ph[name] / 60:.1f}" for name in ("lite heads", "reranker")
        )
        rows.append(
            "| cold `make demo`, fresh clone, install and every model included | "
            f"{cold['total_s'] / 60:.1f} min "
            f"({parts} min) | **{cold['ratio_to_limit']:.2f}** of {cold['limit_min']:g} min |"
        )
    if not rows:
        return ""
    return (
        "## Summary\n\n| what | figure | ratio (same run) |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Details, commands and caveats in the sections below.\n"
    )


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


def ingest_section(r: dict[str, Any]) -> str:
    rows = []
    for key in ("images", "text"):
        x = r[key]
        rows.append(
            f"| {key} | {x['items']} | {x['raw_per_s']} {x['unit']} | {x['end_to_end_per_s']} {x['unit']} "
            f"| {x['ratio']:.2f} (target >= {r['target_ratio']}) |"
        )
    args = f"--images {r['images']['items']} --abstracts {r['text']['files']} --repeats {r['repeats']}"
    return f"""## Ingest throughput (`benchmarks/bench_ingest.py`)

Command: `python benchmarks/bench_ingest.py {args}`
(`make bench`): Flickr8k dev images; SciFact abstracts, one `.txt` file each, token-aware chunks
({r["text"].get("chunking", "?")}).
Encoder `{r["encoder"]}`, {r["threads"]} torch thread(s), batch {r["batch"]}, median of {r["repeats"]} run(s).
End to end = `IngestRunner` into a fresh Qdrant Edge store (check, hash, parse, embed, write, ledger);
raw = the encoder alone on the same items, in the same run. Peak RSS {r["peak_rss_mb"]} MB.

| items | n | raw encoder | end to end | end-to-end / raw |
|---|---|---|---|---|
{chr(10).join(rows)}
"""


def ingest_rss_section(r: dict[str, Any]) -> str:
    pts = r["samples"]
    every = max(1, len(pts) // 8)
    shown = ", ".join(
        f"{f:,}: {m:.0f}" for f, m in pts[::every] + ([pts[-1]] if (len(pts) - 1) % every else [])
    )
    ok = "meets target" if r["peak_ratio_to_3gb"] <= 1 else "misses target"
    return f"""## Ingest memory at scale (`benchmarks/bench_ingest_rss.py`)

`ingest_demo` ({r["files"] - r["images"]} files), then {r["images"]:,} Flickr8k train + dev images with
captions,
one process, `mmrag ingest` defaults (batch 32, 2 reader threads, HNSW built at the end), encoder
`{r["encoder"]}`, {r["threads"]} torch thread(s): {r["points"]:,} points in {r["seconds"]:.0f} s.

* **Peak RSS / 3 GB = {r["peak_ratio_to_3gb"]:.2f}** ({r["peak_rss_mb"]:.0f} MB, the kernel's high-water mark,
  model load and index build included; {ok}). After loading the model: {r["rss_after_model_mb"]:.0f} MB.
* Flat in the number of files: over the second half of the files RSS grows
  {r["slope_mb_per_1000_files_second_half"]:.1f} MB per 1,000 files; the highest sample in the first half was
  {r["first_half_sampled_peak_mb"]:.0f} MB.
* RSS samples (files done: MB): {shown}.
"""


def api_section(r: dict[str, Any]) -> str:
    lat, during, ing = r["latency_ms"], r["latency_during_ingest_ms"], r["ingest"]
    cmd = (
        f"python benchmarks/bench_api_load.py --clients {r['clients']} --searches {r['searches_per_client']} "
        f"--base-docs {r.get('base_docs', '?')} --ingest-docs {r.get('ingest_docs', '?')}"
    )
    base = r.get("baseline_no_ingest_ms") or {"n": 0, "p50": "-", "p95": "-"}
    row = (
        f"| {r['searches']} | {r['errors']} | {lat['p50']} | {lat['p95']} | "
        f"{during['n']} / {during['p50']} / {during['p95']} | {base['n']} / {base['p50']} / {base['p95']} | "
        f"{r['searches_per_s']} |"
    )
    head = "| searches | errors | p50 ms | p95 ms | during ingest: n / p50 / p95 ms | "
    head += "no ingest (same run): n / p50 / p95 ms | searches/s |"
    ratio = r.get("p95_ratio_during_ingest_to_baseline")
    return f"""## REST API under load: searches while an ingest writes into the same store

Command: `{cmd}` (loopback only).
`mmrag serve` (model `{r["model"]}`, {r["api_workers"]} API worker threads, torch threads 1) over a
Qdrant Edge store holding {r["base_ingest_written"]} chunks of SciFact abstracts; {r["clients"]} asyncio +
httpx clients send {r["searches_per_client"]} real SciFact queries each (k = 10) while `POST /ingest` adds
{ing["files"]} more abstracts ({ing["written"]} chunks, {ing["seconds"]} s).

{head}
|---|---|---|---|---|---|---|
{row}

* p95 during the ingest / p95 with no ingest (same run, same clients) = {ratio}.
* With {r["clients"]} clients kept busy, latency is mostly queueing (searches/s x latency ~ clients,
  Little's law): the encoder runs one call at a time.
* After the run the store holds {r["points_after"]} points; the loaders give {r["expected_points"]}
  chunk ids for the ingested files: lost {r["lost_points"]}, unexpected {r["unexpected_points"]},
  ids unique: {r["stored_ids_unique"]}.
"""


def rerank_section(r: dict[str, Any]) -> str:
    q = r["quality"]
    rows = "\n".join(f"| {name} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} |" for name, m in q.items())
    lat = "\n".join(
        f"| {name} | {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {v['gflops']:.1f} | "
        f"{v['fraction_of_matmul']:.2f} | {v['padding_waste']:.2f} |"
        for name, v in r["latency"].items()
    )
    rr = r["reranker"]
    variants = r.get("variants_vs_fp32") or {"int8": r["int8_vs_fp32"]}
    e2e_pool = min(int(k.split("@")[1]) for k in r["latency"])
    vrows = "\n".join(
        f"| {n} | {v['pearson']:.4f} | {v['max_abs_diff']:.3f} | {v[f'ndcg@10_fp32@{e2e_pool}']:.4f} | "
        f"{v[f'ndcg@10_{n}@{e2e_pool}']:.4f} |"
        for n, v in variants.items()
    )
    e2e = "; ".join(
        f"{k.split('_')[3]} {v:.0f} ms"
        + (f" (p95 {r[k.replace('_p50_', '_p95_')]:.0f})" if k.replace("_p50_", "_p95_") in r else "")
        for k, v in r.items()
        if k.startswith("end_to_end") and k.endswith("_p50_ms")
    )
    ckpt = f" --reranker {rr['path']}" if rr.get("path") else ""
    host = describe(r.get("machine") or {})
    return f"""## Hybrid search and cross-encoder reranking: SciFact val fold

Command: `python benchmarks/bench_rerank.py{ckpt} --threads {r["threads"]}` on {host}.
Reranker: {trained_line(rr)}.
{r["queries"]} held-out val-fold queries of SciFact train, whole corpus
({r["corpus"]:,} abstracts); dense = `{r["encoder"]}` (MiniLM text tower); hybrid =
{r.get("fusion", "rrf").upper()} of BM25 and dense, {r["depth"]} candidates per branch; "+rerank@N" = the
top N re-ordered by the cross-encoder fused with the first-stage score (text weight
{rr["fusion_weight_text"]}, learned on this same fold, so these rows are optimistic; "_crossfit" rows fuse
each half of the fold with the weight learned on the other half, the unbiased estimate); "rerank_only" =
cross-encoder order alone. Cross-encoder max_length {rr["max_length"]}.

| run | nDCG@10 | Recall@100 |
|---|---|---|
{rows}

Lower-precision variants of the same checkpoint against fp32, pool {e2e_pool} (bf16 = weights and
activations in bfloat16, the default on CPUs with AMX or AVX512-BF16; int8 = torch dynamic quantization of
the Linear layers):

| variant | Pearson to fp32 | max abs diff | nDCG@10 fp32 | nDCG@10 variant |
|---|---|---|---|---|
{vrows}

Rerank latency per query (tokenization cache cold), torch threads {r["threads"]}; achieved GFLOP/s against a
2048x2048 fp32 matmul measured in the same run ({r["matmul_gflops"]:.1f} GFLOP/s):

| model@pool | p50 ms | p95 ms | GFLOP/s | / matmul | padding waste |
|---|---|---|---|---|---|
{lat}

End to end (encode + dense + BM25 + fuse + rerank of the top {e2e_pool}), p50 by variant: {e2e}.
{langchain_lines(r)}"""


def trained_line(rr: dict[str, Any]) -> str:
    """How the section's checkpoint was trained (``train-reranker``'s record in the checkpoint)."""
    t = rr.get("trained") or {}
    if not t:
        return "offline MiniLM with an untrained head"
    layers = rr.get("layers") or t.get("layers") or 6
    docs = f"{t['docs']} docs" if t.get("docs") else "the whole corpus"
    how = recipe(t, default_steps=None)
    precision = t.get("train_precision", "fp32")
    return f"`mmrag train-reranker`, {layers} layers, {how}, on {docs}, trained in {precision}"


def langchain_lines(r: dict[str, Any]) -> str:
    lc = r.get("langchain")
    if not lc:
        return "\nLangChain comparison: not run (langchain-classic / langchain-community not installed).\n"
    ratios = ", ".join(f"{v:.2f} ({k.split('_')[-1]})" for k, v in lc.items() if k.startswith("ratio_mmrag_"))
    return f"""
Same first stage and model folder through LangChain (`ContextualCompressionRetriever` +
`CrossEncoderReranker(HuggingFaceCrossEncoder)`, pool {lc["pool"]}, {lc["queries"]} queries, one run):
LangChain p50 {lc["p50_ms"]:.0f} ms; **mmrag / LangChain latency = {ratios}** (target <= 0.35);
nDCG@10 on those queries: mmrag (fused)
{lc["ndcg@10_mmrag"]:.4f}, LangChain (rerank order alone) {lc["ndcg@10_langchain"]:.4f}.
"""


PEER_IMAGES = """**Image queries.** mmrag embeds images and text with one dual encoder: images are ingested as
chunks and `Retriever.search(image=...)` / `search_images` take an image as the query (text->image and
image->text in one store). For text queries the cross-encoder reranks image candidates by their caption /
alt / OCR text; image queries stop after the ANN stage (their stage latencies are in the scale section).
The peers, as set up here:
* LangChain: the `Embeddings` interface is text-only (`embed_documents(list[str])`, `embed_query(str)`),
  `QdrantVectorStore` adds texts only and its retrievers take a string query. An image query works only by
  embedding the image outside LangChain and calling `similarity_search_by_vector`, which bypasses the
  retriever and the `ContextualCompressionRetriever` chain. langchain-community's image loaders
  (`UnstructuredImageLoader`, `ImageCaptionLoader`) turn images into text (OCR, BLIP captions from the hub).
* Haystack: `SentenceTransformersDocumentImageEmbedder` (sentence-transformers-haystack) indexes documents by
  their image with a CLIP-style sentence-transformers model (hub download: none works offline here), so text
  queries can find images; there is no image-query embedder component, so an image as the query needs a
  custom component. `SentenceTransformersSimilarityRanker` ranks text only.
"""


def peers_section(r: dict[str, Any]) -> str:
    systems = r["systems"]
    rows, stages = [], []
    for name, s in systems.items():
        q, lat, ratio = s["quality"], s["latency_ms"], s["ratio_to_mmrag"]
        rows.append(
            f"| {name} | {q['dense']['ndcg@10']:.4f} | {q['dense']['recall@100']:.4f} | "
            f"{q['rerank']['ndcg@10']:.4f} | {s['index_s']:.2f} | {lat['dense_p50']:.1f} / "
            f"{lat['dense_p95']:.1f} | {lat['rerank_p50']:.0f} / {lat['rerank_p95']:.0f} | "
            f"{ratio['index']:.2f} | {ratio['dense_p50']:.2f} / {ratio['dense_p95']:.2f} | "
            f"{ratio['rerank_p50']:.2f} / {ratio['rerank_p95']:.2f} |"
        )
        enc, first, rerank = lat["encode_p50"], lat["first_stage_p50"], lat["rerank_stage_p50"]
        parts, e2e = enc + first + rerank, lat["rerank_p50"]
        stages.append(
            f"| {name} | {enc:.1f} | {first:.1f} | {rerank:.0f} | {parts:.0f} | {e2e:.0f} | "
            f"{e2e - parts:+.0f} | {s['index_rss_mb']:.0f} |"
        )
    table, stage_table = "\n".join(rows), "\n".join(stages)

    def agreement(key: str) -> str:
        return "; ".join(
            f"{p} mean overlap {v['mean_overlap@10']:.3f}, same order on {100 * v['identical_order@10']:.0f}%"
            for p, v in r[key].items()
        )

    rr, v = r["reranker"], r["versions"]
    fused = systems["mmrag"]["quality"].get("rerank_fused_ndcg@10")
    fused_line = (
        "* mmrag's default rerank fuses the cross-encoder with the first-stage score (the checkpoint's\n"
        f"  weight): nDCG@10 {fused:.4f} (dense + rerank). That weight was learned on this same fold, so\n"
        "  the figure is optimistic; the table ranks by the cross-encoder alone, as the peers do.\n"
        if fused is not None
        else ""
    )
    why = ""
    if "mmrag_hnsw_vs_exact" in r:
        h, pool = r["mmrag_hnsw_vs_exact"], r["pool"]
        same = ", ".join(f"{p} {n}" for p, n in r["rerank_differs_same_pool"].items())
        ov10, ovp = h["mean_overlap@10"], h[f"mean_overlap@{pool}"]
        why = (
            "  Why they differ: mmrag's Edge store searches an HNSW graph (built by `optimize()`; Edge\n"
            f"  reports {h['indexed_vectors']:,} indexed vectors, dense + BM25; hnsw_ef {h['hnsw_ef']});\n"
            "  the peers' qdrant-client local mode scans every vector. mmrag HNSW vs exact scan of the same\n"
            "  store: top-10 overlap\n"
            f"  {ov10:.3f}, top-{pool} pool overlap {ovp:.3f}. Peers vs mmrag's exact scan:\n"
            f"  {agreement('dense_top10_vs_mmrag_exact')}.\n"
            f"  Reranked lists that differ although the pool was the same: {same}.\n"
        )
    split = systems["mmrag"].get("index_split_s")
    if split:
        why += (
            "* mmrag's index time splits into writing points (dense + BM25 sparse vectors, WAL on disk)\n"
            f"  {split['write']:.2f} s and `optimize()` (HNSW graph build) {split['optimize']:.2f} s "
            "(medians).\n"
        )
    pkgs = ", ".join(f"{k} {v[k]}" for k in v if k not in ("transformers",))
    header = (
        "| system | nDCG@10 dense | R@100 dense | nDCG@10 +rerank | index s | dense p50 / p95 ms | "
        "+rerank p50 / p95 ms | index x mmrag | dense p50 / p95 x mmrag | +rerank p50 / p95 x mmrag |"
    )
    return f"""## Peers: mmrag vs LangChain vs Haystack, same data, models and machine, one run

Command: `python benchmarks/bench_peers.py --pool {r["pool"]} --rounds {r["rounds"]} \
--latency-queries {r["latency_queries"]} --threads {r["threads"]}`. {r["queries"]} held-out val-fold queries
of SciFact train against the whole corpus ({r["corpus"]:,} abstracts, one chunk each, as `mmrag eval`
indexes it).

* Same models: the dense encoder is one `{r["encoder"]}` object for every system (LangChain reaches it
  through an `Embeddings` adapter, Haystack through `@component` embedders); the corpus vectors are
  computed once and handed to every indexer, so index times exclude embedding. The cross-encoder is one folder
  (`{rr["path"] or "offline MiniLM, untrained head"}`, max_length {rr["max_length"]}, batch 32) loaded by each
  framework its own way: mmrag `CrossEncoderReranker`; LangChain `ContextualCompressionRetriever(
  CrossEncoderReranker(HuggingFaceCrossEncoder))`; Haystack `SentenceTransformersSimilarityRanker` in a
  `Pipeline`. Pool {r["pool"]} -> top {r["top"]}, ordered by the cross-encoder score alone in every row.
* Stores: mmrag on embedded Qdrant Edge (it also writes BM25 sparse vectors at index time); LangChain
  (`QdrantVectorStore`) and Haystack (`QdrantDocumentStore` + `QdrantEmbeddingRetriever`) on qdrant-client's
  local mode (`:memory:`, exact NumPy search), their embedded option. `mmrag_hybrid`: BM25 + dense fused by
  the retriever's default fusion ({r.get("fusion", "rrf").upper()}), 100 per branch, as first stage, an
  mmrag-only row (the peers' BM25 needs a hub model).
* Latency: {r["latency_queries"]} queries x {r["rounds"]} rounds; each query goes to every system in turn
  (order rotated), torch threads {r["threads"]}; p50 / p95 per round, medians over rounds. "x mmrag" = this
  system / mmrag (dense) in the same round, median over rounds. Index: median of {r["index_rounds"]} builds.

{header}
|---|---|---|---|---|---|---|---|---|---|
{table}

Stage split, p50 ms (each framework's components called one by one after the end-to-end calls); overhead =
end-to-end +rerank p50 minus the sum of the stages (pipeline / chain machinery, negative within noise); RSS =
growth of the process's resident memory over the first index build (mmrag is built first and also pays
one-off allocations; `mmrag_hybrid` builds the identical index later):

| system | encode query | first stage | rerank {r["pool"]} | sum | end to end | overhead | index RSS MB |
|---|---|---|---|---|---|---|---|
{stage_table}

* Correctness, top-10 lists against mmrag's on all {r["queries"]} queries. Dense:
  {agreement("dense_top10_vs_mmrag")}. After reranking: {agreement("rerank_top10_vs_mmrag")}.
{why}{fused_line}* Versions: {pkgs}.

{PEER_IMAGES}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args()
    sections = []
    machine: dict[str, object] = {}
    q = args.results / "query.json"
    if q.exists():
        data = json.loads(q.read_text())
        machine = data["machine"]
        sections.append(query_section(data))
    sc = args.results / "scale.json"
    if sc.exists():
        data = json.loads(sc.read_text())
        png = args.results / "scale.png"
        plot = os.path.relpath(png, args.output.parent) if scale_plot(data, png) else None
        sections.append(scale_section(data, plot))
    ing = args.results / "ingest.json"
    if ing.exists():
        data = json.loads(ing.read_text())
        machine = machine or data["machine"]
        sections.append(ingest_section(data))
    rss = args.results / "ingest_rss.json"
    if rss.exists():
        sections.append(ingest_rss_section(json.loads(rss.read_text())))
    for t in sorted(args.results.glob("train_sweep*.json")):
        sections.append(train_section(json.loads(t.read_text())))
    extras = args.results / "train_extras.json"
    if extras.exists():
        sections.append(extras_section(json.loads(extras.read_text())))
    tower = args.results / "image_tower_sweep.json"
    if tower.exists():
        from sweep_image_tower import report_section as tower_section

        png = tower.with_suffix(".png")
        rel = os.path.relpath(png, args.output.parent) if png.exists() else None
        sections.append(tower_section(json.loads(tower.read_text()), rel))
    api = args.results / "api_load.json"
    if api.exists():
        sections.append(api_section(json.loads(api.read_text())))
    conc = args.results / "api_concurrency.json"
    if conc.exists():
        from bench_api_concurrency import report_section  # its section lives beside the benchmark

        sections.append(report_section(json.loads(conc.read_text())))
    rr = args.results / "rerank.json"
    if rr.exists():
        data = json.loads(rr.read_text())
        sections.append(rerank_section(data))
        png = args.results / "rerank_pool.png"
        if rerank_pool_plot(data, png):
            sections.append(f"![nDCG@10 against rerank pool]({os.path.relpath(png, args.output.parent)})\n")
    text = args.results / "text_path.json"
    if text.exists():
        from bench_text_path import report_section as text_section

        sections.append(text_section(json.loads(text.read_text())))
    retr = args.results / "retriever_concurrency.json"
    if retr.exists():
        from bench_retriever_concurrency import report_section as retriever_section

        sections.append(retriever_section(json.loads(retr.read_text())))
    edge = args.results / "edge_threads.json"
    if edge.exists():
        from bench_edge_threads import report_section as edge_section

        sections.append(edge_section(json.loads(edge.read_text())))
    cli = args.results / "cli_start.json"
    if cli.exists():
        from bench_cli_start import report_section as cli_section

        sections.append(cli_section(json.loads(cli.read_text())))
    cold = args.results / "cold_demo.json"
    if cold.exists():
        from bench_cold_demo import report_section as cold_section

        sections.append(cold_section(json.loads(cold.read_text())))
    speed = (
        ("image_path.json", image_path_section),
        ("quantization.json", quantization_section),
        ("quantization_1m.json", quantization_section),
    )
    for name, render in speed:
        if (args.results / name).exists():
            sections.append(render(json.loads((args.results / name).read_text())))
    depth = args.results / "rerank_depth.json"
    if depth.exists():
        sections.append(rerank_depth_section(json.loads(depth.read_text())))
    peers = args.results / "peers.json"
    if peers.exists():
        sections.append(peers_section(json.loads(peers.read_text())))
    if not sections:
        sys.exit("no results in benchmarks/results/: run `make bench` first")
    header = f"""# Benchmarks

Generated by `make bench` (`benchmarks/bench_query.py`, then `benchmarks/report.py`); do not edit by hand.
Every speed figure is a ratio against a limit or a peer measured in the same run, because these machines are
shared and noisy; figures are medians.

Machine: {machine.get("cpus")} CPUs, {machine.get("platform")}, Python {machine.get("python")}.
"""
    args.output.write_text(header + "\n" + summary_section(args.results) + "\n" + "\n".join(sections))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
