"""The stored cross-encoder (:mod:`mmrag.rerank.stored`): the fp32 torch reranker's pairs, logits and
order from ONNX Runtime, keyed by the files it loads, never in the way when missing or broken."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmrag.encoders.query_tower import CACHE_ENV
from mmrag.errors import ConfigError
from mmrag.rerank import CrossEncoderReranker
from mmrag.rerank.stored import (
    MODEL_FILE,
    StoredReranker,
    open_stored_reranker,
    remember_reranker,
    reranker_key,
)
from mmrag.types import Chunk, Hit
from tests.rerank.test_cross_encoder import DOCS as BASE_DOCS
from tests.rerank.test_cross_encoder import QUERY

DOCS = [*BASE_DOCS, "Ünïcödé café — naïve façade 東京"]


@pytest.fixture(scope="module")
def rr() -> Iterator[CrossEncoderReranker]:
    yield CrossEncoderReranker(None, max_length=64, batch_size=2, precision="fp32")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _hits(texts: list[str]) -> list[Hit]:
    return [
        Hit(Chunk(str(i), "text", f"s{i}", t, None), 0.5 - i / 100, None, None, None, i + 1, i + 1)
        for i, t in enumerate(texts)
    ]


def test_stored_reranker_scores_and_orders_as_the_fp32_model(rr: CrossEncoderReranker, cache: Path) -> None:
    folder = remember_reranker(rr)
    assert folder is not None and folder.parent == cache
    assert remember_reranker(rr) is None  # stored already
    stored = open_stored_reranker(str(rr.source), threads=1, max_length=rr.max_length)
    assert isinstance(stored, StoredReranker)
    assert (stored.id, stored.meta, stored.untrained) == (rr.id, rr.meta, rr.untrained)
    assert stored.encode_pairs([QUERY] * len(DOCS), DOCS) == rr.encode_pairs([QUERY] * len(DOCS), DOCS)
    np.testing.assert_allclose(stored.score(QUERY, DOCS), rr.score(QUERY, DOCS), atol=1e-4)
    want, got = rr.rerank(QUERY, _hits(DOCS)), stored.rerank(QUERY, _hits(DOCS))
    assert [h.chunk.id for h in got] == [h.chunk.id for h in want]
    assert [h.final_rank for h in got] == [1, 2, 3, 4, 5]
    # rr's max_length=64 was this process's choice: others get the reranker's own default, as in full
    default = open_stored_reranker(str(rr.source), threads=1)
    assert default is not None and default.max_length == 256
    short = open_stored_reranker(str(rr.source), threads=1, max_length=16)
    full16 = CrossEncoderReranker(None, max_length=16, precision="fp32")
    assert short is not None and short.encode_pairs([QUERY] * 3, DOCS[:3]) == full16.encode_pairs(
        [QUERY] * 3, DOCS[:3]
    )
    with pytest.raises(ConfigError):
        open_stored_reranker(str(rr.source), max_length=4)
    assert folder.is_dir()  # a bad argument is the caller's error, not a broken entry
    # fusion weights given (a store's model set) replace the checkpoint's
    weighted = open_stored_reranker(str(rr.source), threads=1, fusion_weights={"text": 0.9})
    assert weighted is not None and weighted.fusion.weights == {"text": 0.9}


def test_a_bf16_reranker_is_stored_as_its_fp32_model(rr: CrossEncoderReranker, cache: Path) -> None:
    bf16 = CrossEncoderReranker(None, max_length=64, precision="bf16")
    assert remember_reranker(bf16) is not None
    stored = open_stored_reranker(str(rr.source), threads=1, max_length=64)
    assert stored is not None and stored.precision == "fp32"
    np.testing.assert_allclose(stored.score(QUERY, DOCS), rr.score(QUERY, DOCS), atol=1e-4)


def test_key_follows_the_reranker_files(tmp_path: Path) -> None:
    folder = tmp_path / "rr"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 8)
    key = reranker_key(str(folder))
    assert key is not None and key == reranker_key(str(folder))
    (folder / "model.safetensors").write_bytes(b"x" * 9)  # retrained in place
    assert reranker_key(str(folder)) not in {key, None}
    key = reranker_key(str(folder))
    st = (folder / "model.safetensors").stat()
    (folder / "tmp").write_bytes(b"y" * 9)  # the same size and mtime, another file moved in its place
    os.utime(folder / "tmp", ns=(st.st_atime_ns, st.st_mtime_ns))
    (folder / "tmp").replace(folder / "model.safetensors")
    assert reranker_key(str(folder)) not in {key, None}
    assert reranker_key("cross-encoder/ms-marco-MiniLM-L-6-v2") is None  # a hub name: not stored
    assert reranker_key("minilm") is not None  # the offline MiniLM: its package folder


def test_not_stored_when_off_or_int8_and_a_broken_entry_is_dropped(
    rr: CrossEncoderReranker,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = remember_reranker(rr)
    assert folder is not None
    (folder / MODEL_FILE).write_bytes(b"not onnx")
    with caplog.at_level(logging.WARNING, logger="mmrag.rerank.stored"):
        assert open_stored_reranker(str(rr.source)) is None
    assert "unreadable" in caplog.text and not folder.exists()
    monkeypatch.setattr(rr, "int8", True)
    assert remember_reranker(rr) is None  # torch's dynamic int8 has no ONNX twin here
    monkeypatch.setattr(rr, "int8", False)
    monkeypatch.setenv(CACHE_ENV, "off")
    assert remember_reranker(rr) is None and open_stored_reranker(str(rr.source)) is None
    shutil.rmtree(cache, ignore_errors=True)
