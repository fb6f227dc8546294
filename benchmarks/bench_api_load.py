"""Load test of the REST API: concurrent searches while an ingest writes into the same store.

Loopback only. Starts `mmrag serve` in a subprocess on 127.0.0.1 (a free port) over a fresh Qdrant
Edge store, pre-ingests a base set of SciFact abstracts (one text file each, written to a temp folder
under MMRAG_INGEST_ROOT), then runs at the same time:

* one `POST /ingest` of a second, disjoint set of abstracts (server-side path);
* `--clients` asyncio + httpx clients, each sending `--searches` `POST /search` requests (real SciFact
  queries, k = 10) back to back.

First, as a same-run reference, the clients run `--baseline` searches each with no ingest. Reports
errors (any non-200), client-side latency p50/p95 (all searches, those that overlapped the ingest,
and the baseline), throughput, and checks the store afterwards: the stored point ids must equal exactly
the chunk ids the loaders produce for all ingested files (nothing lost, nothing duplicated).

Usage: python benchmarks/bench_api_load.py [--clients 8] [--searches 200] [--base-docs 300]
       [--ingest-docs 300] [--baseline 50] [--model lite] [--out benchmarks/results/api_load.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from machine import machine_info
from timing import pct

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_docs(root: Path, n_base: int, n_ingest: int) -> tuple[Path, Path, list[str]]:
    from mmrag.eval.datasets import BeirDataset

    ds = BeirDataset.load(DATA / "scifact", "train")
    ids = list(ds.corpus)[: n_base + n_ingest]
    if len(ids) < n_base + n_ingest:
        sys.exit(f"SciFact has {len(ids)} abstracts, fewer than {n_base + n_ingest}")
    base, more = root / "base", root / "more"
    base.mkdir()
    more.mkdir()
    for i, doc_id in enumerate(ids):
        folder = base if i < n_base else more
        (folder / f"{doc_id}.txt").write_text(ds.doc_text(doc_id), encoding="utf-8")
    queries = [ds.queries[q] for q in ds.queries]
    return base, more, queries


def expected_ids(folders: list[Path]) -> set[str]:
    """Chunk ids the loaders give for every file: what the store must hold, exactly."""
    from mmrag.ingest.chunking import ChunkingOptions
    from mmrag.ingest.loaders import iter_files, load_file

    ids: set[str] = set()
    for folder in folders:
        for path in iter_files(folder):
            ids.update(c.id for c in load_file(path, opts=ChunkingOptions()))
    return ids


async def client_loop(
    http: httpx.AsyncClient, queries: list[str], n: int, offset: int, out: list[tuple[float, float, int, str]]
) -> None:
    for i in range(n):
        q = queries[(offset + i * 7) % len(queries)]
        t0 = time.perf_counter()
        try:
            r = await http.post("/search", data={"query": q, "k": "10"})
            status, err = r.status_code, ("" if r.status_code == 200 else r.text[:200])
            if status == 200 and not r.json()["hits"]:
                status, err = -1, "no hits"
        except httpx.HTTPError as exc:
            status, err = -2, repr(exc)
        out.append((t0, time.perf_counter(), status, err))


async def run_baseline(url: str, queries: list[str], clients: int, searches: int) -> list[float]:
    """The same clients with no ingest running: the same-run reference for the latencies under ingest."""
    results: list[tuple[float, float, int, str]] = []
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": KEY}, timeout=120, limits=limits
    ) as http:
        await asyncio.gather(*(client_loop(http, queries, searches, c * 17, results) for c in range(clients)))
    bad = [e for _, _, s, e in results if s != 200]
    if bad:
        raise SystemExit(f"baseline searches failed: {bad[:3]}")
    return [(b - a) * 1000 for a, b, _, _ in results]


async def run_load(
    url: str, more: Path, queries: list[str], clients: int, searches: int
) -> tuple[list[tuple[float, float, int, str]], dict[str, Any], float, float]:
    results: list[tuple[float, float, int, str]] = []
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": KEY}, timeout=120, limits=limits
    ) as http:

        async def ingest() -> tuple[dict[str, Any], float, float]:
            t0 = time.perf_counter()
            r = await http.post("/ingest", data={"path": more.name}, timeout=900)
            t1 = time.perf_counter()
            if r.status_code != 200:
                raise SystemExit(f"ingest failed: {r.status_code} {r.text}")
            body: dict[str, Any] = r.json()
            return body, t0, t1

        ingest_task = asyncio.create_task(ingest())
        await asyncio.sleep(0.05)  # the ingest request is in before the searches start
        await asyncio.gather(*(client_loop(http, queries, searches, c * 31, results) for c in range(clients)))
        summary, t_in0, t_in1 = await ingest_task
    return results, summary, t_in0, t_in1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--searches", type=int, default=200, help="searches per client")
    ap.add_argument("--base-docs", type=int, default=300, help="abstracts ingested before the load")
    ap.add_argument("--ingest-docs", type=int, default=300, help="abstracts ingested during the load")
    ap.add_argument("--baseline", type=int, default=50, help="searches per client before the ingest starts")
    ap.add_argument("--model", default="lite", help="encoder spec for the server")
    ap.add_argument("--workers", type=int, default=4, help="API worker threads (MMRAG_API_WORKERS)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "api_load.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mmrag-load-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        base, more, queries = write_docs(root, args.base_docs, args.ingest_docs)
        store = Path(tmp) / "store"
        port = free_port()
        env = {
            **os.environ,
            "MMRAG_SERVE_API_KEY": KEY,
            "MMRAG_INGEST_ROOT": str(root),
            "MMRAG_THREADS": "1",
            "MMRAG_API_WORKERS": str(args.workers),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        cmd = [sys.executable, "-m", "mmrag.cli", "serve", "--store", str(store), "--model", args.model]
        cmd += ["--port", str(port), "-q"]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    sys.exit(f"server exited: {server.stderr.read() if server.stderr else ''}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("server did not start in 300 s")
                time.sleep(0.5)
            r = httpx.post(f"{url}/ingest", data={"path": base.name}, headers={"X-API-Key": KEY}, timeout=900)
            r.raise_for_status()
            base_summary = r.json()
            baseline = (
                asyncio.run(run_baseline(url, queries, args.clients, args.baseline)) if args.baseline else []
            )
            t_start = time.perf_counter()
            results, summary, t_in0, t_in1 = asyncio.run(
                run_load(url, more, queries, args.clients, args.searches)
            )
            wall = time.perf_counter() - t_start
            stats = httpx.get(f"{url}/stats", headers={"X-API-Key": KEY}, timeout=60).json()
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        from mmrag.store import QdrantStore

        with QdrantStore.open(str(store)) as st:
            stored = [r.id for r in st.iter_records()]
        want = expected_ids([base, more])

    lat = [(b - a) * 1000 for a, b, s, _ in results if s == 200]
    during = [(b - a) * 1000 for a, b, s, _ in results if s == 200 and a < t_in1 and b > t_in0]
    errors = [(s, e) for _, _, s, e in results if s != 200]
    out = {
        "clients": args.clients,
        "searches_per_client": args.searches,
        "searches": len(results),
        "errors": len(errors),
        "error_samples": errors[:5],
        "model": args.model,
        "base_docs": args.base_docs,
        "ingest_docs": args.ingest_docs,
        "api_workers": args.workers,
        "latency_ms": {
            "p50": round(pct(lat, 50), 1),
            "p95": round(pct(lat, 95), 1),
            "max": round(max(lat), 1),
        },
        "latency_during_ingest_ms": {
            "n": len(during),
            "p50": round(pct(during, 50), 1),
            "p95": round(pct(during, 95), 1),
        },
        "baseline_no_ingest_ms": {
            "n": len(baseline),
            "p50": round(pct(baseline, 50), 1),
            "p95": round(pct(baseline, 95), 1),
        },
        "p95_ratio_during_ingest_to_baseline": round(pct(during, 95) / pct(baseline, 95), 2)
        if baseline
        else None,
        "searches_per_s": round(len(results) / wall, 1),
        "wall_s": round(wall, 1),
        "ingest": {
            "files": summary["files_loaded"],
            "written": summary["written"],
            "seconds": round(t_in1 - t_in0, 1),
        },
        "base_ingest_written": base_summary["written"],
        "points_after": stats["points"],
        "expected_points": len(want),
        "stored_ids_unique": len(stored) == len(set(stored)),
        "lost_points": len(want - set(stored)),
        "unexpected_points": len(set(stored) - want),
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    ok = not errors and out["lost_points"] == 0 and out["unexpected_points"] == 0 and out["stored_ids_unique"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
