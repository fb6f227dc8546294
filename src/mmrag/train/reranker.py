"""``mmrag train-reranker``: a cross-encoder trained listwise on first-stage hard negatives.

Training sits here, beside the encoder trainers; :mod:`mmrag.rerank` keeps only inference. The
groups come from :func:`mmrag.train.groups.mine_groups` (a data function), the corpus index from
:func:`mmrag.eval.corpus.index_corpus`.

Plain binary cross-entropy on the 833 shipped SciFact triplets made a MiniLM-initialised
cross-encoder worse than the first stage (issue #4). This trainer instead:

* mines its negatives from the first stage it will rerank (hybrid BM25 + dense pool of every
  training query, so both lexical and semantic near-misses), ``negatives`` per positive;
* can add title → abstract groups from the corpus (the title as query, its own abstract as the
  positive, the abstracts the first stage returns for the title as negatives): far more pairs, but
  off by default, since on the validation fold they cost more than they gave (``RerankTrainConfig``);
* trains listwise: softmax cross-entropy over (1 positive + n negatives) per group, the loss that
  matches a reranker's job (order a pool), not a per-pair probability;
* never sees the validation fold: its queries are excluded, and the fusion weight with the
  first stage is then learned on that fold and saved with the checkpoint (``mmrag_rerank.json``);
* can make a shallower reranker (``layers``: the bottom N transformer layers, N/6 of MiniLM's cost
  per pair) and teach it a trained checkpoint's scores as well as the labels (``teacher``: listwise
  distillation, KL between the two softmaxes over each group).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.encoders.bf16 import bf16_is_fast
from mmrag.errors import ConfigError
from mmrag.eval.corpus import doc_ids, index_corpus, steady_search
from mmrag.rerank.cross_encoder import CONFIG_FILE, CrossEncoderReranker
from mmrag.store.payload import TRAIN_WRITER
from mmrag.train.groups import Group, mine_groups
from mmrag.train.reranker_calibrate import calibrate
from mmrag.train.reranker_report import (
    Calibration,
    FitStats,
    RerankTrainConfig,
    RerankTrainReport,
    SoupMember,
)
from mmrag.train.soup import WeightSum

if TYPE_CHECKING:
    import torch

    from mmrag.eval.datasets import BeirDataset

__all__ = [
    "Calibration",
    "FitStats",
    "Group",
    "RerankTrainConfig",
    "RerankTrainReport",
    "calibrate",
    "distill_loss",
    "fit",
    "keep_layers",
    "listwise_loss",
    "mine_groups",
    "teacher_scores",
    "train_reranker",
]

log = logging.getLogger(__name__)


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each row of ``logits`` (groups × candidates), positive in column 0."""
    import torch

    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits, target)


