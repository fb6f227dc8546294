"""Query latency and memory of the embedded default, as ratios against the foundation targets.

Targets (issue "Foundation"): a text query on the embedded default, ANN only, 10k points,
p95 <= 50 ms including query encoding on 2 cores; peak RSS of `mmrag search` with `lite` <= 1.5 GB.

Points: the real `lite` embeddings of the SciFact corpus (5,183 abstracts), topped up to the target
size with perturbed copies (each a copy of a real vector plus Gaussian noise, renormalised, cosine
~0.9 to its original) so the index has the geometry of real text. Queries: real SciFact queries.
Embeddings are cached in .cache/bench/ (keyed by encoder id) so reruns skip the encoding.

Usage: python benchmarks/bench_query.py [--points 10000] [--queries 200] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from timing import pct

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"
P95_LIMIT_MS = 50.0
RSS_LIMIT_MB = 1500.0


def corpus_embeddings(encoder: object, n_docs: int | None) -> tuple[np.ndarray, list[str]]:
    from mmrag.eval.datasets import BeirDataset

    ds = BeirDataset.load(DATA / "scifact", "train")
    ids = list(ds.corpus)[:n_docs]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{encoder.id}-scifact-{len(ids)}.npy"  # type: ignore[attr-defined]
    if path.exists():
        return np.load(path), ids
    t = time.perf_counter()
    vecs = encoder.encode_text([ds.doc_text(d) for d in ids], batch_size=64)  # type: ignore[attr-defined]
    print(f"encoded {len(ids)} docs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    np.save(path, vecs)
    return vecs, ids


def grow(vecs: np.ndarray, target: int, seed: int = 0) -> np.ndarray:
    """Perturbed copies of real vectors up to ``target`` rows (cosine ~0.9 to the original)."""
    if target <= len(vecs):
        return vecs[:target]
    rng = np.random.default_rng(seed)
    extra = vecs[rng.integers(0, len(vecs), target - len(vecs))]
    sigma = 0.48 / np.sqrt(vecs.shape[1])
    extra = extra + rng.normal(0, sigma, extra.shape).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.concatenate([vecs, extra]).astype(np.float32)


def build_store(directory: str, encoder: object, vecs: np.ndarray) -> int:
    """Write the points, build the index; returns how many vectors are in HNSW (vs scanned)."""
    from mmrag.encoders.base import vector_spec
    from mmrag.store import QdrantStore
    from mmrag.types import Chunk

    with QdrantStore.open(directory) as store:
        name = store.ensure_vector(vector_spec(encoder))  # type: ignore[arg-type]
        chunks = [
            Chunk(
                id=f"00000000-0000-4000-8000-{i:012d}",
                modality="text",
                source=f"doc{i}",
                text=f"doc {i}",
                image=None,
                metadata={},
            )
            for i in range(len(vecs))
        ]
        for s in range(0, len(chunks), 1024):
            store.upsert_chunks(chunks[s : s + 1024], vecs[s : s + 1024], name)
        store.optimize()
        return int(store.stats()["indexed_vectors"])


def latency(directory: str, encoder: object, queries: list[str], hnsw_ef: int | None) -> dict[str, object]:
    from mmrag.retriever import Retriever
    from mmrag.store import QdrantStore, SearchOptions

    with QdrantStore.open(directory) as store:
        r = Retriever(encoder, store, pool=10, hnsw_ef=hnsw_ef)  # type: ignore[arg-type]
        for q in queries[:10]:
            r.search(q, k=10)  # warm-up
        enc, ann, tot = [], [], []
        recalls = []
        for q in queries:
            res = r.search_with_timings(q, k=10)
            enc.append(res.timings["encode"] * 1000)
            ann.append(res.timings["ann"] * 1000)
            tot.append(res.timings["total"] * 1000)
        qv = encoder.encode_text(queries)  # type: ignore[attr-defined]
        approx = store.search(r.vector, qv, 10)
        exact = store.search(r.vector, qv, 10, options=SearchOptions(exact=True))
        for a, e in zip(approx, exact, strict=True):
            recalls.append(len({c.id for c, _ in a} & {c.id for c, _ in e}) / max(1, len(e)))

    return {
        "encode_p50": pct(enc, 50),
        "encode_p95": pct(enc, 95),
        "ann_p50": pct(ann, 50),
        "ann_p95": pct(ann, 95),
        "total_p50": pct(tot, 50),
        "total_p95": pct(tot, 95),
        "recall@10": float(np.mean(recalls)),
    }


_RSS_PROBE = """
import contextlib, io, sys
from mmrag.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["search", "dense passage retrieval", "--store", sys.argv[1], "--quiet", "--json"])
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print(hwm)
sys.exit(code)
"""


def search_rss_mb(directory: str) -> float:
    """Peak RSS of a real `mmrag search` run (model load + query) in a fresh process.

    Read from the child's own VmHWM: getrusage(RUSAGE_CHILDREN) would also count the pages a
    forked child shares with this (large) parent before it execs.
    """
    # the full encoder (model load + query), not a text tower stored for fast queries by an earlier
    # run (bench_cli_start.py measures that one)
    env = {**os.environ, "MMRAG_QUERY_CACHE": "off"}
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, directory], check=True, capture_output=True, text=True, env=env
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hnsw-ef", type=int, default=None)
    ap.add_argument("--docs", type=int, default=None, help="real docs to encode (default: all 5,183)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "query.json")
    args = ap.parse_args()

    from mmrag.encoders import load_encoder
    from mmrag.eval.datasets import BeirDataset

    encoder = load_encoder("lite", threads=args.threads)
    vecs, _ = corpus_embeddings(encoder, args.docs)
    points = grow(vecs, args.points)
    queries = list(BeirDataset.load(DATA / "scifact", "train").queries.values())[: args.queries]
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-") as tmp:
        indexed = build_store(tmp, encoder, points)
        runs = [latency(tmp, encoder, queries, args.hnsw_ef) for _ in range(args.repeats)]
        rss = [search_rss_mb(tmp) for _ in range(args.repeats)]
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor(),
        },
        "points": len(points),
        "real_points": len(vecs),
        "queries": len(queries),
        "repeats": args.repeats,
        "threads": args.threads,
        "hnsw_ef": args.hnsw_ef,
        "indexed_vectors": indexed,
        "median_of_runs_ms": med,
        "p95_total_ratio_to_50ms": med["total_p95"] / P95_LIMIT_MS,
        "search_peak_rss_mb": float(np.median(rss)),
        "rss_ratio_to_1500mb": float(np.median(rss)) / RSS_LIMIT_MB,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
