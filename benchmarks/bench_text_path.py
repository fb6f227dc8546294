"""The text path: the fp32 tower (ONNX Runtime) against its bf16 copy, which batches of 2+ texts use.

Measured in one run, per torch thread count (``--threads``), for ``MMRAG_TEXT_PRECISION=fp32`` and
``bf16`` (``auto`` is ``bf16`` on CPUs with AMX or AVX512-BF16), and for bf16 with packing off
(``bf16 padded``: every batch padded to its longest text; by default batches of 3+ short texts of
unequal length run packed, :mod:`mmrag.encoders.packing`):

* ms per text for short queries (SciFact claims, the API's and LangChain's traffic) at batch 1, 2, 4, 8
  and 32: what one query costs alone and inside a micro-batch of concurrent searches;
* texts/s for abstracts (title + text, the length ingest chunks have) at batch 32: ingest speed;
* the machine's fp32 matmul ceiling with the same threads, for scale;
* parity: min cosine of the bf16 vectors to fp32's over every query and abstract timed.

With ``--ndcg``, SciFact dense nDCG@10 (every train query, the whole corpus, exact search) with corpus
and queries encoded in fp32 and in bf16: the retrieval quality the precision keeps. Each timing is the
median of ``--repeats`` passes after a warm-up pass (which also makes the bf16 copy).

Usage: python benchmarks/bench_text_path.py [--threads 1 2] [--queries 256] [--docs 128] [--ndcg]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_image_path import matmul_ceiling
from machine import run_record

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
QUERY_BATCHES = (1, 2, 4, 8, 32)
VARIANTS = (("fp32", "fp32"), ("bf16", "bf16"), ("bf16 padded", "bf16"))  # (row, MMRAG_TEXT_PRECISION)


def _median_s(fn: Any, repeats: int) -> float:
    fn()  # warm-up: the ONNX export or the bf16 copy, once
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(encoder: Any, queries: list[str], docs: list[str], threads: int, repeats: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    out: dict[str, Any] = {"threads": threads, "ceiling_gflops": matmul_ceiling(threads), "precisions": {}}
    vecs: dict[str, Any] = {}
    for name, precision in VARIANTS:
        encoder.set_runtime("auto", precision)  # a fresh ONNX session with this thread count too
        if name == "bf16 padded":
            encoder.text_packed = None
        row: dict[str, Any] = {"query_ms": {}}
        for b in QUERY_BATCHES:
            n = len(queries) - len(queries) % b

            def queries_in_batches(b: int = b, n: int = n) -> None:
                for i in range(0, n, b):
                    encoder.encode_text(queries[i : i + b], batch_size=b)

            row["query_ms"][str(b)] = 1000 * _median_s(queries_in_batches, repeats) / n
        row["docs_per_s"] = len(docs) / _median_s(lambda: encoder.encode_text(docs, batch_size=32), repeats)
        vecs[name] = np.concatenate([encoder.encode_text(queries), encoder.encode_text(docs)])
        out["precisions"][name] = row
        ms = ", ".join(f"batch {b}: {v:.2f}" for b, v in row["query_ms"].items())
        print(f"threads {threads} {name}: ms/query {ms}; abstracts {row['docs_per_s']:.1f}/s", flush=True)
    encoder.set_runtime("auto")
    out["parity_bf16_vs_fp32"] = min(
        float((v * vecs["fp32"]).sum(axis=1).min()) for name, v in vecs.items() if name != "fp32"
    )
    return out


def ndcg(encoder: Any, ds: Any) -> dict[str, float]:
    """SciFact dense nDCG@10 (exact search) with everything encoded in fp32, then in bf16."""
    from mmrag.eval.metrics import ndcg_at_k

    ids = list(ds.corpus)
    texts = [ds.doc_text(d) for d in ids]
    qids = list(ds.queries)
    out = {}
    for precision in ("fp32", "bf16"):
        encoder.set_runtime("auto", precision)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding, as eval does
        d = np.zeros((len(texts), encoder.dim), dtype=np.float32)
        for s in range(0, len(order), 256):
            idx = order[s : s + 256]
            d[idx] = encoder.encode_text([texts[i] for i in idx], batch_size=64)
        q = encoder.encode_text([ds.queries[i] for i in qids], batch_size=64)
        top = np.argsort(-(q @ d.T), axis=1)[:, :10]
        run = {qid: [ids[j] for j in row] for qid, row in zip(qids, top, strict=True)}  # ranked ids
        out[precision] = ndcg_at_k(ds.qrels, run, 10)
        print(f"SciFact dense nDCG@10, {precision}: {out[precision]:.4f}", flush=True)
    encoder.set_runtime("auto")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--queries", type=int, default=256, help="SciFact claims timed")
    ap.add_argument("--docs", type=int, default=128, help="SciFact abstracts timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ndcg", action="store_true", help="also SciFact dense nDCG@10 per precision (~6 min)")
    ap.add_argument("--model", default="lite")
    ap.add_argument("--out", type=Path, default=RESULTS / "text_path.json")
    args = ap.parse_args()
    if args.queries < max(QUERY_BATCHES):
        ap.error(f"--queries must be at least {max(QUERY_BATCHES)} (the largest batch timed)")
    from mmrag.encoders import load_encoder
    from mmrag.encoders.bf16 import BF16_MIN_BATCH, bf16_hardware
    from mmrag.eval.datasets import BeirDataset

    encoder = load_encoder(args.model)
    ds = BeirDataset.load(DATA / "scifact", "train")
    queries = [ds.queries[q] for q in ds.queries][: args.queries]
    docs = [ds.doc_text(d) for d in ds.corpus][: args.docs]
    result = {
        **run_record(),
        "model": encoder.id,
        "bf16_hardware": bf16_hardware(),
        "bf16_min_batch": BF16_MIN_BATCH,
        "queries": len(queries),
        "docs": len(docs),
        "runs": [run(encoder, queries, docs, t, args.repeats) for t in args.threads],
        "ndcg@10": ndcg(encoder, ds) if args.ndcg else None,
        "ndcg_queries": len(ds.queries),
        "ndcg_corpus": len(ds.corpus),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def hardware(data: dict[str, Any]) -> str:
    """The CPU's bf16 instructions a result was measured with (results before 2026-12-01 say ``amx``)."""
    if "bf16_hardware" in data:
        return str(data["bf16_hardware"] or "none")
    return "amx" if data.get("amx") else "none"


