"""Head training: recall math, feature cache, and a real (tiny) end-to-end training run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrag.errors import ConfigError
from mmrag.eval.metrics import recall_at_k
from mmrag.train.trainer import Pairs, TrainConfig, caption_recall
from tests.runtimes import running


def test_caption_recall_matches_the_generic_metric() -> None:
    rng = np.random.default_rng(0)
    owners = np.repeat(np.arange(20), 3)
    images = rng.normal(size=(20, 8)).astype(np.float32)
    texts = (images[owners] + rng.normal(scale=0.8, size=(60, 8))).astype(np.float32)
    got = caption_recall(texts, images, owners)
    sim = texts @ images.T
    t2i_run = {str(n): [str(j) for j in np.argsort(-sim[n])] for n in range(60)}
    t2i_qrels = {str(n): {str(o): 1} for n, o in enumerate(owners)}
    i2t_run = {str(i): [str(owners[n]) for n in np.argsort(-sim[:, i])] for i in range(20)}
    i2t_qrels = {str(i): {str(i): 1} for i in range(20)}
    for k in (1, 5, 10):
        assert got[f"t2i_recall@{k}"] == pytest.approx(recall_at_k(t2i_qrels, t2i_run, k))
        assert got[f"i2t_recall@{k}"] == pytest.approx(recall_at_k(i2t_qrels, i2t_run, k))
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    perfect = caption_recall(unit[owners], unit, owners)
    assert perfect["t2i_recall@1"] == 1.0 and perfect["i2t_recall@1"] == 1.0


def test_config_and_pairs_validation() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(loss="mse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TrainConfig(input_dropout=1.0)
    with pytest.raises(ConfigError):
        Pairs(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32), np.array([0, 1, 2]))


@pytest.mark.integration
def test_feature_cache_and_features_reproduce_the_encoder(tmp_path: Path, data_dir: Path) -> None:
    import torch

    from mmrag.encoders import cached_encoder
    from mmrag.encoders.bf16 import set_default_text_precision
    from mmrag.train.features import FeatureCache, text_features, tower_key

    enc = cached_encoder("lite")
    src = sorted((data_dir / "flickr8k" / "images").glob("*.jpg"))[:3]
    paths = [Path(shutil.copy(p, tmp_path / p.name)) for p in src]
    cache = FeatureCache(tmp_path / "cache", progress=False)
    key = tower_key(enc)
    feats = cache.images(enc, paths, towers=key)
    assert cache.misses == 1 and feats.shape == (3, 1280)
    np.testing.assert_array_equal(cache.images(enc, paths, towers=key), feats)
    assert cache.hits == 1
    shutil.copy(src[0], paths[1])  # a changed file is a new key
    cache.images(enc, paths, towers=key)
    assert cache.misses == 2
    # Each tower has its own key: a changed image trunk keeps the cached text features valid.
    trunk_param = next(enc.model.visual.trunk.parameters())
    saved = trunk_param.detach().clone()
    with torch.no_grad():
        trunk_param.add_(1.0)
    try:
        changed = tower_key(enc)
    finally:
        with torch.no_grad():
            trunk_param.copy_(saved)
    assert changed.text == key.text and changed.image != key.image
    assert tower_key(enc) == key
    texts = ["a dog runs on the beach", "two children play football"]
    tf = text_features(enc, texts, progress=False, precision="fp32")
    with torch.no_grad():
        heads_t = torch.nn.functional.normalize(enc.model.text.proj(torch.from_numpy(tf)), dim=-1).numpy()
        heads_i = torch.nn.functional.normalize(
            enc.model.visual.head(torch.from_numpy(feats)), dim=-1
        ).numpy()
    # fp32 text features are the encoder's own fp32 path (on bf16 hardware its texts run on a bf16 copy)
    with running(enc, "fp32"):
        fp32 = np.concatenate([enc.encode_text([t]) for t in texts])
    np.testing.assert_allclose(heads_t, fp32, atol=1e-5)
    np.testing.assert_allclose(heads_i[:1], enc.encode_image(paths[:1]), atol=1e-5)
    # The cache keys text features by precision: each precision is computed once, then loaded.
    before = cache.misses
    try:
        for precision in ("fp32", "bf16", "fp32", "bf16"):
            set_default_text_precision(precision)
            got = cache.texts(enc, texts, towers=key)
            cos = (got * tf).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(tf, axis=1)
            assert cos.min() > 0.999
            if precision == "fp32":
                np.testing.assert_allclose(got, tf, atol=1e-6)
    finally:
        set_default_text_precision("auto")
    assert cache.misses == before + 2


@pytest.mark.integration
def test_text_features_run_in_onnx_runtime_and_match_torch(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import torch

    from mmrag.encoders import cached_encoder
    from mmrag.encoders.onnxrt import ort_available
    from mmrag.train import features
    from mmrag.train.features import PooledText, text_features

    if not ort_available():
        pytest.skip("onnxruntime is not installed")
    enc = cached_encoder("lite")
    features._POOLED.pop(enc, None)  # an earlier test may have made this encoder's export
    texts = ["a dog", "two children play football on a sandy beach near the water", "x " * 40]
    with caplog.at_level(logging.DEBUG, logger="mmrag.encoders.onnxrt"):
        got = text_features(enc, texts, batch_size=2, progress=False, precision="fp32")
        again = text_features(enc, texts[::-1], batch_size=2, progress=False, precision="fp32")
    # exported once for both calls (it was once per call: ~1 s per feature-cache miss)
    assert caplog.text.count("text tower (features): ONNX Runtime session ready") == 1
    np.testing.assert_allclose(again[::-1], got, atol=1e-6)
    with torch.inference_mode():  # the texts are in length order: the batches are (0, 1) and (2,)
        ref = np.concatenate(
            [PooledText(enc.model.text).eval()(enc.tokenizer(texts[i : i + 2])).numpy() for i in (0, 2)]
        )
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # The bf16 copy (the default on CPUs with bf16 instructions): the same features within cosine
    # 0.999 (its own check), and the same every time.
    half = text_features(enc, texts, batch_size=2, progress=False, precision="bf16")
    assert features._POOLED_BF16[enc].usable() and features._POOLED_BF16[enc].traced
    cos = (half * ref).sum(1) / np.linalg.norm(half, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999 and np.abs(half - ref).max() > 0  # really another path
    np.testing.assert_array_equal(
        text_features(enc, texts, batch_size=2, progress=False, precision="bf16"), half
    )


@pytest.mark.integration
def test_tiny_training_run_writes_a_loadable_aligned_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    from mmrag.encoders import load_encoder
    from mmrag.train.run import train_image_caption

    cfg = TrainConfig(epochs=3, batch_size=16, patience=3, strategy="batch_hard")
    out = tmp_path / "ckpt"
    report = train_image_caption(
        data_dir / "flickr8k", out, cfg, cache_dir=tmp_path / "cache", limit=40, progress=False
    )
    assert report.heads.epochs_run == 3 and 1 <= report.heads.best_epoch <= 3
    assert report.heads.train == {"images": 40, "captions": 200}
    saved = json.loads((out / "training_report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))  # the file is the report's JSON
    assert (out / "training_report.json").exists() and (out / "learning_curve.png").stat().st_size > 1000
    assert json.loads((out / "mmrag.json").read_text())["aligned"] is True
    # fp32 batches: the report's dev score came from fp32 features (training never uses the bf16 copy)
    enc = load_encoder(str(out), text_precision="fp32")
    assert enc.aligned and enc.id.startswith("lite-") and enc.id != "lite-untrained-v1"
    # The text head is locked by default: text embeddings are exactly the untrained lite's (MiniLM's).
    from mmrag.encoders import cached_encoder

    base = cached_encoder("lite")
    with running(base, "fp32"):  # as `enc`: on bf16 hardware a lone text runs on a bf16 copy
        np.testing.assert_allclose(
            enc.encode_text(["a dog on grass"]), base.encode_text(["a dog on grass"]), atol=1e-6
        )
    # The checkpoint reproduces the best dev score the report claims.
    from mmrag.eval.datasets import ImageCaptionDataset

    ds = ImageCaptionDataset.load(data_dir / "flickr8k", "dev", limit=40)
    t = enc.encode_text([c for caps in ds.captions for c in caps])
    i = enc.encode_image(list(ds.images))
    owners = np.repeat(np.arange(40), 5)
    assert caption_recall(t, i, owners)["t2i_recall@10"] == pytest.approx(
        report.heads.dev_best["t2i_recall@10"], abs=1e-3
    )
    # Rerun: the features come from the cache.
    again = train_image_caption(
        data_dir / "flickr8k", tmp_path / "ckpt2", cfg, cache_dir=tmp_path / "cache", limit=40, progress=False
    )
    assert again.feature_cache["misses"] == 0 and again.feature_cache["hits"] == 4
