"""``mmrag train-reranker``: a cross-encoder trained listwise on first-stage hard negatives.

Training sits here, beside the encoder trainers; :mod:`mmrag.rerank` keeps only inference. The
groups come from :func:`mmrag.train.groups.mine_groups` (a data function), the corpus index from
:func:`mmrag.eval.corpus.index_corpus`.

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
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmrag.eval.corpus import doc_ids, index_corpus, ranking_metrics
from mmrag.rerank.cross_encoder import CONFIG_FILE, CrossEncoderReranker
from mmrag.rerank.fusion import learn_weight
from mmrag.train.groups import Group, mine_groups

if TYPE_CHECKING:
    import torch

    from mmrag.eval.datasets import BeirDataset
    from mmrag.types import Hit

__all__ = [
    "Calibration",
    "FitStats",
    "Group",
    "RerankTrainConfig",
    "RerankTrainReport",
    "calibrate",
    "fit",
    "listwise_loss",
    "mine_groups",
    "train_reranker",
]

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
class FitStats:
    """What :func:`fit` did: steps run of those planned, time, and the loss at both ends.

    Example:
        >>> FitStats(20, 20, 40, 1.5, 1.2, 0.3).to_dict()["groups_seen"]
        40
    """

    steps: int
    planned_steps: int
    groups_seen: int
    seconds: float
    loss_first10: float
    loss_last10: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Calibration:
    """The text fusion weight learned on the validation fold, with nDCG@10 at each end of the curve.

    Example:
        >>> c = Calibration(0.5, {0.0: 0.6, 0.5: 0.7, 1.0: 0.65}, 0.6, 0.65, 0.7, 30, 20)
        >>> c.to_dict()["fused_ndcg@10"]
        0.7
    """

    weight: float
    curve: Mapping[float, float]
    first_stage_ndcg: float
    rerank_only_ndcg: float
    fused_ndcg: float
    queries: int
    pool: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "curve": dict(self.curve),
            "first_stage_ndcg@10": self.first_stage_ndcg,
            "rerank_only_ndcg@10": self.rerank_only_ndcg,
            "fused_ndcg@10": self.fused_ndcg,
            "queries": self.queries,
            "pool": self.pool,
        }


@dataclass(frozen=True, slots=True)
class RerankTrainReport:
    """``mmrag train-reranker``: the checkpoint, how it trained, and its calibration.

    ``to_dict()`` is the checkpoint's ``mmrag_rerank.json`` (what :class:`CrossEncoderReranker`
    reads back: fusion weights and the base model); ``to_text()`` is what the command prints.

    Example:
        >>> report = train_reranker(data, Path("rr"), RerankTrainConfig())  # doctest: +SKIP
        >>> report.val.weight                                               # doctest: +SKIP
        0.4
    """

    checkpoint: Path
    base: str
    max_length: int
    first_stage: str
    config: RerankTrainConfig
    fit: FitStats
    groups: int
    train_queries: int
    val: Calibration

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "mmrag-cross-encoder",
            "base": self.base,
            "max_length": self.max_length,
            "fusion_weights": {"text": self.val.weight},
            "fusion_default": self.val.weight,
            "first_stage": self.first_stage,
            "train": {
                **asdict(self.config),
                **self.fit.to_dict(),
                "groups": self.groups,
                "train_queries": self.train_queries,
            },
            "val": self.val.to_dict(),
        }

    def to_text(self) -> str:
        val, tr = self.val, self.fit
        return "\n".join(
            [
                f"checkpoint: {self.checkpoint} "
                f"({tr.steps} steps, {self.groups} groups mined, {tr.seconds} s)",
                f"loss {tr.loss_first10:.3f} -> {tr.loss_last10:.3f}",
                f"val fold ({val.queries} queries, pool {val.pool}) nDCG@10: first stage "
                f"{val.first_stage_ndcg:.4f}, rerank only {val.rerank_only_ndcg:.4f}, "
                f"fused (w={val.weight:.2f}) {val.fused_ndcg:.4f}",
                f"use it: mmrag search QUERY --hybrid --rerank --reranker {self.checkpoint}",
            ]
        )


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each row of ``logits`` (groups × candidates), positive in column 0."""
    import torch

    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits, target)


def fit(reranker: CrossEncoderReranker, groups: Sequence[Group], cfg: RerankTrainConfig) -> FitStats:
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
    return FitStats(
        steps=done,
        planned_steps=planned,
        groups_seen=done * cfg.batch_groups,
        seconds=round(time.perf_counter() - t0, 1),
        loss_first10=sum(losses[:10]) / max(1, len(losses[:10])),
        loss_last10=sum(losses[-10:]) / max(1, len(losses[-10:])),
    )


def calibrate(
    reranker: CrossEncoderReranker,
    ds: BeirDataset,
    val_ids: Sequence[str],
    pools: Sequence[Sequence[Hit]],
    pool: int,
) -> Calibration:
    """Learn the text fusion weight on the validation fold; report first stage / rerank / fused nDCG@10.

    Args:
        reranker: The trained cross-encoder.
        ds: The BEIR dataset.
        val_ids: Validation-fold query ids.
        pools: The first stage's hits of each validation query (``pool`` deep), best first.
        pool: The depth asked of the first stage (recorded in the report).
    """
    qrels = {q: dict(ds.qrels[q]) for q in val_ids}
    scores = [
        [float(s) for s in reranker.score(ds.queries[q], [h.chunk.text or "" for h in hits])]
        for q, hits in zip(val_ids, pools, strict=True)
    ]

    def ndcg(ordered: list[list[Hit]]) -> float:
        return ranking_metrics(qrels, dict(zip(val_ids, ordered, strict=True)), ks=(10,))["ndcg@10"]

    best, curve = learn_weight(pools, scores, ndcg)
    return Calibration(
        weight=best,
        curve=curve,
        first_stage_ndcg=curve[0.0],
        rerank_only_ndcg=curve[1.0],
        fused_ndcg=curve[best],
        queries=len(val_ids),
        pool=pool,
    )


def train_reranker(
    data: Path,
    out: Path,
    cfg: RerankTrainConfig,
    *,
    encoder_spec: str = "lite",
    cache: Path | None = None,
    store: str | None = None,
) -> RerankTrainReport:
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

        def first_stage(texts: list[str], k: int) -> list[list[str]]:
            return [doc_ids(hits) for hits in retriever.search_batch(texts, k=k, hybrid=True)]

        t = time.perf_counter()
        groups = mine_groups(
            ds,
            train_ids,
            first_stage,
            negatives=cfg.negatives,
            depth=cfg.depth,
            titles=cfg.titles,
            seed=cfg.seed,
        )
        log.info("mined %d groups in %.0f s", len(groups), time.perf_counter() - t)
        reranker = CrossEncoderReranker(cfg.model, max_length=cfg.max_length, batch_size=32)
        fitted = fit(reranker, groups, cfg)
        val_pools = retriever.search_batch(
            [ds.queries[q] for q in val_ids], k=cfg.val_pool, hybrid=True, rerank=False
        )
        cal = calibrate(reranker, ds, val_ids, val_pools, cfg.val_pool)
    out.mkdir(parents=True, exist_ok=True)
    reranker.model.save_pretrained(out)
    reranker.tokenizer.save_pretrained(out)
    report = RerankTrainReport(
        checkpoint=out,
        base=reranker.source,
        max_length=cfg.max_length,
        first_stage="hybrid rrf k=60 (BM25 + dense " + encoder.id + ")",
        config=cfg,
        fit=fitted,
        groups=len(groups),
        train_queries=len(train_ids),
        val=cal,
    )
    (out / CONFIG_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    return report
