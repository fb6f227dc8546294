"""Qdrant Edge search threads: Edge's own search pool against searching on the calling thread.

Qdrant Edge runs a search's per-segment reads on a thread pool (sized from the CPU count unless told),
but its Python binding keeps the GIL for the whole call, so while the pool works every other Python
thread of the process waits: the API's event loop, the other searches. mmrag opens Edge stores with
``MMRAG_EDGE_SEARCH_THREADS`` threads (default 1, the calling thread). This measures, per store size,
in one run and the same store files:

* p50 / p95 ms of single searches back to back (k = 10, payload returned, Qdrant's default ``hnsw_ef``),
  on an idle machine and with every core busy (one spinning process per core: a server under load);
* the thread CPU the searching thread itself uses per search (the rest ran on the pool);
* p50 of exact searches (a full scan, which Edge's pool splits over the segments);
* searches/s beside a pure-Python thread over searches/s alone: ~0.5 when a search holds the GIL (the
  two threads take turns), so that its wall time is time every other Python thread waits.

Stores: random unit vectors (``--dim``) with a ~700-byte text payload, written in batches of 1,000
and optimized (HNSW above Qdrant's indexing threshold), then copied once per setting. Each cell is
the median of ``--repeats`` rounds; the settings take turns inside each round.

Usage: python benchmarks/bench_edge_threads.py [--sizes 1000 100000] [--queries 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from machine import run_record

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
POOL = "pool"  # Qdrant's default: the search pool sized from the CPU count (mmrag before 2026-12-02)
PAYLOAD = "lorem ipsum dolor sit amet " * 26  # ~700 bytes, a chunk's text


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def build(path: Path, size: int, dim: int, seed: int) -> float:
    """A store of ``size`` points written the way Qdrant's defaults leave it, optimized; build seconds."""
    import qdrant_edge as qe

    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    config = qe.EdgeConfig(vectors={"dense": qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)})
    shard = qe.EdgeShard.create(str(path), config)
    for start in range(0, size, 1000):
        vecs = _unit(rng, min(1000, size - start), dim)
        points = [qe.Point(start + i, {"dense": v.tolist()}, {"text": PAYLOAD}) for i, v in enumerate(vecs)]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.optimize()
    shard.flush()
    shard.close()
    return time.perf_counter() - t


def open_shard(path: Path, setting: str, dim: int) -> Any:
    """The shard as mmrag opens it with ``setting`` threads, or as Qdrant's defaults open it (``pool``)."""
    import qdrant_edge as qe

    from mmrag.store.edge_config import load_config

    if setting == POOL:
        return qe.EdgeShard.load(str(path))  # built with Qdrant's default, which persists
    meta = {"vectors": {"dense": {"dim": dim}}}
    return qe.EdgeShard.load(str(path), load_config(meta, search_threads=int(setting)))


def _latencies(shard: Any, requests: list[Any]) -> tuple[float, float, float]:
    """p50 ms, p95 ms and the searching thread's own CPU ms per search."""
    times = []
    cpu = time.thread_time()
    for r in requests:
        t = time.perf_counter()
        shard.query(r)
        times.append(time.perf_counter() - t)
    cpu_ms = (time.thread_time() - cpu) / len(requests) * 1000
    return statistics.median(times) * 1000, float(np.percentile(times, 95)) * 1000, cpu_ms


def beside_python(shard: Any, requests: list[Any], seconds: float) -> float:
    """Searches/s while a pure-Python thread runs, over searches/s alone: ~0.5 when a search holds the
    GIL (the two threads take turns), near 1 where it would let the other thread run."""

    def rate(secs: float) -> float:
        n, end = 0, time.perf_counter() + secs
        while time.perf_counter() < end:
            for r in requests:
                shard.query(r)
            n += len(requests)
        return n / secs

    alone = rate(seconds)
    done = threading.Event()

    def count() -> None:
        n = 0
        while not done.is_set():
            n += 1

    th = threading.Thread(target=count)
    th.start()
    try:
        beside = rate(seconds)
    finally:
        done.set()
        th.join()
    return beside / alone


