"""The stored text tower (:mod:`mmrag.encoders.query_tower`): same embeddings as the torch tower, keyed
by what the spec loads, and the full encoder behind everything but text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from tests.runtimes import running

from mmrag.encoders.openclip import CONFIG_FILE, MMRAG_FILE, WEIGHTS_FILE, OpenClipEncoder
from mmrag.encoders.query_tower import (
    CACHE_ENV,
    MODEL_FILE,
    PROBES,
    QueryTower,
    open_tower,
    remember,
    spec_key,
)

QUERIES = [
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "what is dense passage retrieval",
    "a dog",
]


@pytest.fixture
def stored(lite: OpenClipEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = remember(lite)
    assert folder is not None and folder.parent == tmp_path / "cache"
    return folder


def test_stored_tower_gives_the_torch_towers_tokens_and_embeddings(
    lite: OpenClipEncoder, stored: Path
) -> None:
    calls: list[int] = []
    tower = open_tower("lite", threads=1, full=lambda: calls.append(1) or lite)  # type: ignore[func-returns-value]
    assert isinstance(tower, QueryTower) and tower.folder == stored
    assert (tower.id, tower.dim, tower.spec, tower.aligned) == (lite.id, lite.dim, lite.spec, lite.aligned)
    texts = [*PROBES, *QUERIES]
    for text in texts:
        assert tower.token_ids([text])[0] == lite.tokenizer([text or " "])[0].tolist(), text
    with running(lite, "fp32"):  # the reference: the full encoder in fp32 (bf16 hardware: bf16)
        ref = np.concatenate([lite.encode_text([t]) for t in texts])
    got = tower.encode_text(texts)  # one padded batch, in another order than given
    assert got.shape == (len(texts), lite.dim) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(got * ref, axis=1))) >= 0.9999
    assert calls == []  # text never loads the full encoder
    assert remember(lite) is None  # stored already: not written again
    with pytest.raises(TypeError):
        tower.encode_text("one string")  # type: ignore[arg-type]


def test_everything_but_text_goes_to_the_full_encoder(
    lite: OpenClipEncoder, stored: Path, image_paths: list[Path]
) -> None:
    calls: list[int] = []

    def full() -> OpenClipEncoder:
        calls.append(1)
        return lite

    tower = open_tower("lite", threads=1, full=full)
    assert tower is not None
    assert tower.describe()["query_tower"] == str(stored)
    assert tower.describe()["parameters"] == lite.describe()["parameters"]  # recorded when stored
    assert calls == []
    np.testing.assert_allclose(tower.encode_image(image_paths), lite.encode_image(image_paths), atol=1e-6)
    assert tower.input_size == lite.input_size  # any other attribute: the full encoder's
    assert calls == [1]  # loaded once


def _checkpoint(folder: Path, kind: str = "hf") -> Path:
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text("{}")
    (folder / WEIGHTS_FILE).write_bytes(b"w" * 10)
    (folder / MMRAG_FILE).write_text(json.dumps({"name": "lite", "tokenizer": {"kind": kind}}))
    return folder


def test_key_changes_with_what_the_spec_loads(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "ckpt")
    key = spec_key(str(ckpt))
    assert key is not None and key == spec_key(str(ckpt)) and key != spec_key("lite")
    assert spec_key("lite") != spec_key("lite:efficientnet_lite2")
    assert spec_key("lite:efficientnet_lite0") == spec_key(" lite")  # one model, one entry
    (ckpt / WEIGHTS_FILE).write_bytes(b"w" * 11)  # retrained in place
    assert spec_key(str(ckpt)) not in {key, None}
    # open_clip's own tokenizers, hub models and anything that is not a whole checkpoint: not stored
    assert spec_key(str(_checkpoint(tmp_path / "oc", kind="open_clip"))) is None
    assert spec_key("openclip:ViT-B-32/laion2b_s34b_b79k") is None
    assert spec_key("hf-hub:org/repo") is None
    (ckpt / CONFIG_FILE).unlink()
    assert spec_key(str(ckpt)) is None


def test_cache_off_and_a_broken_entry(
    lite: OpenClipEncoder, stored: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full() -> OpenClipEncoder:
        return lite

    (stored / MODEL_FILE).write_bytes(b"not an onnx model")
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.query_tower"):
        assert open_tower("lite", threads=1, full=full) is None
    assert "unreadable" in caplog.text
    assert remember(lite) == stored  # the broken entry was dropped, so it is stored again
    assert open_tower("lite", threads=1, full=full) is not None
    monkeypatch.setenv(CACHE_ENV, "off")
    assert open_tower("lite", threads=1, full=full) is None
    assert remember(lite) is None


def test_a_tower_that_fails_its_check_is_not_tried_again(
    lite: OpenClipEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mmrag.encoders import onnxrt, query_tower

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(query_tower, "PARITY_MIN", 1.5)  # no tower can pass
    with caplog.at_level(logging.WARNING, logger="mmrag.encoders.disk_cache"):
        assert remember(lite) is None
    assert "cosine" in caplog.text and "not stored for fast searches" in caplog.text
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f".{spec_key('lite')}.failed"]

    def no_export(*a: object, **k: object) -> bytes:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnxrt, "export_onnx", no_export)
    assert remember(lite) is None and open_tower("lite", full=lambda: lite) is None
