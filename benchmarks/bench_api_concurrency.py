"""REST API concurrency: queries/s and latency at 1, 8 and 64 clients, micro-batching on and off.

Loopback only. For each server configuration (`batched`: the defaults, MMRAG_BATCH_MAX=32 and
MMRAG_BATCH_WAIT_MS=5, as many encoder and rerank batches at once as the cores fit at the server's
torch threads; `one-lane`: the same with MMRAG_BATCH_LANES=1, one batch at a time; `off`:
MMRAG_BATCH_MAX=1, one search at a time) it starts `mmrag serve` in a
subprocess over a Qdrant Edge store of SciFact abstracts (ingested through `POST /ingest`), then runs
one row per (stage, clients) for `--seconds` each: `--clients` asyncio + aiohttp clients send real
SciFact queries (k = 10) back to back. Stages: `dense` (mode=dense, rerank=false) and `rerank`
(mode=hybrid, rerank=true, pool 20, the server's `--reranker`). Then the same rows with 8 and 64
clients while `POST /ingest` adds a second, disjoint set of abstracts.

Each row reports searches, queries/s (HTTP 200 per second of wall time), p50/p95 client latency,
the status codes seen (a full queue is 503 + Retry-After, never a 504), the mean encoder and rerank
batch sizes (from `GET /health`, calls / batches), the server's CPU per search (from `/proc`) and the
cores busy (server + clients). With both, the report says how much CPU a search may take, all cores
busy, for 8 clients to reach 3x one client's queries/s. The clients run in this process on the same
machine as the server: with few cores they take CPU from it, so the figures are a floor. They use
aiohttp, ~0.3 ms of CPU per request: httpx took 0.8 ms at 8 clients and ~5 ms at 64, so the 64-client
rows measured the load generator (on 2 cores: 156 q/s with httpx, 268 with aiohttp, same server).

With ``--rounds N`` the rows without an ingest run N times, the client counts taking turns, and each
row is the median of its rounds (the host's speed drifts over minutes; a ratio of medians of
interleaved rounds is steadier than one of single rows measured a minute apart).

Usage: python benchmarks/bench_api_concurrency.py [--seconds 10] [--clients 1 8 64] [--rounds 1]
       [--configs batched one-lane off] [--base-docs 300] [--ingest-docs 100] [--reranker minilm]
       [--out benchmarks/results/api_concurrency.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api_load import KEY, REPO, free_port, write_docs
from machine import head_commit, run_record
from report_api import targets
from timing import pct

CONFIGS = {
    "batched": {},  # the defaults: MMRAG_BATCH_MAX=32, MMRAG_BATCH_WAIT_MS=5, MMRAG_QUEUE_SIZE=256
    "off": {"MMRAG_BATCH_MAX": "1", "MMRAG_BATCH_WAIT_MS": "0"},
    # batched, but one encoder (and rerank) batch at a time, as before lanes: what lanes add
    "one-lane": {"MMRAG_BATCH_LANES": "1"},
}
STAGES = {
    "dense": {"mode": "dense", "rerank": "false"},
    "rerank": {"mode": "hybrid", "rerank": "true", "pool": "20"},
}
HEADERS = {"X-API-Key": KEY}


def start_server(
    store: Path, root: Path, env_extra: dict[str, str], args: argparse.Namespace
) -> tuple[Any, str, Path]:
    """The server process, its URL and the file its stderr goes to."""
    port = free_port()
    env = {
        **os.environ,
        **env_extra,
        "MMRAG_SERVE_API_KEY": KEY,
        "MMRAG_INGEST_ROOT": str(root),
        "MMRAG_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    cmd = [sys.executable, "-m", "mmrag.cli", "serve", "--store", str(store), "--model", args.model]
    cmd += ["--reranker", args.reranker, "--port", str(port), "-q"]
    # to a file, not a pipe nobody reads while the rows run (a full pipe would stall the server)
    log = store.parent / "server.log"
    with log.open("a") as err:
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if server.poll() is not None:
            sys.exit(f"server exited:\n{server_log_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url, log
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            sys.exit("server did not start in 300 s")
        time.sleep(0.5)


def server_log_tail(log: Path, lines: int = 40) -> str:
    """The last lines the server wrote to stderr (its log file)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop_server(server: Any) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def batching(http: aiohttp.ClientSession) -> dict[str, Any]:
    """``GET /health``'s batching counters. Retried once on a dropped connection: after a slow row
    the pool can hand out a keep-alive connection the server has just closed (uvicorn closes them
    after 5 s idle), which fails before the server sees the request."""
    for attempt in (1, 2):
        try:
            async with http.get("/health") as r:
                return (await r.json())["batching"]  # type: ignore[no-any-return]
        except aiohttp.ClientConnectionError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used; this process's if None."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as f:  # fields after the ")" closing the command name
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def json_body(form: dict[str, str]) -> dict[str, Any]:
    """A search form's fields as ``POST /query``'s JSON body (typed values)."""
    typed = {"true": True, "false": False}
    return {k: v if k == "query" else typed.get(v, int(v) if v.isdigit() else v) for k, v in form.items()}


