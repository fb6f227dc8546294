"""What head training works on: the cached-feature records (:class:`Pairs`, :class:`HardNegatives`),
the trained modules (:class:`LiteHeads`, optionally over unfrozen trunk blocks) and dev recall by exact
search (:func:`caption_recall`, :func:`recall_report`). The loop itself is :mod:`mmrag.train.trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError
from mmrag.eval.metrics import flickr_recall
from mmrag.train.finetune import TrunkTop
from mmrag.train.lite import check_lite

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Pairs:
    """Cached features of an image-caption split: ``owners[i]`` is the image of caption ``i``.

    With ``views`` the first axis of ``images`` is the view (clean first, then augmented ones).
    """

    images: npt.NDArray[np.floating[Any]]  # pooled features, or cached block inputs when unfreezing
    texts: F32
    owners: npt.NDArray[np.int64]
    views: bool = False

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.owners):
            raise ConfigError(f"{len(self.texts)} caption features but {len(self.owners)} owners")
        if len(self.owners) and (self.owners.min() < 0 or self.owners.max() >= self.n_images):
            raise ConfigError("caption owners must index the images")

    @property
    def n_images(self) -> int:
        return int(self.images.shape[1] if self.views else len(self.images))

    @property
    def clean(self) -> Pairs:
        """The same pairs with only the clean view of each image."""
        return Pairs(self.images[0], self.texts, self.owners) if self.views else self


@dataclass(frozen=True, slots=True)
class HardNegatives:
    """Negatives mined from an index for each train caption (see :mod:`mmrag.train.closed_loop`).

    ``features`` holds the tower features of every mined image; ``index[n]`` lists rows of ``features``
    that are hard negatives of caption ``n`` (``-1`` pads the rows that found fewer).
    """

    features: F32
    index: npt.NDArray[np.int64]
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.index.ndim != 2:
            raise ConfigError(f"hard-negative index must be (captions, k), got shape {self.index.shape}")
        if self.index.size and self.index.max() >= len(self.features):
            raise ConfigError("hard-negative index points past the mined features")
        if self.weight <= 0:
            raise ConfigError(f"hard-negative weight must be > 0, got {self.weight}")


class LiteHeads(nn.Module):
    """The lite model's projection heads over cached features: anchors = texts, positives = images."""

    def __init__(
        self, encoder: OpenClipEncoder, input_dropout: float, image_top: TrunkTop | None = None
    ) -> None:
        super().__init__()
        check_lite(encoder)
        self.text_proj: nn.Module = encoder.model.text.proj
        self.image_proj: nn.Module = encoder.model.visual.head.proj
        self.image_top = image_top
        self.drop = nn.Dropout(input_dropout)

    def train(self, mode: bool = True) -> LiteHeads:
        super().train(mode)
        if self.image_top is not None:
            self.image_top.freeze_batchnorm()
        return self

    def embed_anchor(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.text_proj(self.drop(x)), dim=-1)

    def embed_positive(self, x: Tensor) -> Tensor:
        if self.image_top is not None:
            x = self.image_top(x.float())
        return nn.functional.normalize(self.image_proj(self.drop(x)), dim=-1)


def caption_recall(
    texts: F32, images: F32, owners: npt.NDArray[np.int64], ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Flickr-protocol recall from normalised embeddings: caption ``n`` belongs to image ``owners[n]``.

    text→image: each caption a query, its image the one relevant item; image→text: each image a query,
    a hit when any of its captions is in the top k. Ranks come from exact search over the embeddings;
    the recall itself is :func:`mmrag.eval.metrics.flickr_recall`, as in ``mmrag eval`` and the closed loop.
    """
    sim = texts @ images.T  # (captions, images)
    correct = sim[np.arange(len(texts)), owners]
    t2i_rank = (sim > correct[:, None]).sum(axis=1)
    i2t_rank = np.full(len(images), len(texts))
    for n, owner in enumerate(owners):
        col = sim[:, owner]
        i2t_rank[owner] = min(i2t_rank[owner], int((col > col[n]).sum()))
    return flickr_recall(t2i_rank.tolist(), i2t_rank.tolist(), ks)


def recall_report(heads: LiteHeads, dev: Pairs) -> dict[str, float]:
    """Dev recall of the current heads, by exact search over the head embeddings."""
    heads.eval()
    dev = dev.clean
    device = next(heads.parameters()).device
    with torch.inference_mode():
        t = heads.embed_anchor(torch.from_numpy(dev.texts).to(device)).cpu().numpy()
        i = np.concatenate(
            [
                heads.embed_positive(
                    torch.from_numpy(np.ascontiguousarray(dev.images[s : s + 256])).to(device)
                )
                .cpu()
                .numpy()
                for s in range(0, len(dev.images), 256)
            ]
        )
    heads.train()
    return caption_recall(t, i, dev.owners)
