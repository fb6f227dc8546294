"""In-process concurrency: concurrent ``MmragRetriever.ainvoke`` calls, queries/s at 1, 8 and 64 callers.

The REST API's figures (``bench_api_concurrency.py``) include HTTP: the event loop parses and answers
every request. This measures the micro-batcher alone, as a LangChain application uses it: one
``MmragRetriever`` over an embedded Qdrant Edge store of SciFact abstracts (ingested with
``mmrag ingest``, model ``lite``), ``--clients`` asyncio tasks each awaiting ``ainvoke`` on real
SciFact queries back to back (dense, k = 10, no rerank), for ``--seconds`` per row. Concurrent
``ainvoke`` calls go through the same :class:`~mmrag.retriever.batching.SearchBatcher` as the API's
searches: their texts are gathered into shared encoder passes, up to as many batches at once as the
cores fit at ``MMRAG_THREADS``.

Each row: queries/s, p50 / p95 latency of one ``ainvoke``, the process's CPU (cores) and the mean
encoder batch. The client counts take turns inside each of ``--repeats`` rounds; the report gives
each count's median round and the 8 / 1 ratio of the medians.

Usage: python benchmarks/bench_retriever_concurrency.py [--clients 1 8 64] [--seconds 6] [--repeats 3]
       [--docs 300] [--threads 1] [--out benchmarks/results/retriever_concurrency.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api_load import REPO, write_docs
from machine import run_record
from timing import pct


async def _load(retriever: Any, queries: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` tasks awaiting ``ainvoke`` back to back for ``seconds``."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def client(i: int) -> None:
        n = i
        while time.perf_counter() < end:
            t = time.perf_counter()
            docs = await retriever.ainvoke(queries[n % len(queries)])
            latencies.append(time.perf_counter() - t)
            assert docs, "a search returned no documents"
            n += clients

    t0, c0 = time.perf_counter(), os.times()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall, c1 = time.perf_counter() - t0, os.times()
    ms = [x * 1000 for x in latencies]
    return {
        "searches": len(ms),
        "qps": round(len(ms) / wall, 1),
        "p50_ms": round(pct(ms, 50), 1),
        "p95_ms": round(pct(ms, 95), 1),
        "cores": round((c1.user + c1.system - c0.user - c0.system) / wall, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["MMRAG_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mmrag.langchain import MmragRetriever

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, _, queries = write_docs(root, args.docs, 0)
        store = root / "store"
        cmd = [sys.executable, "-m", "mmrag.cli", "ingest", str(base), "--store", str(store)]
        subprocess.run([*cmd, "--model", args.model, "-q"], check=True, env=os.environ.copy())
        retriever = MmragRetriever.from_store(store, k=10, mode="dense", rerank=False)
        try:
            asyncio.run(_load(retriever, queries, max(args.clients), 2.0))  # warm: exports, bf16 copy
            rounds: dict[int, list[dict[str, Any]]] = {c: [] for c in args.clients}
            for r in range(args.repeats):
                order = args.clients[r % len(args.clients) :] + args.clients[: r % len(args.clients)]
                for clients in order:
                    batcher = retriever._searches()
                    before = (batcher.texts.calls, batcher.texts.batches)
                    row = asyncio.run(_load(retriever, queries, clients, args.seconds))
                    calls, batches = batcher.texts.calls - before[0], batcher.texts.batches - before[1]
                    row["mean_encode_batch"] = round(calls / batches, 2) if batches else None
                    rounds[clients].append(row)
                    print(json.dumps({"round": r, "clients": clients, **row}), flush=True)
        finally:
            retriever.close()
    rows = {}
    for clients, got in rounds.items():
        median = sorted(got, key=lambda x: x["qps"])[len(got) // 2]
        rows[str(clients)] = {**median, "qps_rounds": [x["qps"] for x in got]}
    return {
        **run_record(),
        "model": args.model,
        "threads": args.threads,
        "docs": args.docs,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "rows": rows,
    }


def report_section(data: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of a result (``benchmarks/report.py`` calls this)."""
    rows = data["rows"]
    lines = [
        "## In-process concurrency: concurrent `MmragRetriever.ainvoke` (no HTTP)",
        "",
        f"Command: `{data['command']}` ({data['measured']} UTC), {data['machine'].get('cpus', '?')} CPUs, "
        f"model `{data['model']}`, `MMRAG_THREADS={data['threads']}`. {data['docs']} SciFact abstracts in an "
        "embedded Edge store; each caller awaits `ainvoke` on real SciFact queries back to back (dense, "
        f"k = 10) for {data['seconds']:g} s; the client counts take turns in each of {data['repeats']} "
        "rounds and each row is its median round. Cores: the process's CPU over wall time.",
        "",
        "| callers | q/s (median) | q/s, every round | p50 ms | p95 ms | cores | mean encode batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for clients, r in rows.items():
        each = " / ".join(f"{q:.1f}" for q in r["qps_rounds"])
        lines.append(
            f"| {clients} | {r['qps']:.1f} | {each} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['cores']:.2f} | {r['mean_encode_batch']} |"
        )
    if "1" in rows and "8" in rows:
        ratio = rows["8"]["qps"] / rows["1"]["qps"]
        lines += ["", f"* 8 callers / 1 caller: **{ratio:.2f}x** queries/s (the rows' median rounds)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--seconds", type=float, default=6.0, help="load per row")
    ap.add_argument("--repeats", type=int, default=3, help="rounds; the client counts take turns")
    ap.add_argument("--docs", type=int, default=300, help="SciFact abstracts in the store")
    ap.add_argument("--model", default="lite", help="encoder spec")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (MMRAG_THREADS)")
    ap.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "retriever_concurrency.json"
    )
    args = ap.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report_section(result))


if __name__ == "__main__":
    main()
