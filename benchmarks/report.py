"""Regenerate BENCHMARKS.md from benchmarks/results/*.json (written by the bench scripts)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from report_api import api_concurrency_section, api_concurrency_summary_row
from report_scale import scale_plot, scale_section
from report_search import peers_section, rerank_pool_plot, rerank_section
from report_speed import (
    image_path_section,
    quantization_section,
    rerank_depth_section,
    speed_summary_rows,
)
from report_train import extras_section, train_section
from result_files import ResultFiles

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


def summary_section(results: ResultFiles) -> str:
    """The headline figures of every result file present, each with its target or peer ratio."""
    rows: list[str] = []
    sweep = results.get("train_sweep.json")
    if sweep:
        best = max(sweep["runs"], key=lambda x: x["t2i_recall@10"])
        rows.append(
            f"| Flickr8k dev text->image R@1/5/10 (`lite`, best head recipe: {best['loss']}"
            f"{'' if best['loss'] == 'infonce' else ', ' + best['strategy']}) | {best['t2i_recall@1']:.3f} / "
            f"{best['t2i_recall@5']:.3f} / {best['t2i_recall@10']:.3f} | - |"
        )
    rr = results.get("rerank.json")
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
    peers = results.get("peers.json")
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
    scale = results.get("scale.json")
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
    ing = results.get("ingest.json")
    if ing:
        for key in ("images", "text"):
            x = ing[key]
            rows.append(
                f"| ingest {key}, end to end / raw encoder ({x['items']:,} items) | {x['end_to_end_per_s']} "
                f"{x['unit']} | **{x['ratio']:.2f}** (target >= 0.9) |"
            )
    rss = results.get("ingest_rss.json")
    if rss:
        rows.append(
            f"| peak RSS, ingest_demo + {rss['images']:,} images | {rss['peak_rss_mb']:.0f} MB "
            f"(+{rss['slope_mb_per_1000_files_second_half']:.1f} MB / 1,000 files) | "
            f"**{rss['peak_ratio_to_3gb']:.2f}** of 3 GB |"
        )
    api = results.get("api_load.json")
    if api:
        rows.append(
            f"| REST API, {api['clients']} clients while an ingest writes | {api['searches']} searches, "
            f"{api['errors']} errors | p95 during ingest / before "
            f"**{api['p95_ratio_during_ingest_to_baseline']:.2f}** |"
        )
    for _, conc in results.glob("api_concurrency*.json"):  # one per host class
        if row := api_concurrency_summary_row(conc):
            rows.append(row)
    rows += speed_summary_rows(results)
    from bench_cold_demo import summary_row as cold_row

    rows += [cold_row(r) for _, r in results.glob("cold_demo*.json")]  # one per host class
    if not rows:
        return ""
    return (
        "## Summary\n\n| what | figure | ratio (same run) |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "Details, commands and caveats in the sections below.\n"
    )


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args()
    res = ResultFiles(args.results)
    sections = []
    machine: dict[str, object] = {}
    if data := res.get("query.json"):
        machine = data["machine"]
        sections.append(query_section(data))
    if data := res.get("scale.json"):
        png = args.results / "scale.png"
        plot = os.path.relpath(png, args.output.parent) if scale_plot(data, png) else None
        sections.append(scale_section(data, plot))
    if data := res.get("ingest.json"):
        machine = machine or data["machine"]
        sections.append(ingest_section(data))
    if data := res.get("ingest_rss.json"):
        sections.append(ingest_rss_section(data))
    sections += [train_section(data) for _, data in res.glob("train_sweep*.json")]
    if data := res.get("train_extras.json"):
        sections.append(extras_section(data))
    if data := res.get("image_tower_sweep.json"):
        from sweep_image_tower import report_section as tower_section

        png = args.results / "image_tower_sweep.png"
        rel = os.path.relpath(png, args.output.parent) if png.exists() else None
        sections.append(tower_section(data, rel))
    if data := res.get("api_load.json"):
        sections.append(api_section(data))
    sections += [api_concurrency_section(data) for _, data in res.glob("api_concurrency*.json")]
    if data := res.get("rerank.json"):
        sections.append(rerank_section(data))
        png = args.results / "rerank_pool.png"
        if rerank_pool_plot(data, png):
            sections.append(f"![nDCG@10 against rerank pool]({os.path.relpath(png, args.output.parent)})\n")
    # sections their benchmark scripts render (each imported only when its results exist)
    for name, script in (
        ("retriever_concurrency.json", "bench_retriever_concurrency"),
        ("edge_threads.json", "bench_edge_threads"),
        ("cli_start.json", "bench_cli_start"),
    ):
        if data := res.get(name):
            sections.append(importlib.import_module(script).report_section(data))
    if text_paths := res.glob("text_path*.json"):  # one per host class
        from bench_text_path import report_section as text_path_section

        sections += [text_path_section(data) for _, data in text_paths]
    from bench_cold_demo import report_section as cold_section

    sections += [cold_section(data) for _, data in res.glob("cold_demo*.json")]  # one per host class
    speed = (
        ("image_path.json", image_path_section),
        ("quantization.json", quantization_section),
        ("quantization_1m.json", quantization_section),
    )
    sections += [render(data) for name, render in speed if (data := res.get(name))]
    # one depth run per host: the bf16 speed follows the CPU
    sections += [rerank_depth_section(data) for _, data in res.glob("rerank_depth*.json")]
    if data := res.get("peers.json"):
        sections.append(peers_section(data))
    if not sections:
        sys.exit("no results in benchmarks/results/: run `make bench` first")
    header = f"""# Benchmarks

Generated by `make bench` (`benchmarks/bench_query.py`, then `benchmarks/report.py`); do not edit by hand.
Every speed figure is a ratio against a limit or a peer measured in the same run, because these machines are
shared and noisy; figures are medians.

Machine: {machine.get("cpus")} CPUs, {machine.get("platform")}, Python {machine.get("python")}.
"""
    args.output.write_text(header + "\n" + summary_section(res) + "\n" + "\n".join(sections))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
