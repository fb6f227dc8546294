"""``mmrag train-reranker``: a cross-encoder trained listwise on first-stage hard negatives.

Plain binary cross-entropy on the 833 shipped SciFact triplets made a MiniLM-initialised
cross-encoder worse than the first stage (issue #4). This trainer instead:

* mines its negatives from the first stage it will rerank (hybrid BM25 + dense pool of every
  training query, so both lexical and semantic near-misses), ``negatives`` per positive;
* adds title → abstract groups from the corpus (the title as query, its own abstract as the
  positive, the abstracts the first stage returns for the title as negatives): far more pairs;
* trains listwise: softmax cross-entropy over (1 positive + n negatives) per group, the loss that
  matches a reranker's job (order a pool), not a per-pair probability;
* never sees the validation fold: its queries are excluded, and the fusion weight with the
  first stage is then learned on that fold and saved with the checkpoint (``mmrag_rerank.json``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.rerank.beir import doc_ids, index_corpus, ranking_metrics
from mmrag.rerank.cross_encoder import CONFIG_FILE, CrossEncoderReranker
from mmrag.rerank.fusion import learn_weight

if TYPE_CHECKING:
    import torch

    from mmrag.eval.datasets import BeirDataset
    from mmrag.retriever import Retriever
    from mmrag.types import Hit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RerankTrainConfig:
    """Settings of one training run (saved into the checkpoint's ``mmrag_rerank.json``)."""

    model: str | None = None  # None: offline all-MiniLM-L6-v2 with a fresh head
    # Defaults = the measured best of the short CPU runs (issue #4 note): lr 4e-5 / head 1e-3 left
    # the loss at chance after 61 steps; 3e-4 / 1e-2 with 3 frozen layers learned within the budget.
    negatives: int = 3
    depth: int = 30  # first-stage candidates mined per query
    titles: int = 400  # title → abstract groups
    max_length: int = 112
    batch_groups: int = 8
    epochs: int = 1
    lr: float = 3e-4
    head_lr: float = 1e-2
    warmup: float = 0.1
    minutes: float = 11.0  # wall-clock budget for the optimisation steps
    freeze_layers: int = 3  # bottom transformer layers kept fixed (with the embeddings): faster steps
    val_pool: int = 20
    seed: int = 0
    queries: int | None = None  # cap on training queries (smoke runs)
    val_queries: int | None = None  # cap on validation queries (smoke runs)


@dataclass(frozen=True, slots=True)
class Group:
    """One query with its positive first and ``n`` negatives."""

    query: str
    passages: tuple[str, ...]


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each row of ``logits`` (groups × candidates), positive in column 0."""
    import torch

    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits, target)


def mine_groups(
    retriever: Retriever, ds: BeirDataset, query_ids: Sequence[str], cfg: RerankTrainConfig
) -> list[Group]:
    """Query groups (one per relevant doc) and title → abstract groups, negatives from the first stage."""
    rng = random.Random(cfg.seed)
    groups: list[Group] = []
    pools = retriever.search_batch([ds.queries[q] for q in query_ids], k=2 * cfg.depth, hybrid=True)
    for q, hits in zip(query_ids, pools, strict=True):
        rel = ds.qrels[q]
        cands = [d for d in doc_ids(hits) if d not in rel]
        if len(cands) < cfg.negatives:
            continue
        for pos in rel:
            negs = rng.sample(cands, cfg.negatives)
            groups.append(Group(ds.queries[q], (ds.doc_text(pos), *(ds.doc_text(n) for n in negs))))
    titled = [d for d, (title, _) in ds.corpus.items() if len(title.split()) >= 4]
    picked = rng.sample(titled, min(cfg.titles, len(titled)))
    pools = retriever.search_batch([ds.corpus[d][0] for d in picked], k=cfg.depth, hybrid=True)
    for d, hits in zip(picked, pools, strict=True):
        cands = [x for x in doc_ids(hits) if x != d]
        if len(cands) < cfg.negatives:
            continue
        negs = rng.sample(cands, cfg.negatives)
        groups.append(Group(ds.corpus[d][0], (ds.corpus[d][1], *(ds.corpus[n][1] for n in negs))))
    rng.shuffle(groups)
    return groups


def fit(reranker: CrossEncoderReranker, groups: Sequence[Group], cfg: RerankTrainConfig) -> dict[str, Any]:
    """Listwise training of ``reranker.model`` in place; stops at the wall-clock budget."""
    import torch

    model = reranker.model
    model.train()
    base = getattr(model, model.base_model_prefix)
    frozen = [base.embeddings, *list(base.encoder.layer)[: cfg.freeze_layers]]
    for module in frozen:  # the embeddings hold most parameters and the least to gain here
        for p in module.parameters():
            p.requires_grad_(False)
    prefix = model.base_model_prefix
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if n.startswith(prefix)], "lr": cfg.lr},
            {"params": [p for n, p in named if not n.startswith(prefix)], "lr": cfg.head_lr},
        ],
        weight_decay=0.01,
    )
    planned = max(1, cfg.epochs * len(groups) // cfg.batch_groups)
    # The schedule (linear warm-up, linear decay) spans the steps that fit the time budget,
    # estimated after the first steps, so a budget-cut run still ends at a low learning rate.
    total = [planned]

    def lr_at(s: int) -> float:
        warm = max(1, int(cfg.warmup * total[0]))
        return min(1.0, (s + 1) / warm) * max(0.05, (total[0] - s) / max(1, total[0] - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0, losses, done = time.perf_counter(), [], 0
    for step in range(planned):
        elapsed = time.perf_counter() - t0
        if elapsed > cfg.minutes * 60 or step >= total[0]:
            log.info("stopping after %d of %d planned steps (%.0f s)", step, planned, elapsed)
            break
        if step == 3:
            total[0] = min(planned, max(4, int(cfg.minutes * 60 / (elapsed / 3))))
            log.info("%.1f s/step: %d steps fit the budget", elapsed / 3, total[0])
        batch = [groups[(step * cfg.batch_groups + i) % len(groups)] for i in range(cfg.batch_groups)]
        n = len(batch[0].passages)
        pairs = reranker.encode_pairs(
            [g.query for g in batch for _ in g.passages], [p for g in batch for p in g.passages]
        )
        logits = model(**reranker.collate(pairs)).logits.reshape(len(batch), n)
        loss = listwise_loss(logits)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        done = step + 1
        if done % 10 == 0:
            log.info(
                "step %d/%d loss %.3f (%.0f s)",
                done,
                total[0],
                sum(losses[-10:]) / 10,
                time.perf_counter() - t0,
            )
    model.eval()
    return {
        "steps": done,
        "planned_steps": planned,
        "groups_seen": done * cfg.batch_groups,
        "seconds": round(time.perf_counter() - t0, 1),
        "loss_first10": sum(losses[:10]) / max(1, len(losses[:10])),
        "loss_last10": sum(losses[-10:]) / max(1, len(losses[-10:])),
    }


def calibrate(
    reranker: CrossEncoderReranker, retriever: Retriever, ds: BeirDataset, val_ids: Sequence[str], pool: int
) -> dict[str, Any]:
    """Learn the text fusion weight on the validation fold; report first stage / rerank / fused nDCG@10."""
    qrels = {q: dict(ds.qrels[q]) for q in val_ids}
    pools = retriever.search_batch([ds.queries[q] for q in val_ids], k=pool, hybrid=True, rerank=False)
    scores = [
        [float(s) for s in reranker.score(ds.queries[q], [h.chunk.text or "" for h in hits])]
        for q, hits in zip(val_ids, pools, strict=True)
    ]

    def ndcg(ordered: list[list[Hit]]) -> float:
        return ranking_metrics(qrels, dict(zip(val_ids, ordered, strict=True)), ks=(10,))["ndcg@10"]

    best, curve = learn_weight(pools, scores, ndcg)
    return {
        "weight": best,
        "curve": curve,
        "first_stage_ndcg@10": curve[0.0],
        "rerank_only_ndcg@10": curve[1.0],
        "fused_ndcg@10": curve[best],
        "queries": len(val_ids),
        "pool": pool,
    }


def train_reranker(
    data: Path,
    out: Path,
    cfg: RerankTrainConfig,
    *,
    encoder_spec: str = "lite",
    cache: Path | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """Mine, train, calibrate, save. ``data`` is the shared data root (scifact/ and triplets/)."""
    import tempfile

    import torch

    from mmrag.encoders import load_encoder
    from mmrag.eval.datasets import BeirDataset, scifact_val_query_ids
    from mmrag.retriever import Retriever
    from mmrag.store import QdrantStore

    torch.manual_seed(cfg.seed)
    ds = BeirDataset.load(data / "scifact", "train")
    val = (
        scifact_val_query_ids(
            data / "triplets" / "scifact_train_triplets.jsonl", data / "scifact" / "queries.jsonl"
        )
        or set()
    )
    val_ids = sorted(q for q in val if q in ds.queries)[: cfg.val_queries]
    train_ids = sorted(q for q in ds.queries if q not in val)[: cfg.queries]
    encoder = load_encoder(encoder_spec)
    with tempfile.TemporaryDirectory(prefix="mmrag-rr-") as tmp, QdrantStore.open(store or tmp) as st:
        index_corpus(st, encoder, ds, cache)
        retriever = Retriever(encoder, st, pool=cfg.depth, hybrid=True)
        t = time.perf_counter()
        groups = mine_groups(retriever, ds, train_ids, cfg)
        log.info("mined %d groups in %.0f s", len(groups), time.perf_counter() - t)
        reranker = CrossEncoderReranker(cfg.model, max_length=cfg.max_length, batch_size=32)
        fitted = fit(reranker, groups, cfg)
        cal = calibrate(reranker, retriever, ds, val_ids, cfg.val_pool)
    out.mkdir(parents=True, exist_ok=True)
    reranker.model.save_pretrained(out)
    reranker.tokenizer.save_pretrained(out)
    meta = {
        "kind": "mmrag-cross-encoder",
        "base": reranker.source,
        "max_length": cfg.max_length,
        "fusion_weights": {"text": cal["weight"]},
        "fusion_default": cal["weight"],
        "first_stage": "hybrid rrf k=60 (BM25 + dense " + encoder.id + ")",
        "train": {**asdict(cfg), **fitted, "groups": len(groups), "train_queries": len(train_ids)},
        "val": cal,
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return meta
