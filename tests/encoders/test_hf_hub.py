"""`hf-hub:<repo>` through open_clip's real hub loading, served offline from a local HF cache.

No hub is reachable here, so the test lays out a Hugging Face cache (models--org--repo/snapshots/
<rev>/...) holding a tiny random open_clip model; huggingface_hub in offline mode resolves it from
there exactly as it would a downloaded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrag.encoders import load_encoder

REPO_ID = "mmrag-test/tiny-clip"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hf_constants
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)  # type: ignore[arg-type]
    revision = "0" * 40
    repo = tmp_path / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    cfg = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (snapshot / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(snapshot / "open_clip_model.safetensors"),
    )
    # huggingface_hub reads these at import; patch the module constants it consults per call.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hf_hub_spec_loads_from_the_cache(hub_cache: Path) -> None:
    enc = load_encoder(f"hf-hub:{REPO_ID}")
    assert enc.dim == 16 and enc.id == "hf-hub-mmrag-test-tiny-clip" and enc.spec == f"hf-hub:{REPO_ID}"
    text = enc.encode_text(["a photo of a cat", "a diagram"])
    image = enc.encode_image([Image.new("RGB", (40, 40), (10, 200, 30))])
    assert text.shape == (2, 16) and image.shape == (1, 16)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([text, image]), axis=1), 1.0, atol=1e-5)
    assert enc.info["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5]
    assert enc.info["tokenizer"]["context_length"] == 16


def test_hf_hub_weights_are_the_cached_ones(hub_cache: Path) -> None:
    import open_clip
    import torch

    torch.manual_seed(0)
    reference = open_clip.CLIP(**TINY_CFG).eval()  # type: ignore[arg-type]
    enc = load_encoder(f"hf-hub:{REPO_ID}")
    tokens = open_clip.get_tokenizer(f"hf-hub:{REPO_ID}")(["a photo of a cat"])
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode_text(["a photo of a cat"]), want, atol=1e-5)
