"""Unfreezing the top of the image trunk: cache the features at the input of the last ``n`` blocks once,
then train those blocks (BatchNorm frozen, a low learning rate) together with the heads.

The trunk is split into a frozen *bottom* (stem and every block but the last ``n``), whose output is
cached per image like the pooled features are, and a trainable *top* (the last ``n`` blocks, the
1×1 head convolution, its BatchNorm and the global pool). ``top(cached)`` equals ``trunk(image)``
exactly, so the pooled features of the first (heads-only) stage come from the same cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from mmrag.encoders.onnxrt import FastForward
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError
from mmrag.train.lite import check_lite

F16 = npt.NDArray[np.float16]
F32 = npt.NDArray[np.float32]


def trunk_blocks(trunk: Any) -> list[nn.Module]:
    """The trunk's blocks, first to last (an EfficientNet-style timm trunk's stages, flattened)."""
    if not (hasattr(trunk, "blocks") and hasattr(trunk, "conv_head") and hasattr(trunk, "conv_stem")):
        raise ConfigError("unfreezing needs an EfficientNet-style timm trunk (conv_stem, blocks, conv_head)")
    return [block for stage in trunk.blocks for block in stage]


class TrunkTop(nn.Module):
    """The last ``n`` blocks of the trunk plus its head conv, BatchNorm and pool (shared, not copied)."""

    def __init__(self, trunk: Any, n_blocks: int) -> None:
        super().__init__()
        blocks = trunk_blocks(trunk)
        if not 1 <= n_blocks <= len(blocks):
            raise ConfigError(f"unfreeze_blocks must be in 1..{len(blocks)}, got {n_blocks}")
        self.blocks = nn.ModuleList(blocks[-n_blocks:])
        self.conv_head, self.bn2, self.global_pool = trunk.conv_head, trunk.bn2, trunk.global_pool

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.global_pool(self.bn2(self.conv_head(x)))
        return out

    def freeze_batchnorm(self) -> None:
        """BatchNorm statistics and affine parameters stay as pretrained (small batches, few images)."""
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                m.requires_grad_(False)


class TrunkBottom(nn.Module):
    """Everything of the trunk below :class:`TrunkTop`: stem, first BatchNorm, the other blocks."""

    def __init__(self, trunk: Any, n_blocks: int) -> None:
        super().__init__()
        blocks = trunk_blocks(trunk)
        self.stem = nn.Sequential(trunk.conv_stem, trunk.bn1)
        self.blocks = nn.Sequential(*blocks[: len(blocks) - n_blocks])

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.blocks(self.stem(x))
        return out


def block_input_features(
    encoder: OpenClipEncoder,
    paths: Sequence[Path],
    n_blocks: int,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> F16:
    """The input of the last ``n_blocks`` blocks for every image, ``(images, C, H, W)`` in float16."""
    from tqdm import tqdm

    check_lite(encoder)
    bottom = FastForward(
        TrunkBottom(encoder.model.visual.trunk, n_blocks).eval(),
        runtime=encoder.image_forward.runtime,
        name="frozen trunk blocks",
        spin=False,  # image_batches' decoding threads share the cores
    )
    out: list[F16] = []
    with (
        torch.inference_mode(),
        tqdm(
            total=len(paths), desc="block features", unit="img", disable=not progress, dynamic_ncols=True
        ) as bar,
    ):
        for _, batch in encoder.image_batches(list(paths), batch_size):
            out.append(bottom(batch).to(torch.float16).numpy())
            bar.update(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 0), dtype=np.float16)


def pooled_from_blocks(top: TrunkTop, feats: F16, batch_size: int = 256) -> F32:
    """Pooled trunk features from cached block inputs through the (frozen) top: ``trunk(image)``."""
    was_training = top.training
    top.eval()
    parts: list[F32] = []
    with torch.inference_mode():
        for start in range(0, len(feats), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(feats[start : start + batch_size])).float()
            parts.append(top(x).numpy())
    top.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
