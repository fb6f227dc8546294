"""The records of ``mmrag train-reranker``: its settings, what training did, the calibration on the
validation fold, and the report that renders itself (``to_dict()`` is the checkpoint's
``mmrag_rerank.json``, ``to_text()`` what the command prints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmrag.errors import ConfigError

__all__ = ["Calibration", "FitStats", "RerankTrainConfig", "RerankTrainReport", "SoupMember"]


@dataclass(frozen=True, slots=True)
class RerankTrainConfig:
    """Settings of one training run (saved into the checkpoint's ``mmrag_rerank.json``)."""

    model: str | None = None  # None: offline all-MiniLM-L6-v2 with a fresh head
    # Defaults = the measured best of the short CPU runs (issue #4 note): lr 4e-5 / head 1e-3 left
    # the loss at chance after 61 steps; 3e-4 / 1e-2 with 3 frozen layers learned within the budget.
    # 7 hard negatives per group (was 3; one seed each, val fold, pool 20): rerank alone 0.726 -> 0.734,
    # fused 0.777 -> 0.782 with the in-fold weight, +0.026 -> +0.051 over the hybrid in `mmrag eval
    # --stages`; cross-fitted weights: flat at pool 20, 0.757 -> 0.777 at pool 50 (docs/search.md). Each
    # step scores 8 x 8 pairs instead of 8 x 4: ~2x the training time (26 min on 2 cores, was 12).
    negatives: int = 7
    depth: int = 30  # first-stage candidates mined per query
    # Title → abstract groups from the corpus. 0 by default: on the val fold they cost fused nDCG@10
    # (400 titles: 0.764, none: 0.788, same steps and first stage); titles are an easier task than
    # claims, and the steps they take are steps the labelled queries do not get.
    titles: int = 0
    max_length: int = 112
    batch_groups: int = 8
    epochs: int = 1
    lr: float = 3e-4
    head_lr: float = 1e-2
    warmup: float = 0.1
    # A fixed number of optimisation steps (not a time budget): the same command and seed give the same
    # checkpoint on the same kind of CPU; across CPUs the mined groups are the same but the float kernels
    # sum in other orders (the default on an AMX Xeon and a Zen 4 EPYC: fused nDCG@10 0.801 and 0.815,
    # docs/speed.md). None: one pass over the mined groups per epoch.
    # 800: ~7.7 passes over the 833 query groups. On the val fold (pool 20, 20 per branch, DBSF 0.747)
    # 400 steps gave rerank alone 0.663-0.713 and fused 0.769-0.788 across seeds; 800 gave 0.720 / 0.793.
    steps: int | None = 800
    freeze_layers: int = 3  # bottom transformer layers kept fixed (with the embeddings): faster steps
    # Keep only the bottom N transformer layers of the base (None: all): a shallower reranker costs
    # N / all of the time per pair at inference (the layers are nearly all of it).
    layers: int | None = None
    # A trained reranker checkpoint whose scores the model also learns (listwise distillation): the
    # loss adds ``distill`` x KL(teacher's softmax over each group || the model's). None: labels only.
    teacher: str | None = None
    distill: float = 1.0
    val_pool: int = 20
    seed: int = 0
    # Members of a uniform model soup (mmrag.train.soup): the same training run with seeds seed,
    # seed+1, ..., their weights averaged into one model. 1: the plain run. Each member costs a run.
    soup: int = 1
    # Precision of the training forward and backward: "fp32", or "bf16" (torch CPU autocast: matrix
    # products in bfloat16, weights, optimizer and loss in fp32). On a 2-core AVX512-BF16 EPYC a step of
    # 8 x 8 pairs takes 2.0-2.3 s against 4.2-4.4 s. Calibration and the saved weights stay fp32.
    train_precision: str = "fp32"
    queries: int | None = None  # cap on training queries (smoke runs)
    val_queries: int | None = None  # cap on validation queries (smoke runs)
    docs: int | None = None  # corpus cap: the first N docs plus every judged doc (quick runs, the demo)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1 (or leave it out and give --epochs), got {self.steps}")
        if self.batch_groups < 1 or self.negatives < 1 or self.epochs < 1:
            raise ConfigError("batch_groups, negatives and epochs must be >= 1")
        if self.layers is not None and self.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {self.layers}")
        if self.distill < 0:
            raise ConfigError(f"distill must be >= 0, got {self.distill}")
        if self.soup < 1:
            raise ConfigError(f"soup must be >= 1 (members trained and averaged), got {self.soup}")
        if self.train_precision not in ("fp32", "bf16"):
            raise ConfigError(f"train precision must be fp32 or bf16, got {self.train_precision!r}")


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

    @staticmethod
    def total(runs: Sequence[FitStats]) -> FitStats:
        """The runs of a soup's members as one record: steps per member, groups and seconds summed,
        losses averaged over the members (one run: itself)."""
        if len(runs) == 1:
            return runs[0]
        n = len(runs)
        return FitStats(
            steps=runs[0].steps,
            planned_steps=runs[0].planned_steps,
            groups_seen=sum(r.groups_seen for r in runs),
            seconds=round(sum(r.seconds for r in runs), 1),
            loss_first10=sum(r.loss_first10 for r in runs) / n,
            loss_last10=sum(r.loss_last10 for r in runs) / n,
        )


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
    # The same three figures on the validation queries none of whose relevant docs is a training
    # positive: what the reranker does where it cannot have memorised the answer.
    unseen: Mapping[str, float] | None = None
    unseen_queries: int = 0
    # Two-fold cross-fitting: each half of the fold fused with the weight learned on the other half.
    # The fused figure above is tuned on the very queries it scores; this one is not.
    fused_crossfit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "weight": self.weight,
            "curve": dict(self.curve),
            "first_stage_ndcg@10": self.first_stage_ndcg,
            "rerank_only_ndcg@10": self.rerank_only_ndcg,
            "fused_ndcg@10": self.fused_ndcg,
            "fused_crossfit_ndcg@10": self.fused_crossfit,
            "queries": self.queries,
            "pool": self.pool,
        }
        if self.unseen is not None:
            out["unseen"] = {**self.unseen, "queries": self.unseen_queries}
        return out

    def table(self) -> str:
        """The validation table: each stage's nDCG@10 on the whole fold and on its unseen queries."""
        rows = [
            ("first stage (hybrid)", self.first_stage_ndcg, "first_stage_ndcg@10"),
            ("rerank alone", self.rerank_only_ndcg, "rerank_only_ndcg@10"),
            (f"fused (w={self.weight:.2f})", self.fused_ndcg, "fused_ndcg@10"),
        ]
        if self.fused_crossfit is not None:
            rows.append(("fused, cross-fitted", self.fused_crossfit, ""))
        unseen = self.unseen or {}
        head = f"{'nDCG@10, val fold':<24}{f'all {self.queries}':>10}{f'unseen {self.unseen_queries}':>12}"
        lines = [head]
        for name, value, key in rows:
            u = f"{unseen[key]:.4f}" if key in unseen else "-"
            lines.append(f"{name:<24}{value:>10.4f}{u:>12}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SoupMember:
    """One member of a soup: its seed, its training and its own validation figures (before averaging)."""

    seed: int
    fit: FitStats
    val: Calibration

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seconds": self.fit.seconds,
            "loss_last10": self.fit.loss_last10,
            "rerank_only_ndcg@10": self.val.rerank_only_ndcg,
            "fused_ndcg@10": self.val.fused_ndcg,
            "fused_crossfit_ndcg@10": self.val.fused_crossfit,
            "weight": self.val.weight,
        }

    def line(self) -> str:
        xfit = "-" if self.val.fused_crossfit is None else f"{self.val.fused_crossfit:.4f}"
        return (
            f"  seed {self.seed}: rerank alone {self.val.rerank_only_ndcg:.4f}, "
            f"fused {self.val.fused_ndcg:.4f} (w={self.val.weight:.2f}), cross-fitted {xfit}"
        )


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
    members: tuple[SoupMember, ...] = ()  # a soup's members, each alone (empty: one plain run)

    def to_dict(self) -> dict[str, Any]:
        out = {
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
        if self.members:
            out["soup"] = [m.to_dict() for m in self.members]
        return out

    def to_text(self) -> str:
        val, tr = self.val, self.fit
        soup = [f"a soup of {len(self.members)} members ({tr.steps} steps each), each alone on the val fold:"]
        return "\n".join(
            [
                f"checkpoint: {self.checkpoint} "
                f"({tr.steps} steps, {self.groups} groups mined, {tr.seconds} s)",
                f"loss {tr.loss_first10:.3f} -> {tr.loss_last10:.3f}",
                *(soup + [m.line() for m in self.members] if self.members else []),
                f"validation (pool {val.pool}; unseen = no relevant doc is a training positive):",
                val.table(),
                f"use it: mmrag model-set --reranker {self.checkpoint}   (then plain `mmrag search QUERY`)",
            ]
        )
