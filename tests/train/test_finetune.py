"""Unfreezing the top of the image trunk: the split is exact, BatchNorm stays frozen, the run is real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrag.encoders import load_encoder
from mmrag.errors import ConfigError
from mmrag.train.finetune import TrunkBottom, TrunkTop, pooled_from_blocks
from mmrag.train.run import train_image_caption
from mmrag.train.trainer import TrainConfig


def test_bottom_then_top_is_the_trunk() -> None:
    enc = load_encoder("lite")
    trunk = enc.model.visual.trunk.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        whole = trunk(x)
        for n in (1, 3):
            top = TrunkTop(trunk, n)
            split = top(TrunkBottom(trunk, n)(x))
            assert torch.allclose(whole, split, atol=1e-5)
        blocks16 = TrunkBottom(trunk, 1)(x).to(torch.float16).numpy()
    np.testing.assert_allclose(pooled_from_blocks(TrunkTop(trunk, 1), blocks16), whole.numpy(), atol=0.05)
    with pytest.raises(ConfigError):
        TrunkTop(trunk, 0)
    with pytest.raises(ConfigError):
        TrainConfig(unfreeze_blocks=-1)


@pytest.mark.integration
def test_unfreeze_run_trains_only_the_top_and_keeps_batchnorm(tmp_path: Path, data_dir: Path) -> None:
    base = load_encoder("lite")
    trunk0 = {k: v.clone() for k, v in base.model.visual.trunk.state_dict().items()}
    cfg = TrainConfig(
        epochs=2, patience=2, batch_size=16, unfreeze_blocks=1, unfreeze_epochs=2, backbone_lr=1e-2
    )
    report = train_image_caption(
        data_dir / "flickr8k", tmp_path / "ckpt", cfg, limit=24, cache_dir=tmp_path / "cache", progress=False
    )
    assert report.stage1 is not None and report.heads.config["unfreeze_blocks"] == 1
    assert "stage1" in report.to_dict() and "config" not in report.to_dict()["stage1"]
    assert report.feature_cache["misses"] == 4  # block inputs + captions, train and dev
    trained = load_encoder(str(tmp_path / "ckpt")).model.visual.trunk.state_dict()
    last = f"blocks.{len(base.model.visual.trunk.blocks) - 1}."
    for key, before in trunk0.items():
        after = trained[key]
        if "running_" in key or "num_batches" in key or ".bn" in key or key.startswith("bn"):
            assert torch.equal(before, after), f"BatchNorm {key} changed"
        elif not (key.startswith(last) or key.startswith("conv_head")):
            assert torch.equal(before, after), f"frozen weight {key} changed"
    saved = json.loads((tmp_path / "ckpt" / "training_report.json").read_text())
    assert saved["stage1"]["dev_best"]["t2i_recall@10"] <= saved["dev_best"]["t2i_recall@10"] + 1e-9
