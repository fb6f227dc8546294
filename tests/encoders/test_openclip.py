"""The real open_clip path with a tiny random architecture registered from a JSON config."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmrag.encoders import DualEncoder, load_encoder, vector_name
from mmrag.encoders.openclip import OpenClipEncoder

TINY = "mmrag-tiny-test"
TINY_CFG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Register the tiny config with open_clip; the registry is restored afterwards.

    open_clip names a registered config after its file stem.
    """
    import open_clip
    import open_clip.factory as oc_factory

    path = tmp_path_factory.mktemp("oc") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(oc_factory, "_MODEL_CONFIG_PATHS", list(oc_factory._MODEL_CONFIG_PATHS))
        mp.setattr(oc_factory, "_MODEL_CONFIGS", dict(oc_factory._MODEL_CONFIGS))
        open_clip.add_model_config(path)
        assert TINY in open_clip.list_models()
        yield TINY


@pytest.fixture(scope="module")
def tiny(tiny_arch: str) -> OpenClipEncoder:
    return load_encoder(f"openclip:{tiny_arch}", batch_size=4)


def test_tiny_openclip_loads(tiny: OpenClipEncoder) -> None:
    assert isinstance(tiny, DualEncoder)
    assert tiny.dim == 16
    assert tiny.spec == f"openclip:{TINY}"
    assert tiny.id == vector_name(f"openclip:{TINY}") == "openclip-mmrag-tiny-test"
    # Random weights, no pretrained tag: nothing says image and text share a space.
    assert tiny.aligned is False
    assert tiny.batch_size == 4
    assert tiny.describe()["name"] == TINY


def test_tiny_openclip_encodes_text(tiny: OpenClipEncoder) -> None:
    # More texts than batch_size, one longer than the 16-token context (truncated, not an error).
    texts = ["hello", "a photo of a cat", "word " * 40, "", "x", "y"]
    emb = tiny.encode_text(texts)
    assert emb.shape == (len(texts), 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(tiny.encode_text(texts, batch_size=1), emb, atol=1e-5)


def test_tiny_openclip_encodes_images(tiny: OpenClipEncoder, tmp_path: Path) -> None:
    images = [Image.new("RGB", (50, 40), "red"), Image.new("L", (20, 90), 30)]
    path = tmp_path / "blue.png"
    Image.new("RGB", (33, 33), "blue").save(path)
    emb = tiny.encode_image([*images, path])
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with Image.open(path) as im:
        np.testing.assert_allclose(tiny.encode_image([im.copy()])[0], emb[2], atol=1e-6)


def test_tiny_pretrained_tag_that_does_not_exist(tiny_arch: str) -> None:
    from mmrag.errors import EncoderError

    with pytest.raises(EncoderError, match="no-such-tag"):
        load_encoder(f"openclip:{tiny_arch}/no-such-tag")


def test_tiny_checkpoint_round_trip(tiny: OpenClipEncoder, tmp_path: Path) -> None:
    tiny.save(tmp_path / "ckpt", model_cfg=TINY_CFG)
    again = load_encoder(str(tmp_path / "ckpt"))
    assert again.dim == 16
    assert again.id.startswith(vector_name(TINY) + "-")
    np.testing.assert_allclose(again.encode_text(["hello"]), tiny.encode_text(["hello"]), atol=1e-6)
    probe = [Image.new("RGB", (40, 40), "green")]
    np.testing.assert_allclose(again.encode_image(probe), tiny.encode_image(probe), atol=1e-6)