async def load(
    url: str,
    queries: list[str],
    clients: int,
    seconds: float,
    form: dict[str, str],
    ingest: Path | None,
    body: str = "form",
    server_pid: int | None = None,
) -> dict[str, Any]:
    """``clients`` back-to-back clients for ``seconds`` (and a concurrent ingest of ``ingest``);
    each search a form to ``POST /search`` (``body="form"``) or JSON to ``POST /query``. With
    ``server_pid`` (Linux) the row also says how much CPU the server and these clients used."""
    done: list[tuple[float, float, int]] = []
    # idle connections closed before uvicorn's 5 s keep-alive ends, so none is reused as it closes
    connector = aiohttp.TCPConnector(limit=clients + 2, keepalive_timeout=4)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, headers=HEADERS, connector=connector, timeout=timeout) as http:
        idle_by = time.perf_counter() + 300
        while (before := await batching(http))["admitted"]:
            if time.perf_counter() > idle_by:  # the previous row's searches must not load this one
                raise SystemExit("the server did not drain its queue in 300 s")
            await asyncio.sleep(0.2)
        ingest_span: list[float] = []

        async def run_ingest() -> None:
            t0 = time.perf_counter()
            body = {"path": ingest.name}  # type: ignore[union-attr]
            async with http.post("/ingest", data=body, timeout=aiohttp.ClientTimeout(total=1800)) as r:
                if r.status != 200:
                    raise SystemExit(f"ingest failed: {r.status} {await r.text()}")
            ingest_span.extend([t0, time.perf_counter()])

        task = asyncio.create_task(run_ingest()) if ingest is not None else None
        if task is not None:
            await asyncio.sleep(0.05)  # the ingest request is in before the searches start
        cpu0 = (cpu_seconds(server_pid), cpu_seconds(None)) if server_pid is not None else None
        start = time.perf_counter()
        deadline = start + seconds

        async def client(c: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                q = queries[(c * 31 + i * 7) % len(queries)]
                i += 1
                t0 = time.perf_counter()
                retry_after = "1"
                try:
                    fields = {"query": q, "k": "10", **form}
                    send = (
                        http.post("/query", json=json_body(fields))
                        if body == "json"
                        else http.post("/search", data=fields)
                    )
                    async with send as r:
                        await r.read()
                        status, retry_after = r.status, r.headers.get("Retry-After", "1")
                except (aiohttp.ClientError, TimeoutError):
                    status = -2
                done.append((t0, time.perf_counter(), status))
                if status == 503:  # refused: a well-behaved client waits as Retry-After says
                    wait = float(retry_after)
                    await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))

        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - start
        cpu = (cpu_seconds(server_pid) - cpu0[0], cpu_seconds(None) - cpu0[1]) if cpu0 else None
        if task is not None:
            await task
        after = await batching(http)
    ok = [(b - a) * 1000 for a, b, s in done if s == 200]
    overlap = sum(1 for a, b, _ in done if ingest_span and a < ingest_span[1] and b > ingest_span[0])

    def mean_batch(kind: str) -> float | None:
        batches = after[f"{kind}_batches"] - before[f"{kind}_batches"]
        return round((after[f"{kind}_calls"] - before[f"{kind}_calls"]) / batches, 2) if batches else None

    return {
        "searches": len(done),
        "qps": round(len(ok) / wall, 1),
        "p50_ms": round(pct(ok, 50), 1),
        "p95_ms": round(pct(ok, 95), 1),
        "status": {str(k): v for k, v in sorted(Counter(s for _, _, s in done).items())},
        "mean_encode_batch": mean_batch("encode"),
        "mean_rerank_batch": mean_batch("rerank"),
        "wall_s": round(wall, 2),
        # CPU over the row's wall time: where the cores went (the server's includes a concurrent
        # ingest; per search only without one). The clients' figure is this whole process.
        "cores_busy": round(sum(cpu) / wall, 2) if cpu else None,
        "server_cpu_ms": round(1000 * cpu[0] / len(ok), 2) if cpu and ok and ingest is None else None,
        "client_cpu_ms": round(1000 * cpu[1] / len(done), 2) if cpu and done else None,
        "during_ingest": overlap if ingest is not None else None,
        "ingest_s": round(ingest_span[1] - ingest_span[0], 1) if ingest_span else None,
    }


MEDIAN_FIELDS = (
    "qps", "p50_ms", "p95_ms", "mean_encode_batch", "mean_rerank_batch", "cores_busy", "server_cpu_ms",
    "client_cpu_ms",
)  # fmt: skip