def report_section(data: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of a text-path result (``benchmarks/report.py`` calls this)."""
    least = int(data.get("bf16_min_batch", 4))
    if least <= 1:
        which = (
            "Every text (ingest and eval batches, the API's micro-batches, LangChain's `batch`, a lone "
            "query) runs"
        )
        single = ", so the bf16 rows' @1 column times the bf16 copy on one text."
    else:
        which = f"Batches of {least}+ texts (ingest, eval, the API's micro-batches, LangChain's `batch`) run"
        single = (
            "; a single query keeps fp32 (ONNX Runtime), which is bit-stable, so the bf16 rows' @1 column "
            "times that fp32 path too."
        )
    lines = [
        f"## Text path: fp32 against the bf16 copy, on {data['machine']['cpu']}",
        "",
        f"Command: `{data['command']}` ({data['measured']} UTC); model `{data['model']}`; "
        f"{data['queries']} SciFact claims, {data['docs']} abstracts; bf16 hardware: {hardware(data)}. "
        f"{which} on a bf16 copy of the text tower where the CPU has AMX or AVX512-BF16 "
        f"(`MMRAG_TEXT_PRECISION=auto`){single}",
        "",
    ]
    batches = list(data["runs"][0]["precisions"]["fp32"]["query_ms"])
    cols = " | ".join(f"@{b}" for b in batches[1:])
    lines += [
        f"| threads | precision | ms/query @{batches[0]} | {cols} | abstracts/s @32 "
        "| bf16 / fp32 abstracts/s |",
        "|---|---|" + "---|" * len(batches) + "---|---|",
    ]
    for r in data["runs"]:
        base = r["precisions"]["fp32"]["docs_per_s"]
        for p, row in r["precisions"].items():
            q = " | ".join(f"{row['query_ms'][b]:.2f}" for b in batches)
            rate = row["docs_per_s"]
            lines.append(f"| {r['threads']} | {p} | {q} | {rate:.1f} | **{rate / base:.2f}x** |")
    parity = min(r["parity_bf16_vs_fp32"] for r in data["runs"])
    lines += [
        "",
        f"* Parity: min cosine of bf16 vectors to fp32's, every query and abstract timed: {parity:.5f}.",
    ]
    if "bf16 padded" in data["runs"][0]["precisions"]:
        lines.append(
            "* `bf16` packs batches of 3+ short texts of unequal length into one row without padding "
            "(`mmrag.encoders.packing`); `bf16 padded` is the same copy with packing off."
        )
    nd = data.get("ndcg@10")
    if nd:
        lines.append(
            f"* SciFact dense nDCG@10 ({data['ndcg_queries']} train queries, "
            f"{data['ndcg_corpus']:,} abstracts, exact search): "
            f"fp32 {nd['fp32']:.4f}, "
            f"bf16 {nd['bf16']:.4f} (difference {nd['bf16'] - nd['fp32']:+.4f})."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
