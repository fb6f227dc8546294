"""`mmrag train`: train the heads of a lite encoder on an image-caption dataset, write a checkpoint."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mmrag.encoders import load_encoder
from mmrag.errors import ConfigError
from mmrag.eval.datasets import ImageCaptionDataset
from mmrag.train.features import FeatureCache, TowerKeys, tower_key
from mmrag.train.finetune import TrunkTop, pooled_from_blocks
from mmrag.train.reports import TrainingReport, write_report
from mmrag.train.text import scifact_text_data
from mmrag.train.tower import NO_AUGMENT, Augment
from mmrag.train.trainer import Pairs, TrainConfig, train_heads


def _split(root: Path, split: str, limit: int | None) -> tuple[ImageCaptionDataset, list[str], Any]:
    ds = ImageCaptionDataset.load(root, split, limit=limit)
    captions = [c for caps in ds.captions for c in caps]
    owners = np.array([i for i, caps in enumerate(ds.captions) for _ in caps], dtype=np.int64)
    return ds, captions, owners


def dataset_pairs(
    encoder: Any, cache: FeatureCache, towers: TowerKeys, root: Path, split: str, limit: int | None = None
) -> Pairs:
    """Cached features of one split of an image-caption dataset."""
    ds, captions, owners = _split(root, split, limit)
    return Pairs(
        images=cache.images(encoder, list(ds.images), towers=towers),
        texts=cache.texts(encoder, captions, towers=towers),
        owners=owners,
    )


def block_pairs(
    encoder: Any,
    cache: FeatureCache,
    towers: TowerKeys,
    root: Path,
    split: str,
    top: TrunkTop,
    limit: int | None,
    augment: Augment = NO_AUGMENT,
    seed: int = 0,
) -> tuple[Pairs, Pairs]:
    """(pooled pairs, block-input pairs) of one split: both from the one block-input cache. With more
    than one ``augment`` view the block-input pairs hold every view (the pooled ones the clean view)."""
    ds, captions, owners = _split(root, split, limit)
    views = cache.block_views(encoder, list(ds.images), len(top.blocks), augment, seed=seed, towers=towers)
    texts = cache.texts(encoder, captions, towers=towers)
    pooled = Pairs(pooled_from_blocks(top, views[0]), texts, owners)
    if augment.views == 1:
        return pooled, Pairs(views[0], texts, owners)
    return pooled, Pairs(views, texts, owners, views=True)


def train_image_caption(
    root: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    base: str = "lite",
    cache_dir: Path | None = None,
    train_split: str = "train",
    dev_split: str = "dev",
    limit: int | None = None,
    text_beir: Path | None = None,
    text_triplets: Path | None = None,
    text_weight: float = 1.0,
    progress: bool = True,
) -> TrainingReport:
    """Extract (or load cached) tower features, train the heads, save checkpoint + report to ``out``.

    With ``text_beir`` + ``text_triplets`` (e.g. SciFact and its train triplets) the text head is tuned
    on the train fold in the same run and the report carries nDCG@10 on the held-out val fold.

    Returns the training report with the checkpoint path, the feature-cache hits and wall times
    (``to_dict()`` is ``training_report.json``).
    """
    t0 = time.perf_counter()
    encoder = load_encoder(base)  # a fresh model: training changes its heads in place
    cache = FeatureCache(cache_dir or Path(".cache") / "features", progress=progress)
    towers = tower_key(encoder)
    top = train_blocks = dev_blocks = None
    if cfg.unfreeze_blocks:
        top = TrunkTop(encoder.model.visual.trunk, cfg.unfreeze_blocks)
        augment = Augment(views=cfg.augment_views)  # views=1 equals NO_AUGMENT
        train, train_blocks = block_pairs(
            encoder, cache, towers, root, train_split, top, limit, augment, cfg.seed
        )
        dev, dev_blocks = block_pairs(encoder, cache, towers, root, dev_split, top, limit)
    else:
        train = dataset_pairs(encoder, cache, towers, root, train_split, limit)
        dev = dataset_pairs(encoder, cache, towers, root, dev_split, limit)
    text_train = text_dev = None
    if (text_beir is None) != (text_triplets is None):
        raise ConfigError("joint text tuning needs both a BEIR folder and its triplets file")
    if text_beir is not None and text_triplets is not None:
        text_train, text_dev = scifact_text_data(
            encoder, cache, towers, text_beir, text_triplets, weight=text_weight
        )
    t_features = time.perf_counter() - t0
    report = train_heads(
        encoder, train, dev, cfg, text_triplets=text_train, text_dev=text_dev, progress=progress
    )
    stage1 = None
    if top is not None and train_blocks is not None and dev_blocks is not None:
        stage2_cfg = replace(
            cfg,
            lr=cfg.unfreeze_head_lr,
            epochs=cfg.unfreeze_epochs,
            patience=min(cfg.patience, cfg.unfreeze_epochs),
            input_dropout=cfg.input_dropout if cfg.unfreeze_dropout is None else cfg.unfreeze_dropout,
        )
        stage2 = train_heads(
            encoder,
            train_blocks,
            dev_blocks,
            stage2_cfg,
            text_triplets=text_train,
            text_dev=text_dev,
            image_top=top,
            progress=progress,
        )
        # The whole run starts where stage 1 started and lasts both stages.
        stage1, report = (
            report,
            replace(
                stage2,
                dev_before=report.dev_before,
                train_seconds=round(report.train_seconds + stage2.train_seconds, 1),
            ),
        )
    encoder.save(
        out,
        model_cfg=encoder.info["model_cfg"],
        extra={"training": {**report.summary(), "dataset": str(root), "base": base}},
    )
    result = TrainingReport(
        heads=report,
        stage1=stage1,
        checkpoint=str(out.resolve()),
        base=base,
        dataset=str(root),
        text_dataset=str(text_beir) if text_beir else None,
        text_triplets=len(text_train.anchor) if text_train else 0,
        feature_cache={"hits": cache.hits, "misses": cache.misses, "seconds": round(t_features, 1)},
        wall_seconds=round(time.perf_counter() - t0, 1),
    )
    write_report(result, out)
    return result