def median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of the same (config, stage, clients): the median of each figure in
    :data:`MEDIAN_FIELDS` (None where a round has none), searches, status codes and wall time summed,
    and every round's q/s in ``qps_rounds``. A latency of NaN (a round without one successful search)
    is left out of its median. One round is returned as it is."""
    if len(rounds) == 1:
        return rounds[0]
    row = dict(rounds[0])
    for key in MEDIAN_FIELDS:
        values = [r[key] for r in rounds]
        finite = [v for v in values if v is not None and v == v]  # NaN: a round with no answer
        if None in values:
            row[key] = None
        elif finite:  # (every round NaN: the first round's NaN stays)
            row[key] = round(statistics.median(finite), 2)
    codes: Counter[str] = Counter()
    for r in rounds:
        codes.update(r["status"])
    row["status"] = dict(sorted(codes.items()))
    row["searches"] = sum(r["searches"] for r in rounds)
    row["wall_s"] = round(sum(r["wall_s"] for r in rounds), 2)
    row["qps_rounds"] = [r["qps"] for r in rounds]
    return row


def run_config(name: str, args: argparse.Namespace, tmp: Path, queries: list[str]) -> list[dict[str, Any]]:
    root = tmp / "root"
    server, url, log = start_server(tmp / "store", root, CONFIGS[name], args)
    rows: list[dict[str, Any]] = []
    try:
        r = httpx.post(f"{url}/ingest", data={"path": "base"}, headers=HEADERS, timeout=1800)
        r.raise_for_status()  # idempotent: the second config finds the base already stored
        for stage, form in STAGES.items():
            asyncio.run(load(url, queries, 1, 0.5, form, None, args.body))  # warm-up (first calls, caches)
            # --rounds: the client counts take turns (1, 8, 64, 1, 8, 64, ...), so that the host's
            # drift falls on every count alike; each row is the median of its rounds
            rounds: dict[int, list[dict[str, Any]]] = {c: [] for c in args.clients}
            for _ in range(args.rounds):
                for clients in args.clients:
                    row = asyncio.run(
                        load(url, queries, clients, args.seconds, form, None, args.body, server.pid)
                    )
                    rounds[clients].append(row)
                    print(json.dumps({"config": name, "stage": stage, "clients": clients, **row}), flush=True)
            for clients in args.clients:
                row = median_row(rounds[clients])
                rows.append({"config": name, "stage": stage, "clients": clients, "ingest": False, **row})
        for stage, form in STAGES.items():
            for clients in [c for c in args.clients if c > 1]:
                folder = root / f"more-{name}-{stage}-{clients}"
                row = asyncio.run(
                    load(url, queries, clients, args.seconds, form, folder, args.body, server.pid)
                )
                rows.append({"config": name, "stage": stage, "clients": clients, "ingest": True, **row})
                print(json.dumps(rows[-1]), flush=True)
    except BaseException:  # SystemExit too ("did not drain", "ingest failed")
        code = server.poll()
        print(
            f"row failed; server {'exited with ' + str(code) if code is not None else 'still running'}; "
            f"its stderr ends:\n{server_log_tail(log)}",
            file=sys.stderr,
            flush=True,
        )
        raise
    finally:
        stop_server(server)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="load per row")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of the client counts in turn per stage; rows are their medians (ingest rows: one)",
    )
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--base-docs", type=int, default=300, help="abstracts in the store before the rows")
    ap.add_argument("--ingest-docs", type=int, default=100, help="abstracts per ingest row")
    ap.add_argument("--model", default="lite", help="encoder spec for the server")
    ap.add_argument("--reranker", default="minilm", help="cross-encoder for the rerank rows")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (MMRAG_THREADS)")
    ap.add_argument(
        "--body",
        choices=["form", "json"],
        default="form",
        help="searches as POST /search forms or POST /query JSON",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "api_concurrency.json")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.clients = list(dict.fromkeys(args.clients))  # each count once: one row (and its rounds) each

    ingest_rows = len(args.configs) * len(STAGES) * len([c for c in args.clients if c > 1])
    with tempfile.TemporaryDirectory(prefix="mmrag-conc-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        _, more, queries = write_docs(root, args.base_docs, args.ingest_docs * ingest_rows)
        # one disjoint folder of abstracts per ingest row: every ingest writes new points
        files = sorted(more.iterdir())
        slots = [f"more-{n}-{s}-{c}" for n in args.configs for s in STAGES for c in args.clients if c > 1]
        for i, slot in enumerate(slots):
            (root / slot).mkdir()
            for f in files[i * args.ingest_docs : (i + 1) * args.ingest_docs]:
                f.rename(root / slot / f.name)
        rows = [row for name in args.configs for row in run_config(name, args, Path(tmp), queries)]

    out = {
        **run_record(),  # command, when, machine
        "commit": head_commit(),
        "rows": rows,
        "seconds_per_row": args.seconds,
        "rounds": args.rounds,
        "body": args.body,
        "base_docs": args.base_docs,
        "ingest_docs": args.ingest_docs,
        "model": args.model,
        "reranker": args.reranker,
        "torch_threads": args.threads,
        "server_stack": server_stack(),
        "load_generator": f"aiohttp {aiohttp.__version__}",
        "targets": targets(rows, os.cpu_count()),  # the count run_record()'s machine holds
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["targets"], indent=2))


def server_stack() -> dict[str, str]:
    """The event loop and HTTP parser uvicorn picks ("auto") in the server, which runs this interpreter."""
    from importlib.util import find_spec

    return {
        "loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "http": "httptools" if find_spec("httptools") else "h11",
    }


if __name__ == "__main__":
    main()