def distill_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(logits)) per row (a group's candidates), averaged over rows."""
    import torch

    log_p = torch.nn.functional.log_softmax(logits, dim=-1)
    return torch.nn.functional.kl_div(
        log_p, torch.log_softmax(teacher, dim=-1), log_target=True, reduction="batchmean"
    )


def group_pairs(groups: Sequence[Group]) -> tuple[list[str], list[str]]:
    """The (query, passage) pairs of ``groups``, flattened in order: queries, then passages."""
    return [g.query for g in groups for _ in g.passages], [p for g in groups for p in g.passages]


def teacher_scores(
    teacher: str | Path, groups: Sequence[Group], cfg: RerankTrainConfig, *, progress: bool = False
) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """The ``teacher`` reranker's logits for every group's passages, in order (in fp32, the
    precision the student trains in)."""
    from tqdm import tqdm

    rr = CrossEncoderReranker(teacher, max_length=cfg.max_length, batch_size=32, precision="fp32")
    if rr.untrained:
        raise ConfigError("the teacher must be a trained reranker checkpoint, not the untrained MiniLM")
    out = []
    bar = tqdm(
        total=len(groups), desc="teacher scores", unit="group", disable=not progress, dynamic_ncols=True
    )
    for start in range(0, len(groups), 64):  # 64 groups per score_pairs call: length-sorted batches
        part = groups[start : start + 64]
        flat = rr.score_pairs(*group_pairs(part))
        ends = np.cumsum([len(g.passages) for g in part])
        out += np.split(flat, ends[:-1])
        bar.update(len(part))
    bar.close()
    return out


def keep_layers(model: Any, n: int) -> None:
    """Cut ``model`` (a BERT-style sequence classifier) to its bottom ``n`` transformer layers, in
    place; its config then says ``n``, so the saved checkpoint loads as the shallower model."""
    import torch

    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    if not 1 <= n <= len(layers):
        raise ConfigError(f"layers must be between 1 and {len(layers)} for this base, got {n}")
    base.encoder.layer = torch.nn.ModuleList(list(layers)[:n])
    model.config.num_hidden_layers = n


def fit(
    reranker: CrossEncoderReranker,
    groups: Sequence[Group],
    cfg: RerankTrainConfig,
    *,
    progress: bool = False,
    teacher: Sequence[np.ndarray[Any, np.dtype[np.float32]]] | None = None,
) -> FitStats:
    """Listwise training of ``reranker.model`` in place for a fixed number of steps (``cfg.steps``,
    else ``cfg.epochs`` passes over ``groups``); the groups are cycled in order, so the same groups and
    seed give the same model. ``teacher``: each group's target logits (:func:`teacher_scores`); the
    loss then adds ``cfg.distill`` x :func:`distill_loss`."""
    import torch
    from tqdm import tqdm

    if not groups:
        raise ValueError("no training groups: the first stage returned too few candidates to mine from")
    torch.manual_seed(cfg.seed)
    if cfg.train_precision == "bf16" and not bf16_is_fast():
        log.warning("training in bf16 on a CPU without bf16 instructions: emulated, slower than fp32")
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
    total = cfg.steps or max(1, cfg.epochs * len(groups) // cfg.batch_groups)
    warm = max(1, int(cfg.warmup * total))

    def lr_at(s: int) -> float:  # linear warm-up, then linear decay to 5%
        return min(1.0, (s + 1) / warm) * max(0.05, (total - s) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0, losses = time.perf_counter(), []
    bar = tqdm(range(total), desc="train reranker", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        idx = [(step * cfg.batch_groups + i) % len(groups) for i in range(cfg.batch_groups)]
        batch = [groups[j] for j in idx]
        n = len(batch[0].passages)
        pairs = reranker.encode_pairs(*group_pairs(batch))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train_precision == "bf16"):
            out = model(**reranker.collate(pairs)).logits
        logits = out.float().reshape(len(batch), n)  # the losses in fp32 either way
        loss = listwise_loss(logits)
        if teacher is not None and cfg.distill > 0:
            target = torch.from_numpy(np.stack([teacher[j] for j in idx]))
            loss = loss + cfg.distill * distill_loss(logits, target)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % 10 == 0:
            recent = sum(losses[-10:]) / 10
            bar.set_postfix(loss=f"{recent:.3f}", refresh=False)
            log.info("step %d/%d loss %.3f (%.0f s)", step + 1, total, recent, time.perf_counter() - t0)
    bar.close()
    model.eval()
    return FitStats(
        steps=total,
        planned_steps=total,
        groups_seen=total * cfg.batch_groups,
        seconds=round(time.perf_counter() - t0, 1),
        loss_first10=sum(losses[:10]) / max(1, len(losses[:10])),
        loss_last10=sum(losses[-10:]) / max(1, len(losses[-10:])),
    )


def _mine(
    retriever: Any,
    ds: BeirDataset,
    train_ids: list[str],
    val_ids: list[str],
    cfg: RerankTrainConfig,
    *,
    progress: bool,
) -> list[Group]:
    """The training groups: hard negatives from ``retriever``'s hybrid pools (sampled with ``cfg.seed``),
    the validation fold's relevant docs excluded."""
    from tqdm import tqdm

    # total unknown up front (training queries, then titles): the bar counts ranked texts
    bar = tqdm(desc="mine negatives", unit="query", disable=not progress, dynamic_ncols=True)

    def first_stage(texts: list[str], k: int) -> list[list[str]]:
        out = []
        for start in range(0, len(texts), 64):
            part = steady_search(retriever, texts[start : start + 64], k, hybrid=True)
            out += [doc_ids(hits) for hits in part]
            bar.update(len(part))
        return out

    t = time.perf_counter()
    groups = mine_groups(
        ds,
        train_ids,
        first_stage,
        negatives=cfg.negatives,
        depth=cfg.depth,
        titles=cfg.titles,
        seed=cfg.seed,
        exclude={d for q in val_ids for d in ds.qrels[q]},
    )
    bar.close()
    log.info("mined %d groups in %.0f s", len(groups), time.perf_counter() - t)
    return groups


def train_reranker(
    data: Path,
    out: Path,
    cfg: RerankTrainConfig,
    *,
    encoder_spec: str = "lite",
    cache: Path | None = None,
    store: str | None = None,
    progress: bool = False,
) -> RerankTrainReport:
    """Mine, train, calibrate, save. ``data`` is the shared data root (scifact/ and triplets/).

    With ``progress``, indexing, mining, training (with an ETA) and validation each show a bar on
    stderr. Mining searches exactly (no HNSW) and ranks each pool (and each validation pool) with
    :func:`~mmrag.eval.corpus.steady_search` (BM25 scores from Qdrant Edge can differ by one float32
    ulp from store to store), so the mined groups, and with them the checkpoint, are the same in every
    run of the same command and seed.
    """
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
    if cfg.docs:
        keep = set(list(ds.corpus)[: cfg.docs]) | {d for q in (*val_ids, *train_ids) for d in ds.qrels[q]}
        ds = type(ds)(ds.root, {d: v for d, v in ds.corpus.items() if d in keep}, ds.queries, ds.qrels)
    train_pos = {d for q in train_ids for d in ds.qrels[q]}
    unseen = [q for q in val_ids if not set(ds.qrels[q]) & train_pos]
    encoder = load_encoder(encoder_spec)
    with tempfile.TemporaryDirectory(prefix="mmrag-rr-") as tmp, QdrantStore.open(store or tmp) as st:
        index_corpus(st, encoder, ds, cache, progress=progress, writer=TRAIN_WRITER)
        retriever = Retriever(encoder, st, pool=cfg.depth, hybrid=True, exact=True)
        val_pools = steady_search(  # as the mined pools, not in the store's order
            retriever, [ds.queries[q] for q in val_ids], cfg.val_pool, hybrid=True, rerank=False
        )
        # each member alone (a soup), then the model saved: the same fold, pools and unseen queries
        validate = partial(
            calibrate,
            ds=ds,
            val_ids=val_ids,
            pools=val_pools,
            pool=cfg.val_pool,
            unseen=unseen,
            progress=progress,
        )
        soup, members, fits = WeightSum(), [], []
        for seed in range(cfg.seed, cfg.seed + cfg.soup):  # one member: the plain run of cfg.seed
            member_cfg = replace(cfg, seed=seed)
            groups = _mine(retriever, ds, train_ids, val_ids, member_cfg, progress=progress)
            # Weights fp32 (trained in fp32 or under bf16 autocast), calibrated in fp32; inference may
            # then run it in bf16 (rerank precision).
            reranker = CrossEncoderReranker(  # trained in place: never traced
                cfg.model, max_length=cfg.max_length, batch_size=32, precision="fp32", trace=False
            )
            if cfg.layers is not None:
                keep_layers(reranker.model, cfg.layers)
            targets = None
            if cfg.teacher is not None:
                targets = teacher_scores(cfg.teacher, groups, cfg, progress=progress)
            fits.append(fit(reranker, groups, member_cfg, progress=progress, teacher=targets))
            if cfg.soup > 1:
                members.append(SoupMember(seed, fits[-1], validate(reranker)))
                soup.add(reranker.model)
        if cfg.soup > 1:
            soup.load_mean_into(reranker.model)  # the last member's model becomes the soup
        cal = validate(reranker)
        # The weight is learned against this first stage's scores: the report names it.
        fusion_name = retriever.fusion + (f" k={retriever.rrf_k}" if retriever.fusion == "rrf" else "")
    out.mkdir(parents=True, exist_ok=True)
    reranker.model.save_pretrained(out)
    reranker.tokenizer.save_pretrained(out)
    report = RerankTrainReport(
        checkpoint=out,
        base=reranker.source,
        max_length=cfg.max_length,
        first_stage=f"hybrid {fusion_name} (BM25 + dense {encoder.id})",
        config=cfg,
        fit=FitStats.total(fits),
        groups=len(groups),
        train_queries=len(train_ids),
        val=cal,
        members=tuple(members),
    )
    (out / CONFIG_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    return report
