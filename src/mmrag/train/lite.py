"""What cached-feature training needs of an encoder: the lite layout (timm trunk + HF text tower).

Its own module so that :mod:`mmrag.train.features` and :mod:`mmrag.train.finetune` both import it
without importing each other (features → finetune → lite, no cycle).
"""

from __future__ import annotations

from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import ConfigError

__all__ = ["check_lite"]


def check_lite(encoder: OpenClipEncoder) -> None:
    """Head training on cached features needs the lite layout (timm trunk + HF text tower).

    Raises:
        ConfigError: If ``encoder`` has no timm image trunk with a linear head, or no HF text tower
            with a linear projection.
    """
    model = encoder.model
    ok = hasattr(model, "visual") and hasattr(model.visual, "trunk") and hasattr(model.visual.head, "proj")
    ok = ok and hasattr(model, "text") and hasattr(model.text, "transformer") and hasattr(model.text, "proj")
    if not ok:
        raise ConfigError(
            f"encoder {encoder.id!r} is not a lite-family model (timm image trunk + HF text tower with "
            "linear heads); cached-feature head training supports `lite` and `lite:efficientnet_lite2`"
        )
