"""Query latency, stage by stage, against collection size: 10k, 100k and 1M points (issue #8).

Points: the real `lite` embeddings of the 5,183 SciFact abstracts (text) and of the 1,000 Flickr8k dev
images (image), topped up to each size with perturbed copies: a copy of a random real vector plus
Gaussian noise, renormalised (cosine ~0.9 to its original), carrying its original's modality and text,
so the index has the geometry of real embeddings and the reranker reads real abstracts. Every size is
a fresh store built the way `mmrag ingest` builds one (payload, BM25 sparse vector, HNSW after
`optimize()`).

Backends: the embedded default (Qdrant Edge, HNSW) and qdrant-client's local `:memory:` mode (the
peer: what `QdrantClient(":memory:")` users get; it scans every vector), in the same run.

Per size and backend:
- build: write seconds and index (HNSW) seconds;
- text queries (real SciFact queries), stage by stage: encode, ANN, BM25 (hybrid), rerank (pool 20,
  the trained cross-encoder when `checkpoints/reranker-scifact` exists), total;
- image queries (Flickr8k train images, not in the store), stage by stage: encode (load + preprocess +
  image tower), ANN;
- ANN recall@10 against exact search on the same store, for each ``hnsw_ef`` in ``--efs``, with its
  ANN latency.

Every latency is a median over ``--repeats`` rounds of per-query p50/p95; ratios (Edge / :memory:, and
p95 total / the 50 ms target for a text query without rerank) come from the same run.

Usage: python benchmarks/bench_scale.py [--sizes 10000 100000 1000000] [--backends edge memory]
       [--queries 100] [--image-queries 50] [--rerank-queries 20] [--efs 32 64 128 256] [--repeats 3]
       [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"
OUT = REPO / "benchmarks" / "results" / "scale.json"
RERANKER = REPO / "checkpoints" / "reranker-scifact"
P95_LIMIT_MS = 50.0
BATCH = 2048


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cached(name: str, make: Callable[[], np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.npy"
    if path.exists():
        loaded: np.ndarray[Any, Any] = np.load(path)
        return loaded
    t = time.perf_counter()
    vecs = make()
    log(f"encoded {name} in {time.perf_counter() - t:.0f} s")
    np.save(path, vecs)
    return vecs


class Base:
    """The real vectors, their modality and text; ``point(i)`` is the i-th point of any size."""

    def __init__(self, encoder: Any, n_docs: int | None, n_images: int | None) -> None:
        from mmrag.eval.datasets import BeirDataset

        ds = BeirDataset.load(DATA / "scifact", "train")
        doc_ids = list(ds.corpus)[:n_docs]
        self.texts = [ds.doc_text(d) for d in doc_ids]
        text_vecs = cached(
            f"{encoder.id}-scifact-{len(doc_ids)}",
            lambda: encoder.encode_text(self.texts, batch_size=64),
        )
        dev = (DATA / "flickr8k" / "splits" / "dev.txt").read_text().split()[:n_images]
        self.image_paths = [str(DATA / "flickr8k" / "images" / name) for name in dev]
        image_vecs = cached(
            f"{encoder.id}-flickr8k-dev-{len(dev)}",
            lambda: encoder.encode_image(self.image_paths, batch_size=32),
        )
        self.vecs = np.concatenate([text_vecs, image_vecs]).astype(np.float32)
        self.n_text = len(text_vecs)
        self.queries = list(ds.queries.values())
        train = (DATA / "flickr8k" / "splits" / "train.txt").read_text().split()
        self.query_images = [str(DATA / "flickr8k" / "images" / name) for name in train]

    def batches(self, size: int, seed: int = 0) -> Iterator[tuple[list[Any], np.ndarray[Any, Any]]]:
        """``size`` points as (chunks, vectors) batches: the real ones, then perturbed copies."""
        from mmrag.types import Chunk

        rng = np.random.default_rng(seed)
        n_real = len(self.vecs)
        sigma = 0.48 / np.sqrt(self.vecs.shape[1])
        for start in range(0, size, BATCH):
            idx = np.arange(start, min(size, start + BATCH))
            src = np.where(idx < n_real, idx % n_real, rng.integers(0, n_real, len(idx)))
            vecs = self.vecs[src].copy()
            copies = idx >= n_real
            if copies.any():
                vecs[copies] += rng.normal(0, sigma, (int(copies.sum()), vecs.shape[1])).astype(np.float32)
                vecs[copies] /= np.linalg.norm(vecs[copies], axis=1, keepdims=True)
            chunks = []
            for i, s in zip(idx.tolist(), src.tolist(), strict=True):
                text = s < self.n_text
                chunks.append(
                    Chunk(
                        id=f"00000000-0000-4000-8000-{i:012d}",
                        modality="text" if text else "image",
                        source=f"bench/{s}",
                        text=self.texts[s] if text else None,
                        image=None if text else self.image_paths[s - self.n_text],
                        metadata={"copy_of": s} if i >= n_real else {},
                    )
                )
            yield chunks, vecs


def build(store: Any, encoder: Any, base: Base, size: int) -> dict[str, Any]:
    """Write ``size`` points (payload, dense and BM25 vectors), then build the index."""
    t0 = time.perf_counter()
    from mmrag.encoders.base import vector_spec

    name = store.ensure_vector(vector_spec(encoder))
    for chunks, vecs in base.batches(size):
        store.upsert_chunks(chunks, vecs, name, present=())
    t1 = time.perf_counter()
    store.optimize()
    t2 = time.perf_counter()
    return {
        "write_s": t1 - t0,
        "index_s": t2 - t1,
        "indexed_vectors": int(store.backend.indexed_vectors()),
        "points": int(store.count()),
    }


def pcts(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95))}


def stage_latency(retriever: Any, base: Base, args: argparse.Namespace, ef: int | None) -> dict[str, Any]:
    """One round of per-query stage timings (ms): text dense, text hybrid + rerank, image."""
    from mmrag.store import SearchOptions

    retriever.options = SearchOptions(hnsw_ef=ef)
    out: dict[str, Any] = {}
    text: dict[str, list[float]] = {}
    for q in base.queries[: args.queries]:
        res = retriever.search_with_timings(q, k=10, pool=10, hybrid=False, rerank=False)
        for key, v in res.timings.items():
            text.setdefault(key, []).append(v)
    out["text"] = {key: pcts(v) for key, v in text.items()}
    hybrid: dict[str, list[float]] = {}
    rerank = retriever.reranker is not None
    for q in base.queries[: args.rerank_queries]:
        res = retriever.search_with_timings(q, k=10, pool=args.pool, hybrid=True, rerank=rerank)
        for key, v in res.timings.items():
            hybrid.setdefault(key, []).append(v)
    out["text_hybrid_rerank" if rerank else "text_hybrid"] = {key: pcts(v) for key, v in hybrid.items()}
    image: dict[str, list[float]] = {}
    for path in base.query_images[: args.image_queries]:
        res = retriever.search_with_timings(image=path, k=10, pool=10)
        for key, v in res.timings.items():
            image.setdefault(key, []).append(v)
    out["image"] = {key: pcts(v) for key, v in image.items()}
    return out


def ef_sweep(
    store: Any, vector: str, qvecs: np.ndarray[Any, Any], efs: Sequence[int | None]
) -> dict[str, Any]:
    """Per ``hnsw_ef``: ANN recall@10 against exact search, the score ratio (sum of the ANN top-10
    cosines / sum of the exact top-10's: how much worse the neighbours found are, 1 = as good), and
    per-query ANN latency."""
    from mmrag.store import SearchOptions

    exact = store.search(vector, qvecs, 10, options=SearchOptions(exact=True))
    truth = [{c.id for c, _ in row} for row in exact]
    best = [sum(score for _, score in row) for row in exact]
    out: dict[str, Any] = {}
    for ef in efs:
        opts = SearchOptions(hnsw_ef=ef)
        times, recalls, ratios = [], [], []
        for q, t, b in zip(qvecs, truth, best, strict=True):
            s = time.perf_counter()
            row = store.search(vector, q[None, :], 10, options=opts)[0]
            times.append(time.perf_counter() - s)
            recalls.append(len({c.id for c, _ in row} & t) / max(1, len(t)))
            ratios.append(sum(score for _, score in row) / b if b else 1.0)
        out["default" if ef is None else str(ef)] = {
            "recall@10": float(np.mean(recalls)),
            "score_ratio": float(np.mean(ratios)),
            **pcts(times),
        }
    return out


def median_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median of nested dicts of numbers."""
    first = rounds[0]
    if isinstance(first, dict):
        return {k: median_rounds([r[k] for r in rounds]) for k in first}
    return float(np.median(rounds))


def measure(store: Any, encoder: Any, reranker: Any, base: Base, args: argparse.Namespace) -> dict[str, Any]:
    from mmrag.retriever import Retriever

    retriever = Retriever(encoder, store, pool=10, reranker=reranker)
    qvecs = np.concatenate(
        [
            encoder.encode_text(base.queries[: args.queries]),
            encoder.encode_image(base.query_images[: args.image_queries]),
        ]
    )
    for q in base.queries[:5]:  # warm-up: first-query costs are not latency
        retriever.search(q, k=10, hybrid=True, rerank=reranker is not None)
    retriever.search(image=base.query_images[0], k=10)
    rounds = [stage_latency(retriever, base, args, args.ef) for _ in range(args.repeats)]
    # :memory: scans every vector whatever hnsw_ef says: one sweep point is its whole curve.
    efs = [None] if store.location.startswith(":memory:") else args.efs
    sweeps = [ef_sweep(store, retriever.vector, qvecs, efs) for _ in range(args.repeats)]
    return {"stages": median_rounds(rounds), "ef": median_rounds(sweeps)}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith("VmRSS"))
    return int(line.split()[1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--backends", nargs="+", default=["edge", "memory"], choices=["edge", "memory"])
    ap.add_argument(
        "--memory-max",
        type=int,
        default=100_000,
        help="largest size to try on :memory: (it scans every vector: ~0.3 s per query at 100k, and "
        "~3 s at 1M, so the full query set would take hours there)",
    )
    ap.add_argument("--queries", type=int, default=100, help="text queries (dense stages)")
    ap.add_argument("--rerank-queries", type=int, default=20, help="text queries through hybrid + rerank")
    ap.add_argument("--image-queries", type=int, default=50)
    ap.add_argument("--pool", type=int, default=20, help="rerank pool")
    ap.add_argument(
        "--efs",
        type=lambda s: None if s == "default" else int(s),
        nargs="+",
        default=[None, 32, 64, 128, 256],
        help="hnsw_ef values for the recall sweep",
    )
    ap.add_argument("--ef", type=int, default=None, help="hnsw_ef for the stage timings (default: Qdrant's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="lite")
    ap.add_argument("--reranker", type=Path, default=RERANKER)
    ap.add_argument("--docs", type=int, default=None, help="real abstracts (default: all 5,183)")
    ap.add_argument("--images", type=int, default=None, help="real images (default: all 1,000 dev)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the Edge stores go (default: a temp dir)"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and few queries: checks the script runs")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs already in --out at sizes not measured now (rerun some sizes only)",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.queries, args.rerank_queries, args.image_queries = [200, 400], 4, 2, 3
        args.repeats, args.docs, args.images, args.efs = 1, 100, 20, [None, 16]

    from mmrag.encoders import load_encoder
    from mmrag.encoders.lanes import FORWARDS
    from mmrag.store import QdrantStore

    encoder = load_encoder(args.model, threads=args.threads)
    FORWARDS.pin(1)  # per-query latency at --threads: a lone rerank pool is not split over other cores
    reranker = None
    if args.reranker.exists():
        from mmrag.rerank import CrossEncoderReranker

        reranker = CrossEncoderReranker(str(args.reranker), int8=True)
    else:
        log(f"no reranker at {args.reranker}: the rerank stage is not timed (mmrag train-reranker)")
    base = Base(encoder, args.docs, args.images)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "encoder": encoder.id,
        "dim": int(base.vecs.shape[1]),
        "real_points": {"text": base.n_text, "image": len(base.vecs) - base.n_text},
        "reranker": None if reranker is None else {"path": str(args.reranker), "int8": True},
        "runs": [],
    }
    kept: list[dict[str, Any]] = []
    if args.merge and args.out.exists():
        kept = [r for r in json.loads(args.out.read_text())["runs"] if r["size"] not in args.sizes]
        result["args"]["sizes"] = sorted({*args.sizes, *(r["size"] for r in kept)})
    result["runs"] = kept
    workdir = Path(tempfile.mkdtemp(prefix="mmrag-scale-", dir=args.workdir))
    try:
        for size in args.sizes:
            for backend in args.backends:
                if backend == "memory" and size > args.memory_max:
                    log(f"skip :memory: at {size} (> --memory-max {args.memory_max})")
                    continue
                location = ":memory:" if backend == "memory" else str(workdir / f"edge-{size}")
                log(f"{backend} {size}: building")
                rss0 = rss_mb()
                with QdrantStore.open(location) as store:
                    built = build(store, encoder, base, size)
                    log(f"{backend} {size}: built {built}; measuring")
                    run = {
                        "size": size,
                        "backend": backend,
                        "started": time.strftime("%Y-%m-%d %H:%M"),
                        **built,
                    }
                    run.update(measure(store, encoder, reranker, base, args))
                run["rss_mb_after"] = rss_mb()
                run["rss_mb_before"] = rss0
                result["runs"].append(run)
                log(f"{backend} {size}: {json.dumps(run['stages']['text'])}")
                if backend == "edge":
                    shutil.rmtree(location, ignore_errors=True)
                gc.collect()
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2))  # partial results survive a stop
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
