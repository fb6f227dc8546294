"""Head training on cached frozen-tower features: triplet (given / random / batch-hard / semi-hard
negatives) or InfoNCE, with early stopping on dev recall; the report (JSON, text, learning curve) is
:mod:`mmrag.train.reports`.

The heads trained here are the model's own ``text.proj`` and ``visual.head.proj`` layers, so the
encoder passed in is the trained model afterwards and :meth:`OpenClipEncoder.save` writes it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError
from mmrag.train.finetune import TrunkTop
from mmrag.train.heads import HardNegatives, LiteHeads, Pairs, caption_recall, recall_report
from mmrag.train.losses import Distance, InfoNCELoss, Strategy, TripletLoss
from mmrag.train.reports import HeadsReport
from mmrag.train.text import TextDev, TextTriplets
from mmrag.train.tower import DEVICES, resolve_device

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
# The records and modules live in mmrag.train.heads; importing them from here keeps working.
__all__ = [
    "HardNegatives",
    "LiteHeads",
    "Pairs",
    "TrainConfig",
    "caption_recall",
    "recall_report",
    "train_heads",
]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Head-training settings (the defaults are the measured best on Flickr8k dev; see the README).

    Attributes:
        loss: ``triplet`` or ``infonce`` (the CLIP baseline).
        strategy: Triplet negatives: ``given`` (a random other item of the train set, like the shipped
            triplet files), ``random`` (in batch), ``batch_hard`` (VSE++), ``semi_hard`` (FaceNet).
        margin: Triplet margin.
        distance: ``cosine`` or ``euclidean`` (on normalised embeddings).
        epochs: Maximum epochs (one epoch = every train image once, with one random caption).
        batch_size: Image-caption pairs per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        input_dropout: Dropout on the cached tower features (the main regulariser on 6k images).
        patience: Epochs without dev improvement before stopping.
        seed: Seeds torch and numpy.
        unfreeze_blocks: After the heads-only stage, also train the last ``n`` image-trunk blocks (and the
            trunk's head conv) on cached block inputs, BatchNorm frozen; 0 = heads only.
        unfreeze_epochs: Maximum epochs of that second stage.
        backbone_lr: Learning rate of the unfrozen blocks.
        unfreeze_head_lr: Learning rate of the heads in the second stage.
        unfreeze_dropout: Input dropout in the second stage (``None``: ``input_dropout``).
        lock_text: Keep the text head fixed (LiT-style "locked text"): the untrained lite text head is
            an isometry of MiniLM, so text→text search keeps MiniLM's quality exactly while the image
            head learns to map images into that space.
        augment_views: Views cached per train image for the unfrozen stage (1 = the clean one only;
            more adds random crops, flips and colour jitter: :mod:`mmrag.train.tower`).
        warmup_epochs: Epochs over which the unfrozen blocks' learning rate ramps up linearly from 0.
        device: ``auto`` (a CUDA GPU when one is visible), ``cpu`` or ``cuda``.
    """

    loss: Literal["triplet", "infonce"] = "triplet"
    strategy: Strategy = "semi_hard"
    margin: float = 0.2
    distance: Distance = "cosine"
    epochs: int = 60
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    input_dropout: float = 0.5
    patience: int = 6
    seed: int = 0
    lock_text: bool = True
    unfreeze_blocks: int = 0
    unfreeze_epochs: int = 8
    backbone_lr: float = 1e-4
    unfreeze_head_lr: float = 3e-4
    unfreeze_dropout: float | None = None
    augment_views: int = 1
    warmup_epochs: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.augment_views < 1 or self.warmup_epochs < 0:
            raise ConfigError("augment_views >= 1 and warmup_epochs >= 0 are required")
        if self.augment_views > 1 and not self.unfreeze_blocks:
            raise ConfigError("augmented views train unfrozen trunk blocks: add --unfreeze-blocks N")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.unfreeze_blocks < 0 or self.unfreeze_epochs < 1 or self.backbone_lr <= 0:
            raise ConfigError("unfreeze_blocks >= 0, unfreeze_epochs >= 1 and backbone_lr > 0 are required")
        if self.loss not in ("triplet", "infonce"):
            raise ConfigError(f"loss must be 'triplet' or 'infonce', got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.patience < 1:
            raise ConfigError("epochs >= 1, batch_size >= 2, lr > 0 and patience >= 1 are required")
        if not 0 <= self.input_dropout < 1 or not 0 <= (self.unfreeze_dropout or 0.0) < 1:
            raise ConfigError(
                f"input_dropout and unfreeze_dropout must be in [0, 1), got {self.input_dropout} "
                f"and {self.unfreeze_dropout}"
            )


def train_heads(
    encoder: OpenClipEncoder,
    train: Pairs,
    dev: Pairs,
    cfg: TrainConfig,
    *,
    hard_negatives: HardNegatives | None = None,
    text_triplets: TextTriplets | None = None,
    text_dev: TextDev | None = None,
    image_top: TrunkTop | None = None,
    start_competes: bool = True,
    progress: bool = True,
) -> HeadsReport:
    """Train the heads of ``encoder`` in place; returns the report (history, best dev metrics).

    The best epoch on dev (by t2i Recall@10, then rsum) is restored before returning. With
    ``hard_negatives`` (index-mined, one row per train caption) each step adds a triplet term whose
    negative is one of the caption's mined images, on top of the in-batch strategy.

    With ``text_triplets`` (joint run, needs ``lock_text=False``) each step also adds a text→text triplet
    term on a batch of (query, relevant doc, hard negative) rows, mined in-batch with ``cfg.strategy``;
    with ``text_dev`` its nDCG@10 is measured every epoch and the best epoch is chosen by
    t2i Recall@10 + nDCG@10, so neither side is traded away unseen.

    With ``image_top`` (see :mod:`mmrag.train.finetune`) ``train.images`` / ``dev.images`` are cached block
    inputs and those blocks train too, at ``cfg.backbone_lr``. The state before the first epoch competes
    with every epoch (unless ``start_competes=False``), so a stage that only makes dev worse leaves the
    model as it was.
    """
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = resolve_device(cfg.device)
    heads = LiteHeads(encoder, cfg.input_dropout, image_top).to(device).train()
    try:
        heads.text_proj.requires_grad_(not cfg.lock_text)
        loss_fn: nn.Module
        if cfg.loss == "infonce":
            loss_fn = InfoNCELoss(heads)
        else:
            loss_fn = TripletLoss(
                heads, margin=cfg.margin, distance=cfg.distance, strategy=cfg.strategy, seed=cfg.seed
            )
        loss_fn.to(device)
        if hard_negatives is not None:
            if cfg.loss != "triplet":
                raise ConfigError(
                    "index-mined hard negatives are used with the triplet loss (--loss triplet)"
                )
            if len(hard_negatives.index) != len(train.texts):
                raise ConfigError(
                    f"{len(hard_negatives.index)} hard-negative rows for {len(train.texts)} train captions"
                )
            mined_t = torch.from_numpy(hard_negatives.features).to(device)
        if text_triplets is not None and cfg.lock_text:
            raise ConfigError(
                "text triplets tune the text head: unlock it (lock_text=False, --train-text-head)"
            )
        top_ids = {id(p) for p in image_top.parameters()} if image_top is not None else set()
        params = [p for p in heads.parameters() if p.requires_grad and id(p) not in top_ids] + [
            p for n, p in loss_fn.named_parameters() if not n.startswith("model.")
        ]
        groups: list[dict[str, Any]] = [{"params": params}]
        if image_top is not None:
            groups.append(
                {"params": [p for p in image_top.parameters() if p.requires_grad], "lr": cfg.backbone_lr}
            )
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_images = train.n_images
        # A last batch of one is skipped below, so it is no step of the schedule either.
        bs = cfg.batch_size
        steps_per_epoch = max(1, sum(min(bs, n_images - s) >= 2 for s in range(0, n_images, bs)))
        schedule = _unfrozen_schedule(opt, cfg, steps_per_epoch) if image_top is not None else None
        captions_of = [np.flatnonzero(train.owners == i) for i in range(n_images)]
        images_t = torch.from_numpy(train.images).to(device)
        texts_t = torch.from_numpy(train.texts).to(device)

        def images_at(idx: npt.NDArray[np.int64]) -> Tensor:
            if not train.views:
                return images_t[idx]
            views = torch.from_numpy(rng.integers(len(images_t), size=len(idx)))
            return images_t[views, torch.from_numpy(idx)]

        def evaluate() -> dict[str, float]:
            metrics = recall_report(heads, dev)
            if text_dev is not None:
                heads.eval()
                metrics["text_ndcg@10"] = text_dev.ndcg(heads.text_proj)
                if text_dev.unseen:
                    metrics["text_ndcg@10_unseen_docs"] = text_dev.ndcg(heads.text_proj, only=text_dev.unseen)
                heads.train()
            return metrics

        def selection_key(m: dict[str, float]) -> tuple[float, float]:
            return (m["t2i_recall@10"] + m.get("text_ndcg@10", 0.0), m["rsum"])

        before = evaluate()
        best_key, best_epoch, stale = selection_key(before) if start_competes else (-1.0, -1.0), 0, 0
        best_state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
        history: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            order = rng.permutation(n_images)
            losses = []
            for start in tqdm(
                range(0, len(order), cfg.batch_size),
                desc=f"epoch {epoch}",
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
            ):
                img_idx = order[start : start + cfg.batch_size]
                if len(img_idx) < 2:
                    continue
                cap_idx = np.array([rng.choice(captions_of[i]) for i in img_idx])
                anchors, positives = texts_t[cap_idx], images_at(img_idx)
                if cfg.loss == "triplet" and cfg.strategy == "given":
                    shift = rng.integers(1, n_images, len(img_idx))
                    loss = loss_fn(anchors, positives, images_at((img_idx + shift) % n_images))
                else:
                    loss = loss_fn(anchors, positives)
                if hard_negatives is not None:
                    loss = loss + hard_negatives.weight * _mined_term(
                        heads, anchors, positives, mined_t, hard_negatives.index[cap_idx], cfg, rng
                    )
                if text_triplets is not None:
                    loss = loss + text_triplets.weight * _text_term(heads, text_triplets, cfg, rng)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                losses.append(float(loss.detach()))
            metrics = evaluate()
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(losses)),
                    **metrics,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            key = selection_key(metrics)
            if key > best_key:
                best_key, best_epoch, stale = key, epoch, 0
                best_state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
            else:
                stale += 1
            log.info("epoch %d loss %.4f dev %s", epoch, history[-1]["loss"], metrics)
            if stale >= cfg.patience:
                break
        heads.load_state_dict(best_state)
        heads.text_proj.requires_grad_(True)  # the lock was for this run only
        encoder.aligned = True
        return HeadsReport(
            config={**asdict(cfg), "device": str(device)},
            train={"images": n_images, "captions": len(train.texts)},
            dev={"images": dev.n_images, "captions": len(dev.texts)},
            dev_before=before,
            dev_best=history[best_epoch - 1] if best_epoch else {"epoch": 0, **before},
            best_epoch=best_epoch,
            epochs_run=len(history),
            train_seconds=round(time.perf_counter() - t0, 1),
            history=history,
        )
    finally:
        encoder.model.to("cpu")  # a checkpoint loads and serves on CPU, also after a failed run


