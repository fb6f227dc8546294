"""Encoders: the ``DualEncoder`` protocol and one factory, :func:`load_encoder`.

Spec strings:
    ``lite``                           the built default (EfficientNet-Lite0 + MiniLM), untrained heads
    ``lite:efficientnet_lite2``        the same family with the Lite2 image tower
    ``openclip:<arch>/<pretrained>``   any open_clip architecture and pretrained tag (tag optional)
    ``hf-hub:<org>/<repo>``            an open_clip model on the Hugging Face hub
    ``<directory>``                    a checkpoint written by mmrag (``mmrag train``)
"""

from __future__ import annotations

from mmrag.encoders.base import DualEncoder, l2_normalize, vector_name, vector_spec
from mmrag.encoders.factory import cached_encoder, load_encoder, set_threads

__all__ = [
    "DualEncoder",
    "cached_encoder",
    "l2_normalize",
    "load_encoder",
    "set_threads",
    "vector_name",
    "vector_spec",
]
