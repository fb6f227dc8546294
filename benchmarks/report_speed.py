"""BENCHMARKS.md sections of the speed benchmarks (#16): the image path and store quantization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from machine import cpu_name, describe
from result_files import ResultFiles

BASE_STEP = "torch, full decode"
FAST_STEP = "ONNX Runtime + draft decode (default)"


def image_path_section(r: dict[str, Any]) -> str:
    rows = []
    for run in r["runs"]:
        for name, s in run["sets"].items():
            for step, rate in s["images_per_s"].items():
                share, gain = s["share_of_ceiling"][step], rate / s["images_per_s"][BASE_STEP]
                cells = [str(run["threads"]), name, step, f"{rate:.1f}", f"{share:.2f}", f"{gain:.2f}x"]
                rows.append("| " + " | ".join(cells) + " |")
    parity = "; ".join(
        f"{run['threads']} thread(s), {name}: ONNX vs torch {s['parity_onnx_vs_torch']:.5f}, "
        f"draft vs full decode {s['parity_draft_vs_full']:.5f}"
        for run in r["runs"]
        for name, s in run["sets"].items()
    )
    ceilings = ", ".join(f"{x['threads']} thread(s) {x['ceiling_gflops']:.0f} GFLOP/s" for x in r["runs"])
    return f"""## Image path against the hardware

