"""What head training returns: typed reports that render themselves as JSON and as text.

``to_dict()`` is the JSON written to ``training_report.json`` / ``closed_loop.json`` and printed by
``mmrag train --json`` (keys and their order unchanged); ``to_text()`` is what ``mmrag train`` prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ClosedLoopReport",
    "HeadsReport",
    "LoopOutcome",
    "TrainingReport",
    "plot_curve",
    "write_report",
]

_T2I = ("t2i_recall@1", "t2i_recall@5", "t2i_recall@10")
_I2T = ("i2t_recall@1", "i2t_recall@5", "i2t_recall@10")


@dataclass(frozen=True, slots=True)
class HeadsReport:
    """One head-training run (:func:`mmrag.train.trainer.train_heads`).

    Attributes:
        config: The :class:`~mmrag.train.trainer.TrainConfig` as a dict.
        train: ``{"images", "captions"}`` counts of the train split.
        dev: The same counts of the dev split.
        dev_before: Dev metrics before the first epoch.
        dev_best: The history row of the best epoch (``{"epoch": 0, **dev_before}`` when none won).
        best_epoch: 1-based best epoch; 0 when the starting state stayed best.
        epochs_run: Epochs trained before early stopping.
        train_seconds: Wall time of the epochs.
        history: One row per epoch: ``epoch``, ``loss``, the dev metrics, ``seconds``.

    Example:
        >>> r = HeadsReport({}, {}, {}, {"rsum": 1.0}, {"epoch": 0, "rsum": 1.0}, 0, 0, 0.0, [])
        >>> list(r.to_dict())[:3]
        ['config', 'train', 'dev']
    """

    config: Mapping[str, Any]
    train: Mapping[str, int]
    dev: Mapping[str, int]
    dev_before: Mapping[str, float]
    dev_best: Mapping[str, Any]
    best_epoch: int
    epochs_run: int
    train_seconds: float
    history: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "train": dict(self.train),
            "dev": dict(self.dev),
            "dev_before": dict(self.dev_before),
            "dev_best": dict(self.dev_best),
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_seconds": self.train_seconds,
            "history": list(self.history),
        }

    def summary(self) -> dict[str, Any]:
        """The part a checkpoint keeps in its ``mmrag.json`` (``training``)."""
        d = self.to_dict()
        return {k: d[k] for k in ("config", "dev_before", "dev_best", "best_epoch", "train_seconds")}


@dataclass(frozen=True, slots=True)
class TrainingReport:
    """``mmrag train``: the heads run (stage 2 when blocks were unfrozen), the checkpoint and timings.

    Attributes:
        heads: The final stage's run; after unfreezing, its ``dev_before`` is stage 1's and its
            ``train_seconds`` the sum of both stages.
        stage1: The heads-only stage when blocks were unfrozen (its JSON leaves out ``config``).
        checkpoint: Resolved checkpoint folder.
        base: Encoder spec trained from.
        dataset: Image-caption dataset folder.
        text_dataset: BEIR folder of the joint text tuning, if any.
        text_triplets: Text triplets used (0 without joint tuning).
        feature_cache: ``{"hits", "misses", "seconds"}`` of the feature cache.
        wall_seconds: Wall time of the whole run.

    Example:
        >>> report = train_image_caption(root, out, TrainConfig())          # doctest: +SKIP
        >>> print(report.to_text())                                        # doctest: +SKIP
    """

    heads: HeadsReport
    stage1: HeadsReport | None
    checkpoint: str
    base: str
    dataset: str
    text_dataset: str | None
    text_triplets: int
    feature_cache: Mapping[str, Any]
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        out = self.heads.to_dict()
        if self.stage1 is not None:
            out["stage1"] = {k: v for k, v in self.stage1.to_dict().items() if k != "config"}
        out.update(
            {
                "checkpoint": self.checkpoint,
                "base": self.base,
                "dataset": self.dataset,
                "text_dataset": self.text_dataset,
                "text_triplets": self.text_triplets,
                "feature_cache": dict(self.feature_cache),
                "wall_seconds": self.wall_seconds,
            }
        )
        return out

    def to_text(self) -> str:
        h = self.heads
        best, before = h.dev_best, h.dev_before
        keys: tuple[str, ...] = (*_T2I, *_I2T)
        lines = [
            f"checkpoint: {self.checkpoint} (best epoch {h.best_epoch} of {h.epochs_run})",
            f"features: {dict(self.feature_cache)} ; training {h.train_seconds} s; "
            f"wall {self.wall_seconds} s",
        ]
        if "text_ndcg@10" in best:
            keys = (*keys, "text_ndcg@10")
        lines += [f"{k:>16}: {before[k]:.4f} -> {best[k]:.4f}" for k in keys]
        lines.append(f"use it: mmrag ingest PATH --model {self.checkpoint}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class LoopOutcome:
    """The closed loop's decision (``closed_loop.json``).

    Attributes:
        store: Store location.
        old_vector: The default vector before the run.
        new_vector: The vector the trained encoder wrote.
        old: Store recall of the old vector (:func:`~mmrag.train.closed_loop.store_recall`).
        new: Store recall of the new vector.
        switched: Whether the default vector moved to the new one.
        reason: Why (the numbers compared).
        default_vector: The store's default vector after the run.
        mining: Mining counts and the mined term's weight.
        reembed: Re-embedding counts and time.
        transductive_note: What the mining saw of the store.

    Example:
        >>> report.closed_loop.switched                                     # doctest: +SKIP
        True
    """

    store: str
    old_vector: str
    new_vector: str
    old: Mapping[str, Any]
    new: Mapping[str, Any]
    switched: bool
    reason: str
    default_vector: str | None
    mining: Mapping[str, Any]
    reembed: Mapping[str, Any]
    transductive_note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "old_vector": self.old_vector,
            "new_vector": self.new_vector,
            "old": dict(self.old),
            "new": dict(self.new),
            "switched": self.switched,
            "reason": self.reason,
            "default_vector": self.default_vector,
            "mining": dict(self.mining),
            "reembed": dict(self.reembed),
            "transductive_note": self.transductive_note,
        }


@dataclass(frozen=True, slots=True)
class ClosedLoopReport:
    """``mmrag train --from-store``: the heads run on mined negatives and the store's decision.

    Attributes:
        heads: The head-training run.
        checkpoint: Resolved checkpoint folder of the new encoder.
        base: Encoder spec trained from.
        dataset: Labelled image-caption dataset folder.
        closed_loop: The decision and its numbers.
        wall_seconds: Wall time of the whole loop.

    Example:
        >>> report = closed_loop(store, root, out, TrainConfig())           # doctest: +SKIP
        >>> print(report.to_text())                                        # doctest: +SKIP
    """

    heads: HeadsReport
    checkpoint: str
    base: str
    dataset: str
    closed_loop: LoopOutcome
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.heads.to_dict(),
            "checkpoint": self.checkpoint,
            "base": self.base,
            "dataset": self.dataset,
            "closed_loop": self.closed_loop.to_dict(),
            "wall_seconds": self.wall_seconds,
        }

    def to_text(self) -> str:
        loop = self.closed_loop
        lines = [
            f"checkpoint: {self.checkpoint}",
            f"mined: {dict(loop.mining)}",
            f"re-embedded: {dict(loop.reembed)}",
            f"old vector {loop.old_vector} vs new vector {loop.new_vector} "
            f"({loop.new['queries']} dev captions over {loop.new['images_in_store']} stored images):",
        ]
        lines += [f"{k:>16}: {loop.old[k]:.4f} -> {loop.new[k]:.4f}" for k in _T2I]
        lines.append(
            ("switched the default vector: " if loop.switched else "kept the default vector: ") + loop.reason
        )
        return "\n".join(lines)


def plot_curve(report: Mapping[str, Any], path: Path) -> Path:
    """Learning curve PNG: train loss and dev Recall@1/10 per epoch."""
    from mmrag._lazy import require

    matplotlib = require("matplotlib", "train")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "train")
    hist = report["history"]
    epochs = [h["epoch"] for h in hist]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(epochs, [h["loss"] for h in hist], marker="o")
    ax[0].set(title="train loss", xlabel="epoch")
    for key in ("t2i_recall@1", "t2i_recall@10", "i2t_recall@1", "i2t_recall@10"):
        ax[1].plot(epochs, [h[key] for h in hist], marker=".", label=key)
    ax[1].axvline(report["best_epoch"], color="grey", linestyle="--", linewidth=1)
    ax[1].set(title="dev recall", xlabel="epoch")
    ax[1].legend()
    cfg = report["config"]
    fig.suptitle(
        f"{cfg['loss']} {cfg['strategy'] if cfg['loss'] == 'triplet' else ''} margin {cfg['margin']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(report: TrainingReport | ClosedLoopReport, directory: Path) -> None:
    """``training_report.json`` and ``learning_curve.png`` into ``directory``."""
    data = report.to_dict()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "training_report.json").write_text(json.dumps(data, indent=2))
    plot_curve(data, directory / "learning_curve.png")