@contextmanager
def busy_cores(n: int) -> Iterator[None]:
    """``n`` processes spinning on the CPU for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.3)
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure(shard: Any, requests: list[Any], exact: list[Any], seconds: float) -> dict[str, float]:
    for r in requests[: len(requests) // 4]:  # warm the pages the searches touch
        shard.query(r)
    p50, p95, cpu = _latencies(shard, requests)
    exact50, _, _ = _latencies(shard, exact)
    with busy_cores(os.cpu_count() or 1):
        busy50, busy95, _ = _latencies(shard, requests)
    return {
        "p50_ms": p50,
        "p95_ms": p95,
        "thread_cpu_ms": cpu,
        "busy_p50_ms": busy50,
        "busy_p95_ms": busy95,
        "exact_p50_ms": exact50,
        "beside_python": beside_python(shard, requests[:10], seconds),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import qdrant_edge as qe

    settings = [POOL, *(str(n) for n in args.search_threads)]
    out: dict[str, Any] = {
        **run_record(),
        "dim": args.dim,
        "queries": args.queries,
        "repeats": args.repeats,
        "settings": settings,
        "sizes": {},
    }
    rng = np.random.default_rng(args.seed + 1)
    queries = _unit(rng, args.queries, args.dim)

    def request(q: np.ndarray, exact: bool = False) -> Any:
        params = qe.SearchParams(exact=True) if exact else None
        nearest = qe.Query.Nearest(q.tolist(), using="dense")
        return qe.QueryRequest(limit=10, query=nearest, with_payload=True, params=params)

    with tempfile.TemporaryDirectory(prefix="mmrag-edge-threads-") as tmp:
        for size in args.sizes:
            base = Path(tmp) / f"{size}-base"
            build_s = build(base, size, args.dim, args.seed)
            print(f"{size:,} points built in {build_s:.1f} s", file=sys.stderr)
            copies = {s: Path(tmp) / f"{size}-{s}" for s in settings}
            for path in copies.values():
                shutil.copytree(base, path)
            shutil.rmtree(base)
            rounds: dict[str, list[dict[str, float]]] = {s: [] for s in settings}
            for i in range(args.repeats):
                for s in settings[i % len(settings) :] + settings[: i % len(settings)]:  # take turns first
                    shard = open_shard(copies[s], s, args.dim)
                    exact = [request(q, exact=True) for q in queries[:20]]
                    rounds[s].append(measure(shard, [request(q) for q in queries], exact, args.seconds))
                    shard.close()
            row = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in rounds.items()}
            out["sizes"][str(size)] = {"build_s": build_s, "settings": row}
            for s, v in row.items():
                print(f"  {s:>5}: " + ", ".join(f"{k} {x:.3f}" for k, x in v.items()), file=sys.stderr)
            for path in copies.values():
                shutil.rmtree(path)
    return out


def report_section(data: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of a result (``benchmarks/report.py`` calls this)."""
    settings = data["settings"]
    names = {POOL: "Qdrant's pool (before)", "1": "1, the calling thread (default)"}
    cpus = data["machine"].get("cpus", "?")
    lines = [
        "## Qdrant Edge search threads: Edge's pool against the calling thread",
        "",
        f"Command: `{data['command']}` ({data['measured']} UTC), {cpus} CPUs. Random {data['dim']}-d unit "
        f"vectors with a ~700-byte payload, optimized; {data['queries']} searches (k = 10, payload returned) "
        f"back to back, median of {data['repeats']} rounds. Busy: one spinning process per core. "
        "Thread CPU: what the searching thread itself spent per search (the rest ran on Edge's pool). "
        "Exact: a full scan (`exact=True`, 20 queries). Beside Python: searches/s while a pure-Python "
        "thread runs, over searches/s alone; ~0.5 means a search holds the GIL and the two threads take "
        "turns, so a search's wall time is time every other Python thread of the process waits.",
        "",
        "| points | search threads | p50 ms | p95 ms | busy p50 ms | busy p95 ms | thread CPU ms "
        "| exact p50 ms | beside Python |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in data["sizes"].items():
        for s in settings:
            v = r["settings"][s]
            lines.append(
                f"| {int(size):,} | {names.get(s, s)} | {v['p50_ms']:.3f} | {v['p95_ms']:.3f} | "
                f"{v['busy_p50_ms']:.3f} | {v['busy_p95_ms']:.3f} | {v['thread_cpu_ms']:.3f} | "
                f"{v['exact_p50_ms']:.2f} | {v['beside_python']:.2f} |"
            )
    lines.append("")
    for size, r in data["sizes"].items():
        pool, one = r["settings"][POOL], r["settings"].get("1")
        if one:
            lines.append(
                f"* {int(size):,} points, 1 thread / pool: p50 **{one['p50_ms'] / pool['p50_ms']:.2f}x**, "
                f"busy p50 **{one['busy_p50_ms'] / pool['busy_p50_ms']:.2f}x**, exact "
                f"{one['exact_p50_ms'] / pool['exact_p50_ms']:.2f}x."
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument(
        "--search-threads", type=int, nargs="+", default=[1], help="settings beside Qdrant's pool"
    )
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5, help="per searches/s measurement (beside Python)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "edge_threads.json")
    args = ap.parse_args()
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(report_section(result))


if __name__ == "__main__":
    main()