Command: `{r["command"]}` ({r["measured"]} UTC). Image tower `{r["model"]}`: {r["gflop_per_image"]:.3f}
GFLOP per image (torch's FLOP counter, 2 per multiply-add). fp32 matmul ceiling in the same run
(2048² `torch.mm`, best of 5): {ceilings}. Each cell: end-to-end `encode_image` on file paths (decode +
resize + forward), images/s, median of the timed passes; "share" = images/s x GFLOP per image / ceiling;
"x" = against the first step (the encoder before #16). The first three steps decode the next batch on
one thread beside the forward pass; the last two on {r.get("decode_workers", 1)} (one per core, up to 4),
first with ONNX Runtime's idle threads spinning, then sleeping (the default). The 1792 px set is the
224 px photos upscaled 8x and saved as JPEG (quality 90), standing for camera photos.

| threads | images | step | images/s | share of ceiling | x first step |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Parity (min cosine over the set): {parity}.
"""


def quantization_section(r: dict[str, Any]) -> str:
    rows = []
    for label, c in r["configs"].items():
        for mode, m in c.items():
            if not isinstance(m, dict):
                continue
            ratio = f"{m['score_ratio']:.4f}" if "score_ratio" in m else "-"
            if "score_ratio_p5" in m:
                ratio += f" (p5 {m['score_ratio_p5']:.3f})"
            rows.append(
                f"| {label} | {mode} | {m['p50_ms']:.2f} | {m['p95_ms']:.2f} | {m['recall@10']:.4f} | "
                f"{ratio} | {c['store_rss_mb']:.0f} | {c['disk_mb']:.0f} | {c['build_s']:.0f} |"
            )
    f32, i8 = r["configs"].get("float32"), r["configs"].get("int8")
    ratio = ""
    if f32 and i8 and f32["store_rss_mb"] > 0:
        ratio = (
            f"\n**Serving RSS int8 / float32 = {i8['store_rss_mb'] / f32['store_rss_mb']:.2f}**; "
            f"p95 int8 (rescored) / float32 = {i8['rescore']['p95_ms'] / f32['default']['p95_ms']:.2f}.\n\n"
        )
    texts = "SciFact abstract sentences and Flickr8k captions"
    if r.get("windows"):
        texts += ", and word windows of the abstracts (5-48 words; windows of different lengths overlap)"
    gap = ""
    if "gap_10_11" in r:
        gap = (
            " Score ratio = true cosines of the 10 found / of the exact top 10, mean over queries (1 = as "
            "close as the true ones; p5: the 5th percentile query); the exact 10th and 11th neighbours' "
            f"cosines differ by {r['gap_10_11']:.4f} (median)."
        )
    return f"""## Store quantization, {r["points"]:,} points: int8 with rescoring against float32

Command: `{r["command"]}` ({r["measured"]} UTC). {r["points"]:,} real `lite` vectors of distinct items
({r["texts"]:,} texts: {texts}; {r["images"]:,} images: Flickr8k
photos and random crops), Qdrant Edge after `optimize()`; {r["queries"]} SciFact queries, ANN only (the
query vector given), k = 10; recall@10 against exact float search on the same store. RSS = what a fresh
process gains by opening the store and answering every query; disk = the store folder.{gap}

| store | search | p50 ms | p95 ms | recall@10 | score ratio | serving RSS MB | disk MB | build s |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{ratio}"""


def speed_summary_rows(results: ResultFiles) -> list[str]:
    """Summary-table rows of the speed results present (image path, rerank variants, quantization)."""
    rows = []
    if r := results.get("image_path.json"):
        for run in r["runs"]:
            name, s = next(iter(run["sets"].items()))
            rows.append(
                f"| image encode end to end, {name}, {run['threads']} thread(s) | "
                f"{s['images_per_s'][FAST_STEP]:.1f} images/s, parity {s['parity_onnx_vs_torch']:.4f} | "
                f"**{s['speedup']:.2f}x** torch, {s['share_of_ceiling'][FAST_STEP]:.2f} of the matmul "
                "ceiling |"
            )
    for _, r in results.glob("text_path*.json"):  # one per host class
        for run in r["runs"]:
            f32, b16 = run["precisions"]["fp32"], run["precisions"]["bf16"]
            rows.append(
                f"| text encode, SciFact abstracts, batch 32, {run['threads']} thread(s), bf16 copy, "
                f"{r['machine']['cpu']} | "
                f"{b16['docs_per_s']:.1f} abstracts/s, parity {run['parity_bf16_vs_fp32']:.4f} | "
                f"**{b16['docs_per_s'] / f32['docs_per_s']:.2f}x** fp32 |"
            )
    if r := results.get("rerank.json"):
        for key, v in r.items():
            if key.startswith("end_to_end_") and key.endswith("_p50_ms"):
                name = key.split("_")[3]
                lc = (r.get("langchain") or {}).get(f"ratio_mmrag_{name}")
                bf16 = (r.get("machine") or {}).get("bf16")
                rows.append(
                    f"| hybrid + {name} rerank@20, end to end, 1 thread"
                    + (f" ({bf16} host)" if bf16 and name == "bf16" else "")
                    + f" | p50 {v:.0f} ms | "
                    + (f"**{lc:.2f}x** LangChain's |" if lc else "- |")
                )
    for depth, r in results.glob("rerank_depth*.json"):  # one per host: its 6-layer reference
        p0 = r["pool"]
        ref = [(k, e) for k, e in r["rerankers"].items() if not (e.get("trained") or {}).get("teacher")]
        if not ref:
            continue
        label, e = max(ref, key=lambda ke: ke[1]["layers"])  # the first of the deepest
        if "ratio_langchain" not in e:
            continue
        fit = f"+rerank@{p0}_crossfit" in e["quality"]
        q = e["quality"][f"+rerank@{p0}_crossfit" if fit else f"+rerank@{p0}"]
        rows.append(
            f"| hybrid + {e['precision']} rerank@{p0}, {e['layers']}-layer `{label}`, end to end, "
            f"{r['threads']} thread, {cpu_name(r.get('machine'))} "
            f"(`{depth}`) | p50 {e[f'end_to_end_pool{p0}_p50_ms']:.0f} ms, val nDCG@10 "
            f"{q['ndcg@10']:.4f} ({'cross-fitted' if fit else 'weight fit on val'}) | "
            f"**{e['ratio_langchain']:.2f}x** LangChain's (target <= 0.35) |"
        )
    for name in ("quantization.json", "quantization_1m.json"):
        if not (r := results.get(name)):
            continue
        f32, i8 = r["configs"]["float32"], r["configs"]["int8"]
        rows.append(
            f"| int8 store quantization, {r['points']:,} real vectors | recall@10 "
            f"{i8['rescore']['recall@10']:.3f} (float32 {f32['default']['recall@10']:.3f}) | serving RSS "
            f"**{i8['store_rss_mb'] / f32['store_rss_mb']:.2f}x** |"
        )
    return rows


def recipe(
    train: dict[str, Any], default_steps: int | None = 800, default_precision: str | None = "fp32"
) -> str:
    """How a reranker was trained, from its ``mmrag_rerank.json`` ``train`` record: labels or a
    teacher, frozen layers, steps (unless ``default_steps``), seeds, and the training precision
    (unless ``default_precision``; records from before ``--train-precision`` were fp32)."""
    if not train:
        return "untrained head"
    how = f"distilled from `{Path(train['teacher']).name}`" if train.get("teacher") else "labels only"
    if train.get("freeze_layers") is not None:
        how += f", {train['freeze_layers']} frozen"
    if train.get("steps") not in (None, default_steps):
        how += f", {train['steps']} steps"
    if train.get("soup", 1) > 1:
        how += f", soup of seeds {train['seed']}-{train['seed'] + train['soup'] - 1}"
    elif train.get("seed"):
        how += f", seed {train['seed']}"
    precision = train.get("train_precision", "fp32")
    if precision != default_precision:
        how += f", trained in {precision}"
    return how


def rerank_depth_section(r: dict[str, Any]) -> str:
    """Rerankers of different depth (``train-reranker --layers``, ``--teacher``) side by side from one
    interleaved ``bench_rerank_depth.py`` run (``results/rerank_depth*.json``, one per host), titled
    by the host's CPU."""
    p0, rows = r["pool"], []
    pools = sorted(
        {int(k.split("@")[1].split("_")[0]) for e in r["rerankers"].values() for k in e["quality"]}
    )
    for label, e in r["rerankers"].items():
        q, train = e["quality"], e.get("trained") or {}
        how = recipe(train)
        cells = [
            f"`{label}`",
            str(e["layers"]),
            how,
            f"{e[f'end_to_end_pool{p0}_p50_ms']:.0f} / {e[f'end_to_end_pool{p0}_p95_ms']:.0f}",
            " ".join(f"{x:.0f}" for x in e.get("rounds_p50_ms", [])),
            f"{e['ratio_langchain']:.2f}x" if "ratio_langchain" in e else "-",
        ]
        for pool in pools:
            cells += [
                f"{q[k]['ndcg@10']:.4f}" if k in q else "-"
                for k in (f"+rerank@{pool}", f"+rerank@{pool}_crossfit")
            ]
        cells.append(f"{q[f'rerank_only@{p0}']['ndcg@10']:.4f}")
        val = e.get("val") or {}
        table = [val.get(k) for k in ("fused_ndcg@10", "fused_crossfit_ndcg@10")]
        cells.append(" / ".join(f"{x:.3f}" for x in table if x is not None) or "-")
        rows.append("| " + " | ".join(cells) + " |")
    m = r["machine"]
    precisions = sorted({e["precision"] for e in r["rerankers"].values()})
    cols = ["checkpoint", "layers", "trained", f"hybrid + rerank@{p0} p50 / p95 ms", "p50 per round"]
    cols.append("/ LangChain")
    for pool in pools:
        cols += [f"+rerank@{pool}", f"@{pool} x-fit"]
    cols += [f"rerank alone@{p0}", "train-reranker table: fused / x-fit"]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)
    minutes = r["seconds"] / 60
    depths = sorted({int(e["layers"]) for e in r["rerankers"].values()})
    what = " and ".join(", ".join(map(str, depths)).rsplit(", ", 1)) + " layers"
    if any((e.get("trained") or {}).get("teacher") for e in r["rerankers"].values()):
        what += ", some distilled"
    return f"""## Reranker depth: {what}, on {cpu_name(m)}

Command: `python benchmarks/bench_rerank_depth.py --reranker CKPT [CKPT ...]` (one run, {minutes:.0f}
min) on {describe(m)},
{r["threads"]} thread, precision {", ".join(precisions)} (the default on this host). The checkpoints come
from `mmrag train-reranker` (800 steps); `--layers N` keeps the bottom N of MiniLM's 6 layers,
`--teacher` adds a 6-layer checkpoint's scores to the loss (starting from its weights, `--base`).
Latency: hybrid + rerank@{p0} end to end, {r["latency_queries"]} queries x {r["rounds"]} interleaved
rounds (every checkpoint and LangChain's `ContextualCompressionRetriever` with the same checkpoint take
turns on each query, so the host's drift hits all alike); p50 / p95 over all rounds, then each round's
p50. nDCG@10 on the SciFact val fold ({r["queries"]} queries, hybrid first stage
{r["hybrid"]["ndcg@10"]:.4f}): fused with the checkpoint's own weight (learned on this fold) and "x-fit"
(each half fused with the weight learned on the other half). The last column is `train-reranker`'s own
validation table (its first stage: 30 candidates per branch, against 100 here).

{head}
{chr(10).join(rows)}
"""
