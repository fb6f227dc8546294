"""mmrag checkpoint directories: save → ``load_encoder(<dir>)`` round trip and broken directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.encoders import load_encoder
from mmrag.encoders.lite import LITE_ID
from mmrag.encoders.openclip import CONFIG_FILE, MMRAG_FILE, WEIGHTS_FILE, OpenClipEncoder
from mmrag.errors import EncoderError

TEXTS = ["a red bicycle leaning on a wall", "two children play football on the beach"]


@pytest.fixture(scope="module")
def checkpoint(lite: OpenClipEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lite.save(tmp_path_factory.mktemp("lite") / "ckpt", model_cfg=lite.info["model_cfg"])


@pytest.fixture(scope="module")
def reloaded(checkpoint: Path) -> OpenClipEncoder:
    return load_encoder(str(checkpoint))


def test_save_writes_open_clip_layout(checkpoint: Path) -> None:
    assert {p.name for p in checkpoint.iterdir()} >= {CONFIG_FILE, WEIGHTS_FILE, MMRAG_FILE}
    cfg = json.loads((checkpoint / CONFIG_FILE).read_text())
    assert cfg["model_cfg"]["embed_dim"] == 512
    # Machine-specific paths are written as placeholders, not this machine's MiniLM folder.
    assert cfg["model_cfg"]["text_cfg"]["hf_model_name"] == "@minilm"
    meta = json.loads((checkpoint / MMRAG_FILE).read_text())
    assert meta["name"] == "lite" and meta["aligned"] is False
    assert meta["tokenizer"]["name"] == "@minilm"


def test_round_trip_gives_identical_embeddings(
    lite: OpenClipEncoder, reloaded: OpenClipEncoder, image_paths: list[Path]
) -> None:
    assert reloaded.dim == lite.dim == 512
    np.testing.assert_allclose(reloaded.encode_text(TEXTS), lite.encode_text(TEXTS), atol=1e-6)
    np.testing.assert_allclose(
        reloaded.encode_image(image_paths[:1]), lite.encode_image(image_paths[:1]), atol=1e-6
    )
    probe = Image.new("RGB", (80, 50), (240, 200, 30))
    np.testing.assert_allclose(reloaded.encode_image([probe]), lite.encode_image([probe]), atol=1e-6)


def test_round_trip_identity(lite: OpenClipEncoder, reloaded: OpenClipEncoder, checkpoint: Path) -> None:
    assert reloaded.id.startswith("lite-")
    assert reloaded.id != LITE_ID
    assert reloaded.aligned is False
    assert Path(reloaded.spec) == checkpoint.resolve()
    # The id is derived from the weights, so loading the same directory twice gives the same id.
    assert load_encoder(reloaded.spec).id == reloaded.id
    info = reloaded.describe()
    assert info["checkpoint"] == str(checkpoint.resolve())
    assert info["preprocess_cfg"] == lite.info["preprocess_cfg"]


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, CONFIG_FILE, MMRAG_FILE])
def test_incomplete_checkpoint_names_the_missing_file(tmp_path: Path, missing: str) -> None:
    for name in (WEIGHTS_FILE, CONFIG_FILE, MMRAG_FILE):
        if name != missing:
            (tmp_path / name).write_text("{}")
    with pytest.raises(EncoderError, match=missing.replace(".", r"\.")):
        load_encoder(str(tmp_path))


def test_empty_directory_lists_every_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EncoderError) as err:
        load_encoder(str(tmp_path))
    for name in (WEIGHTS_FILE, CONFIG_FILE, MMRAG_FILE):
        assert name in str(err.value)


def test_malformed_config_raises_encoder_error(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("{not json")
    (tmp_path / MMRAG_FILE).write_text("{}")
    (tmp_path / WEIGHTS_FILE).write_bytes(b"")
    with pytest.raises(EncoderError, match="malformed"):
        load_encoder(str(tmp_path))
