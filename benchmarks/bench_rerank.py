"""Hybrid first stage and cross-encoder reranking on the SciFact val fold (issue #4's closing numbers).

Quality (nDCG@10, Recall@100 on the held-out val fold of SciFact train queries): BM25, dense (`lite`
= MiniLM), hybrid (the default DBSF fusion, 100 candidates per branch), hybrid + rerank of the top
20/50/100 with the trained cross-encoder fused with the first stage (weight learned on the same val fold by
`mmrag train-reranker`, so this is the fold it was tuned on; "_crossfit" rows instead fuse each half of
the fold with the weight learned on the other half), rerank alone, and bf16 / int8 against fp32.

Speed: rerank latency per query (p50/p95) at pool 20 and 50, fp32 vs bf16 vs int8, tokenization cache cleared
before every query (a cold pool); the cross-encoder's achieved GFLOP/s (FLOPs counted from the padded
tokens: 2 x Linear parameters per token + the attention products) against a large fp32 torch matmul
timed in the same run with the same threads.

Usage: python benchmarks/bench_rerank.py [--reranker checkpoints/reranker-scifact] [--threads 1]
       [--queries N] [--latency-queries 15] [--pools 20 50 100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info
from timing import pct

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"
OUT = REPO / "benchmarks" / "results" / "rerank.json"


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 matrix-multiply rate (best of ``repeats``) with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def model_flops(fp32_model: Any, padded_tokens: int, attention_cells: int) -> float:
    """FLOPs of forward passes over ``padded_tokens`` (embedding lookups not counted): 2 per Linear
    weight per token, plus QK^T and AV (4 x hidden per attention cell per layer)."""
    import torch

    cfg = fp32_model.config
    linear = sum(m.weight.numel() for m in fp32_model.modules() if isinstance(m, torch.nn.Linear))
    return float(
        2.0 * linear * padded_tokens + 4.0 * cfg.num_hidden_layers * cfg.hidden_size * attention_cells
    )


def fused_runs(
    qids: list[str], first: list[list[Any]], scores: list[Any], pool: int, fusion: Any
) -> dict[str, list[Any]]:
    """Each query's first-stage hits with the top ``pool`` re-ordered by ``fusion`` of the first-stage
    and reranker ``scores`` (ties by first-stage rank), the tail of the pool kept behind its head."""
    from mmrag.rerank.fusion import order_by

    out = {}
    for q, hits, s in zip(qids, first, scores, strict=True):
        head = hits[:pool]
        out[q] = order_by(head, fusion.combine(head, [float(x) for x in s[:pool]])) + list(hits[pool:])
    return out


def crossfit_runs(
    qids: list[str], qrels: dict[str, dict[str, int]], first: list[list[Any]], scores: list[Any], pool: int
) -> tuple[dict[str, list[Any]], list[float]]:
    """Two-fold cross-fitting (mmrag.rerank.fusion.cross_fit): each half of the queries is fused with
    the weight learned on the other half, the tail of each pool kept behind its head."""
    from mmrag.eval.corpus import ranking_metrics
    from mmrag.rerank.fusion import cross_fit

    def ndcg(ordered: list[list[Any]], idx: list[int]) -> float:
        sub_q = {qids[i]: qrels[qids[i]] for i in idx}
        return ranking_metrics(sub_q, dict(zip(sub_q, ordered, strict=True)), ks=(10,))["ndcg@10"]

    heads, weights = cross_fit(
        [h[:pool] for h in first], [[float(x) for x in s[:pool]] for s in scores], ndcg
    )
    runs = {q: head + list(hits[pool:]) for q, head, hits in zip(qids, heads, first, strict=True)}
    return runs, weights


def langchain_pipeline(
    retriever: Any, reranker_path: str, max_length: int, pool: int, threads: int
) -> Any | None:
    """The same first stage wrapped as a LangChain retriever, reranked by LangChain's
    ``ContextualCompressionRetriever`` + ``CrossEncoderReranker(HuggingFaceCrossEncoder)`` with the same
    model folder and max_length (top 10 kept); None, with a message, when LangChain is not installed."""
    try:
        from langchain_classic.retrievers import ContextualCompressionRetriever
        from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder
        from langchain_core.callbacks import CallbackManagerForRetrieverRun
        from langchain_core.documents import Document
        from langchain_core.retrievers import BaseRetriever
    except ImportError as exc:
        print(f"LangChain comparison skipped: {exc} (pip install langchain-classic langchain-community)")
        return None
    import torch

    class MmragFirstStage(BaseRetriever):
        inner: Any

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            hits = self.inner.search(query, k=pool, pool=pool, hybrid=True, rerank=False)
            return [Document(page_content=h.chunk.text or "", metadata=dict(h.chunk.metadata)) for h in hits]

    ce = HuggingFaceCrossEncoder(
        model_name=reranker_path, model_kwargs={"max_length": max_length, "device": "cpu"}
    )
    torch.set_num_threads(threads)
    return ContextualCompressionRetriever(
        base_compressor=CrossEncoderReranker(model=ce, top_n=10),
        base_retriever=MmragFirstStage(inner=retriever),
    )


def langchain_compare(
    retriever: Any, reranker_path: str, max_length: int, texts: list[str], pool: int, threads: int
) -> tuple[list[list[str]], list[float]] | None:
    """:func:`langchain_pipeline` over ``texts``: each query's top-10 doc ids and per-query seconds."""
    lc = langchain_pipeline(retriever, reranker_path, max_length, pool, threads)
    if lc is None:
        return None
    tops, times = [], []
    for q in texts:
        t = time.perf_counter()
        docs = lc.invoke(q)
        times.append(time.perf_counter() - t)
        tops.append([str(d.metadata["doc_id"]) for d in docs])
    return tops, times


