"""BENCHMARKS.md sections of the search-quality benchmarks: hybrid search with cross-encoder reranking
(`bench_rerank.py`) and the peers (`bench_peers.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from machine import describe
from report_scale import pyplot
from report_speed import recipe


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
    how = recipe(t, default_steps=None, default_precision=None)
    return f"`mmrag train-reranker`, {layers} layers on {docs}, {how}"


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


def rerank_pool_plot(r: dict[str, Any], path: Path) -> bool:
    """nDCG@10 against the rerank pool size (from rerank.json); False without matplotlib."""
    plt = pyplot()
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
