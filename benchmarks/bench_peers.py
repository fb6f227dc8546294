"""mmrag against LangChain and Haystack on the same data, models and machine, in one run (issue #8, item 5).

Data: the SciFact corpus as ``mmrag eval`` indexes it (one chunk per abstract, ``corpus_chunks``), queried by
the held-out val fold of the SciFact train queries (as ``benchmarks/bench_rerank.py``).

Systems, each in its framework's own idiom:

* mmrag: ``Retriever`` over an embedded Qdrant Edge store, dense + cross-encoder rerank (and, as an extra
  row, hybrid BM25 + dense (the default DBSF fusion) + rerank: the peers have no BM25 here without
  downloading a hub model);
* LangChain: ``langchain_qdrant.QdrantVectorStore`` (qdrant-client local mode, ``:memory:``) +
  ``ContextualCompressionRetriever(CrossEncoderReranker(HuggingFaceCrossEncoder))``;
* Haystack: ``QdrantDocumentStore`` (local mode, ``:memory:``) + ``QdrantEmbeddingRetriever`` +
  ``SentenceTransformersSimilarityRanker`` in a ``Pipeline``.

Same models everywhere, so the frameworks are compared, not the models: the dense encoder is one mmrag
``lite`` object, reached by LangChain through an ``Embeddings`` adapter and by Haystack through ``@component``
embedders; the corpus vectors are computed once and every indexer gets them (embedding time is excluded
from all indexing figures); the cross-encoder is one folder loaded by each framework its own way, with the
same max_length, batch size, pool and top 10. Every rerank row orders by the cross-encoder score alone, as
the peers do; mmrag's default fusion with the first stage is reported beside it (its weight was learned on
this same fold, so that figure is optimistic).

Measured: indexing wall time (median of --index-rounds builds, systems rotated) and RSS growth of the first
build; nDCG@10 / Recall@100 of dense retrieval and nDCG@10 after reranking on every val query; per-query
latency of dense-only (k=10) and dense + rerank (pool -> 10), every system called in turn for each query
(order rotated), over --rounds rounds; a stage split from each framework's components called one by one.
Ratios are peer / mmrag within a round, medians over rounds. Dense top-10 lists are compared with mmrag's.

Usage: python benchmarks/bench_peers.py [--pool 20] [--rounds 3] [--latency-queries 30] [--smoke] [--out F]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine_info
from peer_stacks import TOP, Corpus, System, haystack_system, langchain_system, mmrag_system
from timing import pct

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMRAG_DATA", REPO.parent / "shared" / "data"))
CACHE = REPO / ".cache" / "bench"
OUT = REPO / "benchmarks" / "results" / "peers.json"
PEER_MODULES = (
    "langchain_qdrant",
    "langchain_classic",
    "langchain_community",
    "haystack",
    "haystack_integrations",
)
INSTALL = "pip install 'mmrag[bench]' (langchain-qdrant, haystack-ai, qdrant-haystack, " + (
    "sentence-transformers-haystack)"
)


def rss_mb() -> float:
    """Resident memory of this process now (Linux ``/proc``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def load_corpus(
    args: argparse.Namespace, encoder: Any
) -> tuple[Corpus, list[str], list[str], dict[str, dict[str, int]]]:
    """Corpus chunks + vectors, val query ids, their texts and qrels."""

    from mmrag.eval.corpus import corpus_chunks, corpus_vectors
    from mmrag.eval.datasets import scifact_val_slice

    ds, qids = scifact_val_slice(DATA, args.queries, args.docs)
    chunks = corpus_chunks(ds)
    vecs = corpus_vectors(encoder, ds, args.cache)
    corpus = Corpus(
        [c.id for c in chunks],
        [str(c.metadata["doc_id"]) for c in chunks],
        [c.text or "" for c in chunks],
        vecs,
        chunks,
    )
    return corpus, qids, [ds.queries[q] for q in qids], {q: dict(ds.qrels[q]) for q in qids}


def cross_encoder_folder(requested: str, tmp: str) -> tuple[str, bool]:
    """The cross-encoder folder every framework loads; without a trained one (CI), mmrag's offline
    MiniLM with its seeded fresh head is saved once so all three still load identical weights."""
    if Path(requested).is_dir():
        return requested, True
    from mmrag.rerank import CrossEncoderReranker

    print(f"no reranker at {requested}: offline MiniLM with an untrained head", file=sys.stderr)
    rr = CrossEncoderReranker(None)
    rr.model.save_pretrained(tmp)
    rr.tokenizer.save_pretrained(tmp)
    return tmp, False


def shown_path(path: str) -> str:
    """``path`` relative to the repository when inside it (results files carry no machine's layout)."""
    p = Path(path).absolute()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def overlap(a: dict[str, list[str]], b: dict[str, list[str]], k: int = TOP) -> dict[str, float]:
    """Mean top-k set overlap and the fraction of queries with the identical top-k list."""
    qs = list(a)
    return {
        f"mean_overlap@{k}": statistics.fmean(
            len(set(a[q][:k]) & set(b[q][:k])) / max(1, len(a[q][:k])) for q in qs
        ),
        f"identical_order@{k}": statistics.fmean(a[q][:k] == b[q][:k] for q in qs),
    }


def exact_dense(system: System, texts: list[str], qids: list[str]) -> dict[str, list[str]]:
    """mmrag's dense top 100 by exact scan of the same store (no HNSW): what the peers' local mode does."""
    from mmrag.store import SearchOptions

    r = system.state["r"]
    found = r.store.search(r.vector, r.encoder.encode_text(texts), 100, options=SearchOptions(exact=True))
    return {q: [str(c.metadata["doc_id"]) for c, _ in hits] for q, hits in zip(qids, found, strict=True)}


def fused_quality(system: System, reranker: Any, texts: list[str], qids: list[str], qrels: Any) -> float:
    """nDCG@10 of mmrag's default rerank: cross-encoder fused with the first stage (checkpoint's weight)."""
    from mmrag.eval.metrics import evaluate
    from mmrag.rerank.fusion import ScoreFusion

    meta = reranker.meta
    fusion = ScoreFusion(
        dict(meta.get("fusion_weights") or {}), default=float(meta.get("fusion_default", 0.5))
    )
    saved, reranker.fusion = reranker.fusion, fusion
    try:
        run = {q: system.rerank(t) for q, t in zip(qids, texts, strict=True)}
    finally:
        reranker.fusion = saved
    return evaluate(qrels, run, ks=(TOP,))[f"ndcg@{TOP}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reranker", default=str(REPO / "checkpoints" / "reranker-scifact"))
    ap.add_argument("--model", default="lite", help="dense encoder (mmrag spec), shared by every system")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pool", type=int, default=20, help="first-stage candidates reranked")
    ap.add_argument("--queries", type=int, help="first N val queries (default: the whole fold)")
    ap.add_argument("--docs", type=int, help="first N corpus docs (smoke runs)")
    ap.add_argument("--latency-queries", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="latency rounds (medians over rounds)")
    ap.add_argument("--index-rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--smoke", action="store_true", help="tiny slice, 1 round: seconds, not a measurement")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.smoke:
        args.docs, args.queries, args.latency_queries = args.docs or 40, args.queries or 4, 2
        args.rounds = args.index_rounds = 1
        args.pool = min(args.pool, 5)
    missing = [m for m in PEER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"peer frameworks missing ({', '.join(missing)}): {INSTALL}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
    import torch

    torch.set_num_threads(args.threads)
    from mmrag.encoders import load_encoder
    from mmrag.encoders.lanes import FORWARDS
    from mmrag.rerank import CrossEncoderReranker
    from mmrag.rerank.fusion import ScoreFusion

    FORWARDS.pin(1)  # as the peers: one forward pass at a time (a lone pool is not split over cores)

    t_start = time.perf_counter()
    encoder = load_encoder(args.model)
    corpus, qids, texts, qrels = load_corpus(args, encoder)
    with tempfile.TemporaryDirectory(prefix="mmrag-bench-ce-") as ce_tmp:
        ce_path, trained = cross_encoder_folder(args.reranker, ce_tmp)
        # Cross-encoder order alone, as the peers rank; no tokenization cache, as the peers have none.
        reranker = CrossEncoderReranker(ce_path, fusion=ScoreFusion({}, default=1.0), cache_size=0)
        max_length = reranker.max_length
        systems = [
            mmrag_system("mmrag", encoder, corpus, reranker, args.pool, hybrid=False),
            langchain_system(encoder, corpus, ce_path, max_length, args.pool),
            haystack_system(encoder, corpus, ce_path, max_length, args.pool),
            mmrag_system("mmrag_hybrid", encoder, corpus, reranker, args.pool, hybrid=True),
        ]
        torch.set_num_threads(args.threads)  # a framework's model load may have reset it
        result = run(args, systems, reranker, corpus, qids, texts, qrels)
    result.update(
        encoder=encoder.id,
        reranker={
            "path": shown_path(args.reranker) if trained else None,
            "trained": trained,
            "max_length": max_length,
        },
        versions=versions(),
        seconds=time.perf_counter() - t_start,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for name, s in result["systems"].items():
        print(
            f"{name:>13}: nDCG@10 dense {s['quality']['dense']['ndcg@10']:.4f} rerank "
            f"{s['quality']['rerank']['ndcg@10']:.4f} | index {s['index_s']:.2f} s | dense p50 "
            f"{s['latency_ms']['dense_p50']:.1f} ms, +rerank p50 {s['latency_ms']['rerank_p50']:.1f} ms"
        )
    print(json.dumps(result["dense_top10_vs_mmrag"], indent=1))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "qdrant-edge-py",
        "qdrant-client",
        "langchain-core",
        "langchain-qdrant",
        "langchain-classic",
        "langchain-community",
        "haystack-ai",
        "qdrant-haystack",
        "sentence-transformers-haystack",
        "sentence-transformers",
        "transformers",
        "torch",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run(
    args: argparse.Namespace,
    systems: list[System],
    reranker: Any,
    corpus: Corpus,
    qids: list[str],
    texts: list[str],
    qrels: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """Index, score and time every system; the figures of peers.json."""
    import qdrant_client.local.qdrant_local  # noqa: F401  (imported before the RSS figures, not during one)

    from mmrag.eval.metrics import evaluate

    n = len(systems)
    res: dict[str, dict[str, Any]] = {s.name: {} for s in systems}
    index_runs: dict[str, list[float]] = {s.name: [] for s in systems}
    for rnd in range(args.index_rounds):
        for j in range(n):
            s = systems[(j + rnd) % n]
            gc.collect()
            before, t = rss_mb(), time.perf_counter()
            s.build()
            index_runs[s.name].append(time.perf_counter() - t)
            if rnd == 0:
                res[s.name]["index_rss_mb"] = rss_mb() - before
    for s in systems:
        s.connect()

    dense_runs, rerank_runs = {}, {}
    for s in systems:
        dense_runs[s.name] = {q: s.dense(t, 100) for q, t in zip(qids, texts, strict=True)}
        rerank_runs[s.name] = {q: s.rerank(t) for q, t in zip(qids, texts, strict=True)}
        res[s.name]["quality"] = {
            "dense": evaluate(qrels, dense_runs[s.name], ks=(TOP, 100)),
            "rerank": evaluate(qrels, rerank_runs[s.name], ks=(TOP,)),
        }
    for s in systems:
        if s.name.startswith("mmrag"):
            res[s.name]["quality"]["rerank_fused_ndcg@10"] = fused_quality(s, reranker, texts, qids, qrels)
    base = systems[0].name

    # Latency: each query goes to every system in turn (order rotated per query and round), so the
    # machine's noise falls on all of them alike; one untimed warm-up call each first.
    lat_q = texts[: args.latency_queries]
    keys = ("dense", "rerank", "encode", "first_stage", "rerank_stage")
    times: dict[str, dict[str, list[list[float]]]] = {
        s.name: {k: [[] for _ in range(args.rounds)] for k in keys} for s in systems
    }
    for s in systems:
        s.dense(lat_q[0], TOP), s.rerank(lat_q[0]), s.stages(lat_q[0])
    for rnd in range(args.rounds):
        for i, q in enumerate(lat_q):
            for j in range(n):
                s = systems[(i + j + rnd) % n]
                tt = times[s.name]
                t0 = time.perf_counter()
                s.dense(q, TOP)
                t1 = time.perf_counter()
                s.rerank(q)
                tt["dense"][rnd].append(t1 - t0)
                tt["rerank"][rnd].append(time.perf_counter() - t1)
                st = s.stages(q)
                for k in ("encode", "first_stage"):
                    tt[k][rnd].append(st[k])
                tt["rerank_stage"][rnd].append(st["rerank"])

    def per_round(name: str, key: str, q: float) -> list[float]:
        return [1000 * pct(r, q) for r in times[name][key]]

    for s in systems:
        lat = {f"{k}_p50": statistics.median(per_round(s.name, k, 50)) for k in keys}
        lat |= {f"{k}_p95": statistics.median(per_round(s.name, k, 95)) for k in ("dense", "rerank")}
        res[s.name]["latency_ms"] = lat
        res[s.name]["index_s"] = statistics.median(index_runs[s.name])
        res[s.name]["index_s_runs"] = index_runs[s.name]
        ratio = {"index": res[s.name]["index_s"] / statistics.median(index_runs[base])}
        for k in ("dense", "rerank"):
            for perc in (50, 95):
                ours, theirs = per_round(base, k, perc), per_round(s.name, k, perc)
                ratio[f"{k}_p{perc}"] = statistics.median(b / a for a, b in zip(ours, theirs, strict=True))
        res[s.name]["ratio_to_mmrag"] = ratio
    for s in systems:
        if "index_split" in s.state:
            split = s.state["index_split"]
            res[s.name]["index_split_s"] = {k: statistics.median(x[k] for x in split) for k in split[0]}
    peers = [s.name for s in systems[1:] if not s.name.startswith("mmrag")]
    # Where the lists differ, why: mmrag's Edge store searches an HNSW graph (built by optimize()), the
    # peers' local mode scans every vector. Against mmrag's own exact scan they should agree exactly.
    exact = exact_dense(systems[0], texts, qids)
    store = systems[0].state["store"]
    return {
        "queries": len(qids),
        "corpus": len(corpus.ids),
        "pool": args.pool,
        "top": TOP,
        "threads": args.threads,
        "fusion": _default_fusion(),  # mmrag_hybrid's first stage (RRF in runs before this key)
        "rounds": args.rounds,
        "latency_queries": len(lat_q),
        "index_rounds": args.index_rounds,
        "smoke": bool(args.smoke),
        "machine": machine_info(),
        "systems": res,
        "dense_top10_vs_mmrag": {p: overlap(dense_runs[base], dense_runs[p]) for p in peers},
        "rerank_top10_vs_mmrag": {p: overlap(rerank_runs[base], rerank_runs[p]) for p in peers},
        "dense_top10_vs_mmrag_exact": {p: overlap(exact, dense_runs[p]) for p in peers},
        # rerank lists that differ although mmrag reranked the same pool as the peer: should be none
        "rerank_differs_same_pool": {
            p: sum(
                rerank_runs[base][q] != rerank_runs[p][q]
                and set(dense_runs[base][q][: args.pool]) == set(dense_runs[p][q][: args.pool])
                for q in qids
            )
            for p in peers
        },
        "mmrag_hnsw_vs_exact": {
            **overlap(exact, dense_runs[base]),
            **overlap(exact, dense_runs[base], k=args.pool),
            "hnsw_ef": "Qdrant default",
            "indexed_vectors": store.stats().get("indexed_vectors"),
        },
    }


def _default_fusion() -> str:
    """The hybrid fusion a ``Retriever`` built without ``fusion=`` uses (peer_stacks builds it so)."""
    from mmrag.config import DEFAULT_FUSION

    return DEFAULT_FUSION


if __name__ == "__main__":
    main()
