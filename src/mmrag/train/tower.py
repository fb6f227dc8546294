"""Fine-tuning the image tower itself: augmented views of every train image, decoded and augmented in
worker processes, pushed once through the frozen bottom of the trunk and cached; the unfrozen top
blocks then train on a random view per image at every step (see :mod:`mmrag.train.finetune`).

View 0 of every image is the clean (evaluation) preprocessing; views 1.. are random resized crops,
horizontal flips and colour jitter (train time only). Every view is seeded by ``(seed, image, view)``,
so the same command gives the same views in any worker and the same model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from mmrag.encoders.onnxrt import FastForward
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError, EncoderError
from mmrag.train.finetune import TrunkBottom
from mmrag.train.lite import check_lite

F16 = npt.NDArray[np.float16]
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, slots=True)
class Augment:
    """Train-time image augmentation (``views - 1`` augmented views per image besides the clean one).

    Attributes:
        views: Views cached per train image, the clean one included (1 = no augmentation).
        scale: Area range of the random resized crop.
        flip: Probability of a horizontal flip.
        jitter: Brightness / contrast / saturation jitter strength (hue gets a quarter of it).
    """

    views: int = 4
    scale: tuple[float, float] = (0.5, 1.0)
    flip: float = 0.5
    jitter: float = 0.3

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ConfigError(f"views must be >= 1, got {self.views}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"crop scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0 <= self.flip <= 1 or not 0 <= self.jitter < 1:
            raise ConfigError("flip must be in [0, 1] and jitter in [0, 1)")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def transform(self, encoder: OpenClipEncoder) -> Callable[[Any], Tensor]:
        """The augmenting transform, with the encoder's input size and normalisation."""
        from torchvision import transforms as T

        pcfg = encoder.info.get("preprocess_cfg", {})
        size = encoder.input_size
        steps: list[Any] = [
            T.RandomResizedCrop(size, scale=self.scale, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(self.flip),
        ]
        if self.jitter:
            steps.append(T.ColorJitter(self.jitter, self.jitter, self.jitter, self.jitter / 4))
        steps += [T.ToTensor(), T.Normalize(pcfg["mean"], pcfg["std"])]
        return T.Compose(steps)  # type: ignore[no-any-return]


NO_AUGMENT = Augment(views=1)


class ImageViews(torch.utils.data.Dataset[tuple[int, Tensor]]):
    """``(index, (views, 3, H, W))`` per image: the clean view, then seeded augmented ones.

    Runs inside DataLoader worker processes; every view reseeds torch from ``(seed, index, view)``.
    """

    def __init__(
        self, paths: Sequence[Path], clean: Callable[[Any], Tensor], augment: Augment, aug_tf: Any, seed: int
    ) -> None:
        self.paths, self.clean, self.aug_tf = list(paths), clean, aug_tf
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor]:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as im:
                img = im.convert("RGB")
        except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
            raise EncoderError(f"cannot read image {self.paths[i]}: {exc}") from exc
        views = [self.clean(img)]
        for v in range(1, self.augment.views):
            torch.manual_seed(_view_seed(self.seed, i, v))
            views.append(self.aug_tf(img))
        return i, torch.stack(views)


def _view_seed(seed: int, index: int, view: int) -> int:
    digest = hashlib.sha256(f"{seed}/{index}/{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def view_block_inputs(
    encoder: OpenClipEncoder,
    paths: Sequence[Path],
    n_blocks: int,
    augment: Augment,
    *,
    seed: int = 0,
    workers: int = 2,
    batch_size: int = 32,
    progress: bool = True,
) -> F16:
    """Input of the last ``n_blocks`` trunk blocks for every view of every image: ``(views, N, C, H, W)``.

    Decoding and augmentation run in ``workers`` processes (0 = in this process) while the frozen bottom
    of the trunk runs here, in ONNX Runtime when it matches torch (like every other image path).
    """
    from tqdm import tqdm

    check_lite(encoder)
    bottom = FastForward(
        TrunkBottom(encoder.model.visual.trunk, n_blocks).eval(),
        runtime=encoder.image_forward.runtime,
        name="frozen trunk blocks",
        spin=False,  # the DataLoader's workers share the cores
    )
    data = ImageViews(paths, encoder.preprocess, augment, augment.transform(encoder), seed)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, num_workers=workers, persistent_workers=False
    )
    out: F16 | None = None
    with (
        torch.inference_mode(),
        tqdm(
            total=len(paths) * augment.views,
            desc=f"block features ×{augment.views} views",
            unit="view",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar,
    ):
        for idx, batch in loader:
            n, v = batch.shape[:2]
            feats = bottom(batch.flatten(0, 1)).to(torch.float16).numpy()
            feats = feats.reshape(n, v, *feats.shape[1:]).swapaxes(0, 1)
            if out is None:
                out = np.zeros((v, len(paths), *feats.shape[2:]), dtype=np.float16)
            out[:, idx.numpy()] = feats
            bar.update(n * v)
    return out if out is not None else np.zeros((augment.views, 0, 0, 0, 0), dtype=np.float16)


def resolve_device(device: str) -> torch.device:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is a clear error."""
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch (use --device cpu or auto)")
    return torch.device(device)
