"""Reranker checkpoints of different depth side by side in one run (issue #16: hybrid + rerank@20 at
p50 <= 150 ms on 1 thread, with the reranker's nDCG@10 held within 0.005).

Quality, per checkpoint (`mmrag train-reranker [--layers N --teacher CKPT]`), on the SciFact val fold:
nDCG@10 of hybrid + rerank@pool fused with the checkpoint's own weight (learned on this fold by
train-reranker), cross-fitted (each half of the fold fused with the weight learned on the other half),
and rerank alone. The scores come at the precision users get (`MMRAG_RERANK_PRECISION`, default auto:
bf16 on AMX / AVX512-BF16 CPUs, else fp32).

Latency, one query at a time on `--threads` (1): hybrid + rerank@pool (the smallest pool) end to end
through `Retriever.search`, tokenization cache cleared before each query. The checkpoints are timed in
`--rounds` interleaved rounds: for every latency query, each checkpoint in turn (the order rotates by
round), then LangChain's `ContextualCompressionRetriever` with the same checkpoint
(`HuggingFaceCrossEncoder`, as it ships), so the host's drift hits all of them alike; p50/p95 over every
round. Single runs on a shared 2-core host move by 15-25%, which is why this is one interleaved run and
not one `bench_rerank.py` run per checkpoint.

Usage: python benchmarks/bench_rerank_depth.py --reranker CKPT [CKPT ...] [--rounds 5]
       [--latency-queries 15] [--pools 20 50] [--no-langchain]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_rerank import add_scifact_args, crossfit_runs, fused_runs, langchain_pipeline, load_val_fold
from machine import machine_info
from timing import pct

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "rerank_depth.json"


def labels_for(paths: list[str]) -> list[str]:
    """A short unique label per checkpoint: its folder name, ``#i`` added where two share one."""
    names = [Path(p).name or p for p in paths]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reranker", nargs="+", required=True, help="checkpoint folders (not a folder: MiniLM)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    add_scifact_args(ap, pools=[20, 50], out=OUT)
    args = ap.parse_args()
    t_start = time.perf_counter()
    ds, qids, qrels, texts, encoder = load_val_fold(args)
    from mmrag.eval.corpus import index_corpus, ranking_metrics
    from mmrag.rerank import CrossEncoderReranker
    from mmrag.rerank.fusion import ScoreFusion
    from mmrag.retriever import Retriever
    from mmrag.store import QdrantStore

    labels = labels_for(args.reranker)
    p0, deepest = min(args.pools), max(args.pools)
    result: dict[str, Any] = {
        "queries": len(qids),
        "corpus": len(ds.corpus),
        "threads": args.threads,
        "depth": args.depth,
        "pool": p0,
        "rounds": args.rounds,
        "latency_queries": min(args.latency_queries, len(qids)),
        "encoder": encoder.id,
        "machine": machine_info(),
        "rerankers": {},
    }
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-depth-") as tmp, QdrantStore.open(tmp) as store:
        index_corpus(store, encoder, ds, args.cache)
        first = Retriever(
            encoder, store, pool=args.depth, hybrid=True, dense_pool=args.depth, sparse_pool=args.depth
        )
        hybrid = first.search_batch(texts, k=args.depth, hybrid=True)
        result["hybrid"] = ranking_metrics(qrels, dict(zip(qids, hybrid, strict=True)))
        models: dict[str, Any] = {}
        for label, path in zip(labels, args.reranker, strict=True):
            folder = path if Path(path).is_dir() else None
            if folder is None:
                print(f"{path} is not a folder: offline MiniLM with an untrained head", file=sys.stderr)
            rr = CrossEncoderReranker(folder, threads=args.threads)
            models[label] = rr
            scores = [
                rr.score(q, [h.chunk.text or "" for h in hits[:deepest]])
                for q, hits in zip(texts, hybrid, strict=True)
            ]
            quality, weights = {}, {}
            for pool in args.pools:
                quality[f"+rerank@{pool}"] = ranking_metrics(
                    qrels, fused_runs(qids, hybrid, scores, pool, rr.fusion)
                )
                if len(qids) >= 4:
                    runs, weights[str(pool)] = crossfit_runs(qids, qrels, hybrid, scores, pool)
                    quality[f"+rerank@{pool}_crossfit"] = ranking_metrics(qrels, runs)
                alone = ScoreFusion({}, default=1.0)
                quality[f"rerank_only@{pool}"] = ranking_metrics(
                    qrels, fused_runs(qids, hybrid, scores, pool, alone)
                )
            result["rerankers"][label] = {
                "path": folder,
                "layers": rr.model.config.num_hidden_layers,
                "precision": rr.precision,
                "max_length": rr.max_length,
                "fusion_weight_text": rr.fusion.weight("text"),
                "crossfit_weights": weights,
                "trained": rr.meta.get("train"),
                "val": rr.meta.get("val"),
                "quality": quality,
            }
            print(
                f"{label}: " + ", ".join(f"{k} {m['ndcg@10']:.4f}" for k, m in quality.items()),
                file=sys.stderr,
            )

        e2e_q = texts[: args.latency_queries]
        ours = {
            label: Retriever(encoder, store, pool=p0, hybrid=True, reranker=m) for label, m in models.items()
        }
        theirs: dict[str, Any] = {}
        if not args.no_langchain:
            plain = Retriever(encoder, store, pool=p0, hybrid=True)
            for label, m in models.items():
                entry = result["rerankers"][label]
                if entry["path"] is not None:
                    lc = langchain_pipeline(plain, entry["path"], m.max_length, p0, args.threads)
                    if lc is not None:
                        theirs[label] = lc
        for label in models:  # warm-up: first calls allocate
            ours[label].search(e2e_q[0], k=10)
            if label in theirs:
                theirs[label].invoke(e2e_q[0])
        times: dict[str, list[float]] = {label: [] for label in models}
        lc_times: dict[str, list[float]] = {label: [] for label in theirs}
        for r in range(args.rounds):
            order = labels[r % len(labels) :] + labels[: r % len(labels)]
            for q in e2e_q:
                for label in order:
                    models[label]._cache.clear()
                    t = time.perf_counter()
                    ours[label].search(q, k=10)
                    times[label].append(time.perf_counter() - t)
                    if label in theirs:
                        t = time.perf_counter()
                        theirs[label].invoke(q)
                        lc_times[label].append(time.perf_counter() - t)
            print(f"latency round {r + 1}/{args.rounds} done", file=sys.stderr)
        for label in models:
            entry = result["rerankers"][label]
            p50 = statistics.median(times[label])
            entry[f"end_to_end_pool{p0}_p50_ms"] = 1000 * p50
            entry[f"end_to_end_pool{p0}_p95_ms"] = 1000 * pct(times[label], 95)
            entry["rounds_p50_ms"] = [
                1000 * statistics.median(times[label][i * len(e2e_q) : (i + 1) * len(e2e_q)])
                for i in range(args.rounds)
            ]
            if label in lc_times:
                lc_p50 = statistics.median(lc_times[label])
                entry["langchain_p50_ms"] = 1000 * lc_p50
                entry["ratio_langchain"] = p50 / lc_p50
    result["seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for label, e in result["rerankers"].items():
        lc = f", {e['ratio_langchain']:.2f}x LangChain" if "ratio_langchain" in e else ""
        print(
            f"{label}: {e['layers']} layers {e['precision']}, hybrid + rerank@{p0} p50 "
            f"{e[f'end_to_end_pool{p0}_p50_ms']:.0f} ms p95 {e[f'end_to_end_pool{p0}_p95_ms']:.0f} ms{lc}; "
            + ", ".join(f"{k} {m['ndcg@10']:.4f}" for k, m in e["quality"].items())
        )


if __name__ == "__main__":
    main()
