"""Fine-tuning the image tower on augmented views: seeded views, worker decoding, views in training,
the device choice and the ``--recipe`` presets."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrag.encoders import load_encoder
from mmrag.errors import ConfigError, EncoderError
from mmrag.eval.datasets import ImageCaptionDataset
from mmrag.train.features import FeatureCache, tower_key
from mmrag.train.finetune import block_input_features
from mmrag.train.recipes import RECIPES, recipe_options
from mmrag.train.run import train_image_caption
from mmrag.train.tower import Augment, ImageViews, resolve_device, view_block_inputs
from mmrag.train.trainer import Pairs, TrainConfig


def test_augment_and_config_validation() -> None:
    for bad in ({"views": 0}, {"scale": (0.0, 1.0)}, {"scale": (0.9, 0.5)}, {"flip": 1.5}, {"jitter": 1.0}):
        with pytest.raises(ConfigError):
            Augment(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TrainConfig(augment_views=0)
    with pytest.raises(ConfigError):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="unfreeze-blocks"):  # views only feed unfrozen blocks
        TrainConfig(augment_views=4)
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_unfrozen_schedule_warms_the_blocks_up_then_decays_both_to_zero() -> None:
    from mmrag.train.trainer import _unfrozen_schedule

    heads, blocks = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [heads]}, {"params": [blocks], "lr": 1e-3}], lr=1e-2)
    cfg = TrainConfig(epochs=4, warmup_epochs=1, unfreeze_blocks=1)
    schedule = _unfrozen_schedule(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        opt.step()
        schedule.step()
    assert lrs[0][0] == pytest.approx(1e-2) and lrs[0][1] == pytest.approx(1e-4)  # heads: no warm-up
    assert all(b2 > b1 for (_, b1), (_, b2) in pairwise(lrs[:10]))  # blocks ramp up
    assert all(h2 < h1 and b2 < b1 for (h1, b1), (h2, b2) in pairwise(lrs[10:]))  # then both decay
    assert lrs[-1][0] < 1e-2 * 0.01 and lrs[-1][1] < 1e-3 * 0.01
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_views_pairs_index_images_on_the_second_axis() -> None:
    views = np.zeros((3, 4, 2), dtype=np.float32)
    pairs = Pairs(views, np.zeros((8, 2), dtype=np.float32), np.repeat(np.arange(4), 2), views=True)
    assert pairs.n_images == 4 and pairs.clean.images.shape == (4, 2) and not pairs.clean.views
    with pytest.raises(ConfigError):  # images are counted on axis 1 (4), not axis 0 (3 views)
        Pairs(views, np.zeros((1, 2), dtype=np.float32), np.array([4]), views=True)


def test_views_are_seeded_per_image_and_view(data_dir: Path) -> None:
    enc = load_encoder("lite")
    paths = list(ImageCaptionDataset.load(data_dir / "flickr8k", "dev", limit=3).images)
    aug = Augment(views=3)
    a = ImageViews(paths, enc.preprocess, aug, aug.transform(enc), seed=0)
    b = ImageViews(paths, enc.preprocess, aug, aug.transform(enc), seed=0)
    c = ImageViews(paths, enc.preprocess, aug, aug.transform(enc), seed=1)
    idx, views = a[1]
    assert idx == 1 and views.shape == (3, 3, enc.input_size, enc.input_size)
    assert torch.equal(views, b[1][1])  # same seed: the same views, whatever ran before
    assert torch.equal(views[0], c[1][1][0])  # view 0 is the clean preprocessing, never augmented
    assert not torch.equal(views[1], c[1][1][1]) and not torch.equal(views[1], views[2])
    from PIL import Image

    with Image.open(paths[1]) as im:
        assert torch.equal(views[0], enc.preprocess(im.convert("RGB")))
    with pytest.raises(EncoderError, match="cannot read image"):
        ImageViews([data_dir / "not-there.jpg"], enc.preprocess, aug, aug.transform(enc), seed=0)[0]


@pytest.mark.integration
def test_view_block_inputs_workers_agree_and_view0_is_the_clean_cache(tmp_path: Path, data_dir: Path) -> None:
    enc = load_encoder("lite")
    paths = list(ImageCaptionDataset.load(data_dir / "flickr8k", "dev", limit=5).images)
    aug = Augment(views=2)
    in_proc = view_block_inputs(enc, paths, 2, aug, seed=3, workers=0, batch_size=2, progress=False)
    workers = view_block_inputs(enc, paths, 2, aug, seed=3, workers=2, batch_size=2, progress=False)
    assert in_proc.shape[:2] == (2, 5) and in_proc.dtype == np.float16
    np.testing.assert_array_equal(in_proc, workers)  # decoding in worker processes changes nothing
    clean = block_input_features(enc, paths, 2, progress=False)
    np.testing.assert_allclose(in_proc[0].astype(np.float32), clean.astype(np.float32), atol=2e-2)
    cache = FeatureCache(tmp_path / "cache", progress=False)
    first = cache.block_views(enc, paths, 2, aug, seed=3, towers=tower_key(enc))
    again = cache.block_views(enc, paths, 2, aug, seed=3, towers=tower_key(enc))
    other_seed = cache.block_views(enc, paths, 2, aug, seed=4, towers=tower_key(enc))
    assert (cache.misses, cache.hits) == (2, 1)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[0], other_seed[0])
    assert not np.array_equal(first[1], other_seed[1])


@pytest.mark.integration
def test_augmented_unfreeze_run_is_reproducible_and_records_device(tmp_path: Path, data_dir: Path) -> None:
    cfg = TrainConfig(
        epochs=1,
        patience=1,
        batch_size=8,
        unfreeze_blocks=2,
        unfreeze_epochs=2,
        backbone_lr=1e-2,
        augment_views=2,
        device="cpu",
    )
    reports = []
    for run in ("a", "b"):
        reports.append(
            train_image_caption(
                data_dir / "flickr8k",
                tmp_path / run,
                cfg,
                limit=16,
                cache_dir=tmp_path / "cache",
                progress=False,
            )
        )
    a, b = reports
    assert a.heads.config["device"] == "cpu" and a.heads.config["augment_views"] == 2
    assert a.heads.train == {"images": 16, "captions": 80}
    assert b.feature_cache["hits"] >= 3  # the second run reads every view from the cache
    assert [h["loss"] for h in a.heads.history] == [h["loss"] for h in b.heads.history]
    wa = (tmp_path / "a" / "open_clip_model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "open_clip_model.safetensors").read_bytes()  # same seed, same model
    saved = json.loads((tmp_path / "a" / "training_report.json").read_text())
    assert saved["config"]["device"] == "cpu"
    assert load_encoder(str(tmp_path / "a")).aligned


def test_recipes_are_train_options() -> None:
    fields = set(TrainConfig.__dataclass_fields__)
    for name, recipe in RECIPES.items():
        assert set(recipe["options"]) <= fields, name
        TrainConfig(**recipe_options(name))  # every preset is a valid config
    assert recipe_options(None) == {}
    assert recipe_options("quality")["unfreeze_blocks"] >= 1
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe_options("best")


@pytest.mark.integration
def test_cli_recipe_sets_the_tower_options_and_explicit_options_win(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmrag.cli import main

    argv = ["train", "--dataset", str(data_dir / "flickr8k"), "--limit", "8", "--epochs", "1"]
    argv += ["--train-batch", "8", "--cache", str(tmp_path / "cache"), "--json", "--device", "cpu"]
    argv += ["--recipe", "quality", "--unfreeze-epochs", "1", "--augment-views", "2"]
    assert main([*argv, "--out", str(tmp_path / "ckpt")]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    quality = recipe_options("quality")
    assert config["unfreeze_blocks"] == quality["unfreeze_blocks"]
    assert config["backbone_lr"] == quality["backbone_lr"]
    assert (config["unfreeze_epochs"], config["augment_views"], config["device"]) == (1, 2, "cpu")
    assert load_encoder(str(tmp_path / "ckpt")).aligned