def _unfrozen_schedule(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Unfrozen stage: cosine decay over ``cfg.epochs`` for heads and blocks; the blocks also warm up
    linearly over ``cfg.warmup_epochs`` (fresh gradients through pretrained blocks are large)."""
    total = cfg.epochs * steps_per_epoch
    warm = max(1, cfg.warmup_epochs * steps_per_epoch)

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    def blocks(step: int) -> float:
        return cosine(step) * (min(1.0, (step + 1) / warm) if cfg.warmup_epochs else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(opt, [cosine, blocks])


def _mined_term(
    heads: LiteHeads,
    anchors: Tensor,
    positives: Tensor,
    mined: Tensor,
    rows: npt.NDArray[np.int64],
    cfg: TrainConfig,
    rng: np.random.Generator,
) -> Tensor:
    """Triplet loss of each caption against one random index-mined negative image of its own."""
    pick = np.full(len(rows), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        valid = row[row >= 0]
        if len(valid):
            pick[i] = rng.choice(valid)
    keep = np.flatnonzero(pick >= 0)
    if len(keep) == 0:
        return anchors.new_zeros(())
    a = heads.embed_anchor(anchors[keep])
    p = heads.embed_positive(positives[keep])
    n = heads.embed_positive(mined[pick[keep]])
    return TripletLoss.loss_from_embeddings(a, p, n, cfg.margin, cfg.distance, "given")


def _text_term(heads: LiteHeads, tt: TextTriplets, cfg: TrainConfig, rng: np.random.Generator) -> Tensor:
    """Text→text triplet loss on a random batch of (query, relevant doc, hard negative) rows."""
    rows = rng.choice(len(tt.anchor), size=min(cfg.batch_size, len(tt.anchor)), replace=False)
    device = next(heads.parameters()).device
    q = torch.from_numpy(tt.queries[tt.anchor[rows]]).to(device)
    p = torch.from_numpy(tt.docs[tt.positive[rows]]).to(device)
    n = torch.from_numpy(tt.docs[tt.negative[rows]]).to(device)
    a, pe, ne = heads.embed_anchor(q), heads.embed_anchor(p), heads.embed_anchor(n)
    if cfg.strategy == "given":
        return TripletLoss.loss_from_embeddings(a, pe, ne, cfg.margin, cfg.distance, "given")
    return TripletLoss.loss_from_embeddings(
        a, pe, ne, cfg.margin, cfg.distance, cfg.strategy, positives_mask=tt.positives_mask(rows).to(device)
    )