def add_scifact_args(ap: argparse.ArgumentParser, pools: list[int], out: Path) -> None:
    """The options of the SciFact val-fold rerank benchmarks (this one and bench_rerank_depth.py)."""
    ap.add_argument("--model", default="lite", help="dense encoder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--queries", type=int, help="first N val queries (smoke runs)")
    ap.add_argument("--docs", type=int, help="first N corpus docs (smoke runs; relevant docs may be missing)")
    ap.add_argument("--latency-queries", type=int, default=15)
    ap.add_argument("--pools", type=int, nargs="+", default=pools)
    ap.add_argument("--depth", type=int, default=100, help="candidates per hybrid branch")
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--no-langchain", action="store_true", help="skip the LangChain comparison")
    ap.add_argument("--out", type=Path, default=out)


def load_val_fold(
    args: argparse.Namespace,
) -> tuple[Any, list[str], dict[str, dict[str, int]], list[str], Any]:
    """Offline hub, ``args.threads`` torch threads, then the SciFact val fold (``args.queries`` /
    ``args.docs`` slice): the dataset, its query ids, their qrels and texts, and the dense encoder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from mmrag.encoders import load_encoder
    from mmrag.encoders.lanes import FORWARDS
    from mmrag.eval.datasets import scifact_val_slice

    FORWARDS.pin(1)  # "N threads": one forward pass at a time (a lone pool is not split over cores)

    ds, qids = scifact_val_slice(DATA, args.queries, args.docs)
    qrels = {q: dict(ds.qrels[q]) for q in qids}
    return ds, qids, qrels, [ds.queries[q] for q in qids], load_encoder(args.model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reranker", default=str(REPO / "checkpoints" / "reranker-scifact"))
    add_scifact_args(ap, pools=[20, 50, 100], out=OUT)
    args = ap.parse_args()
    t_start = time.perf_counter()
    ds, qids, qrels, texts, encoder = load_val_fold(args)
    from mmrag.eval.corpus import index_corpus, ranking_metrics
    from mmrag.eval.metrics import evaluate
    from mmrag.rerank import CrossEncoderReranker
    from mmrag.rerank.fusion import ScoreFusion
    from mmrag.retriever import Retriever
    from mmrag.store import QdrantStore
    from mmrag.types import Hit

    reranker_path = args.reranker if Path(args.reranker).is_dir() else None
    if reranker_path is None:
        print(f"no reranker at {args.reranker}: offline MiniLM with an untrained head", file=sys.stderr)
    result: dict[str, Any] = {
        "queries": len(qids),
        "corpus": len(ds.corpus),
        "threads": args.threads,
        "depth": args.depth,
        "encoder": encoder.id,
        "machine": machine_info(),
    }
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-rr-") as tmp, QdrantStore.open(tmp) as store:
        index_corpus(store, encoder, ds, args.cache)
        r = Retriever(
            encoder, store, pool=args.depth, hybrid=True, dense_pool=args.depth, sparse_pool=args.depth
        )
        quality: dict[str, dict[str, float]] = {}
        bm25 = store.search_sparse([store.sparse_encoder.embed_query(t) for t in texts], args.depth)
        quality["bm25"] = ranking_metrics(
            qrels,
            {
                q: [Hit(c, None, s, None, None, i + 1, i + 1) for i, (c, s) in enumerate(res)]
                for q, res in zip(qids, bm25, strict=True)
            },
        )
        dense = r.search_batch(texts, k=args.depth, hybrid=False)
        quality["dense"] = ranking_metrics(qrels, dict(zip(qids, dense, strict=True)))
        hybrid = r.search_batch(texts, k=args.depth, hybrid=True)
        quality["hybrid"] = ranking_metrics(qrels, dict(zip(qids, hybrid, strict=True)))
        result["fusion"] = r.fusion  # the first stage's fusion (older results: RRF, under "hybrid_rrf")

        # fp32 scores of the deepest pool once; shallower pools are its prefixes
        fp32 = CrossEncoderReranker(reranker_path, threads=args.threads, precision="fp32")
        deepest = max(args.pools)
        t = time.perf_counter()
        scores = [
            fp32.score(q, [h.chunk.text or "" for h in hits[:deepest]])
            for q, hits in zip(texts, hybrid, strict=True)
        ]
        score_seconds = time.perf_counter() - t
        fusion = fp32.fusion

        def reorder(pool: int, sc: list[np.ndarray[Any, Any]], fu: ScoreFusion) -> dict[str, list[Hit]]:
            return fused_runs(qids, hybrid, sc, pool, fu)

        result["crossfit_weights"] = {}
        for pool in args.pools:
            quality[f"hybrid+rerank@{pool}"] = ranking_metrics(qrels, reorder(pool, scores, fusion))
            if len(qids) >= 4:
                runs, ws = crossfit_runs(qids, qrels, hybrid, scores, pool)
                quality[f"hybrid+rerank@{pool}_crossfit"] = ranking_metrics(qrels, runs)
                result["crossfit_weights"][str(pool)] = ws
            quality[f"rerank_only@{pool}"] = ranking_metrics(
                qrels, reorder(pool, scores, ScoreFusion({}, default=1.0))
            )
        # Variants of the same checkpoint: bf16 (the default on AMX / AVX512-BF16) and torch int8.
        variants = {
            "bf16": CrossEncoderReranker(reranker_path, threads=args.threads, precision="bf16"),
            "int8": CrossEncoderReranker(reranker_path, int8=True, threads=args.threads),
        }
        p0 = min(args.pools)  # the pool variant quality, end-to-end latency and LangChain are measured at
        result["variants_vs_fp32"] = {}
        for name, model in variants.items():
            sv = [
                model.score(q, [h.chunk.text or "" for h in hits[:p0]])
                for q, hits in zip(texts, hybrid, strict=True)
            ]
            quality[f"hybrid+rerank@{p0}_{name}"] = ranking_metrics(qrels, reorder(p0, sv, fusion))
            a, b = np.concatenate([s[:p0] for s in scores]), np.concatenate(sv)
            result["variants_vs_fp32"][name] = {
                "pearson": float(np.corrcoef(a, b)[0, 1]),
                "max_abs_diff": float(np.max(np.abs(a - b))),
                f"ndcg@10_fp32@{p0}": quality[f"hybrid+rerank@{p0}"]["ndcg@10"],
                f"ndcg@10_{name}@{p0}": quality[f"hybrid+rerank@{p0}_{name}"]["ndcg@10"],
            }
        result["int8_vs_fp32"] = result["variants_vs_fp32"]["int8"]

        # latency, cold tokenization cache, one query at a time
        limit = matmul_gflops(args.threads)
        latency: dict[str, Any] = {}
        lat_q = list(zip(texts, hybrid, strict=True))[: args.latency_queries]
        for name, model in (("fp32", fp32), *variants.items()):
            for pool in [p for p in args.pools if p <= 50]:
                times = []
                model.stats = type(model.stats)()
                for q, hits in lat_q:
                    model._cache.clear()
                    t = time.perf_counter()
                    model.rerank(q, hits[:pool])
                    times.append(time.perf_counter() - t)
                st = model.stats
                flops = model_flops(fp32.model, st.padded_tokens, st.attention_cells)
                latency[f"{name}@{pool}"] = {
                    "p50_ms": 1000 * statistics.median(times),
                    "p95_ms": 1000 * pct(times, 95),
                    "gflops": flops / st.seconds / 1e9,
                    "padding_waste": 1 - st.tokens / st.padded_tokens,
                }
        result["matmul_gflops"] = limit
        for v in latency.values():
            v["fraction_of_matmul"] = v["gflops"] / limit
        result["latency"] = latency
        e2e_q = texts[: args.latency_queries]
        e2e: dict[str, list[float]] = {}
        for name, model in (*variants.items(), ("fp32", fp32)):
            rr = Retriever(encoder, store, pool=p0, hybrid=True, reranker=model)
            rr.search(e2e_q[0], k=10)  # warm-up
            e2e[name] = []
            for q in e2e_q:
                model._cache.clear()
                t = time.perf_counter()
                rr.search(q, k=10)
                e2e[name].append(time.perf_counter() - t)
            result[f"end_to_end_{name}_pool{p0}_p50_ms"] = 1000 * statistics.median(e2e[name])
            result[f"end_to_end_{name}_pool{p0}_p95_ms"] = 1000 * pct(e2e[name], 95)
        if reranker_path is not None and not args.no_langchain:
            first = Retriever(encoder, store, pool=p0, hybrid=True)
            lc = langchain_compare(first, reranker_path, fp32.max_length, e2e_q, p0, args.threads)
            if lc is not None:
                tops, lc_times = lc
                lc_q = {q: qrels[q] for q in qids[: len(e2e_q)]}
                lc_run = dict(zip(lc_q, tops, strict=True))
                ours = reorder(p0, scores, fusion)
                lc_p50 = statistics.median(lc_times)
                result["langchain"] = {
                    "queries": len(e2e_q),
                    "pool": p0,
                    "p50_ms": 1000 * lc_p50,
                    **{f"ratio_mmrag_{n}": statistics.median(t) / lc_p50 for n, t in e2e.items()},
                    "ndcg@10_langchain": evaluate(lc_q, lc_run, ks=(10,))["ndcg@10"],
                    "ndcg@10_mmrag": ranking_metrics(lc_q, {q: ours[q] for q in lc_q}, ks=(10,))["ndcg@10"],
                }
    result["quality"] = quality
    result["reranker"] = {
        "path": reranker_path,
        "max_length": fp32.max_length,
        "layers": fp32.model.config.num_hidden_layers,
        "fusion_weight_text": fusion.weight("text"),
        "trained": fp32.meta.get("train"),
        "val": fp32.meta.get("val"),
        "score_seconds_fp32": score_seconds,
    }
    result["seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for k, m in quality.items():
        print(f"{k:>24}: nDCG@10 {m['ndcg@10']:.4f}  R@100 {m['recall@100']:.4f}")
    print(json.dumps(latency, indent=1))


if __name__ == "__main__":
    main()
