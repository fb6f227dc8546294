"""``load_encoder`` spec parsing and errors, plus the shared helpers in ``mmrag.encoders.base``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from mmrag.encoders import l2_normalize, load_encoder, set_threads, vector_name
from mmrag.encoders.openclip import CONFIG_FILE, MMRAG_FILE, WEIGHTS_FILE
from mmrag.errors import EncoderError, MmragError

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# -- specs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty encoder spec"),
        ("   ", "empty encoder spec"),
        ("nonsense-spec", "unknown encoder spec 'nonsense-spec'"),
        ("openclip:", "missing architecture"),
        ("openclip:/laion2b", "missing architecture"),
        ("hf-hub:", "missing repository"),
        ("lite:efficientnet_b7", "unknown lite image tower"),
    ],
)
def test_bad_specs_raise_encoder_error(spec: str, message: str) -> None:
    with pytest.raises(EncoderError, match=message) as err:
        load_encoder(spec)
    assert isinstance(err.value, MmragError)


def test_bad_spec_message_lists_the_accepted_forms() -> None:
    with pytest.raises(EncoderError) as err:
        load_encoder("nonsense-spec")
    for form in ("'lite'", "openclip:", "hf-hub:", "checkpoint directory"):
        assert form in str(err.value)


def test_a_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"\0")
    with pytest.raises(EncoderError, match="not a directory"):
        load_encoder(str(f))


def test_unknown_open_clip_architecture() -> None:
    with pytest.raises(EncoderError, match="no-such-arch"):
        load_encoder("openclip:no-such-arch")


def test_hf_hub_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants
    import open_clip  # noqa: F401 - imported before timing: the import alone takes seconds

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; the env var alone comes too late here.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(EncoderError, match="someorg/does-not-exist"):
        load_encoder("hf-hub:someorg/does-not-exist")
    assert time.perf_counter() - start < 10


def test_negative_threads_rejected() -> None:
    with pytest.raises(EncoderError, match="threads"):
        set_threads(-1)
    with pytest.raises(EncoderError, match="threads"):
        load_encoder("nonsense-spec", threads=-2)


def test_zero_threads_keeps_torch_default() -> None:
    import torch

    before = torch.get_num_threads()
    set_threads(0)
    assert torch.get_num_threads() == before


# -- broken checkpoints -------------------------------------------------------------------------
def _checkpoint_dir(path: Path, weights: bytes | None = None) -> Path:
    (path / CONFIG_FILE).write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    (path / MMRAG_FILE).write_text(json.dumps({"format": "mmrag-encoder", "version": 1, "name": "tiny"}))
    if weights is not None:
        (path / WEIGHTS_FILE).write_bytes(weights)
    return path


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    _checkpoint_dir(tmp_path)
    save_file({"not.a.clip.weight": torch.zeros(3)}, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(EncoderError, match="do not fit"):
        load_encoder(str(tmp_path))


def test_config_without_model_cfg(tmp_path: Path) -> None:
    _checkpoint_dir(tmp_path, weights=b"")
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"preprocess_cfg": {}}))
    with pytest.raises(EncoderError, match="malformed"):
        load_encoder(str(tmp_path))


def test_corrupt_weights_file_raises_encoder_error(tmp_path: Path) -> None:
    _checkpoint_dir(tmp_path, weights=b"this is not a safetensors file" * 4)
    with pytest.raises(EncoderError, match="corrupt"):
        load_encoder(str(tmp_path))


# -- helpers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoder_id", "expected"),
    [
        ("openclip:ViT-B-32/openai", "openclip-vit-b-32-openai"),
        ("lite-untrained-v1", "lite-untrained-v1"),
        ("hf-hub:org/Repo_Name.v2", "hf-hub-org-repo_name.v2"),
        ("  Spaces  and  CAPS  ", "spaces-and-caps"),
        ("/home/me/ckpt dir/", "home-me-ckpt-dir"),
        ("???", "default"),
        ("", "default"),
        ("é-ünïcode", "n-code"),
    ],
)
def test_vector_name(encoder_id: str, expected: str) -> None:
    assert vector_name(encoder_id) == expected


def test_vector_name_is_bounded_and_safe() -> None:
    name = vector_name("openclip:" + "x" * 200)
    assert len(name) == 64
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_.-")
    assert vector_name(name) == name  # idempotent on its own output


def test_l2_normalize_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1e-3, 0.0], [1e6, 1e6]], dtype=np.float64)
    out = l2_normalize(x)
    assert out.dtype == np.float32 and out.shape == (4, 2)
    np.testing.assert_allclose(out[0], [0.6, 0.8], atol=1e-7)
    # A zero row stays zero instead of becoming NaN.
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    np.testing.assert_allclose(out[2], [-1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(out[[0, 2, 3]], axis=1), 1.0, atol=1e-6)
    assert np.all(np.isfinite(out))


def test_l2_normalize_empty_and_already_unit() -> None:
    assert l2_normalize(np.zeros((0, 8))).shape == (0, 8)
    rng = np.random.default_rng(0)
    unit = l2_normalize(rng.standard_normal((5, 8)))
    np.testing.assert_allclose(l2_normalize(unit), unit, atol=1e-7)
