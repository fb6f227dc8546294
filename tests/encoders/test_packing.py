"""Padding-free text batches: the packed layout, the packed tower against the padded one, and the
encoder's choice between them."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from tests.runtimes import running

from mmrag.encoders import packing
from mmrag.encoders.bf16 import PARITY_MIN
from mmrag.encoders.openclip import OpenClipEncoder
from mmrag.encoders.packing import (
    PACK_ALIGN,
    PACK_MAX_TOKENS,
    PACK_MIN_TEXTS,
    head,
    pack,
    packable,
    packed_tower,
    rows,
    unpack,
    worth_packing,
)

# short texts of unequal length, as the API's micro-batcher gathers queries
QUERIES = [
    "birds",
    "a dog runs on the grass",
    "Vitamin D deficiency raises the risk of fractures in older women and men.",
    "two children play football in a park",
    "Aspirin lowers the risk of heart attacks.",
    "a woman in a blue coat walks past a shop window at night while it rains",
]


def _cos(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())


def test_layout_round_trips(lite: OpenClipEncoder) -> None:
    tokens = lite.tokenizer(QUERIES)
    lens = (tokens != 0).sum(1)
    packed = pack(tokens, 0)
    real = int(lens.sum())
    width = -(-real // PACK_ALIGN) * PACK_ALIGN
    assert real % PACK_ALIGN and packed.shape == (2 + len(QUERIES), width)  # padded to the alignment
    assert not packed[2:, real:].any() and not packed[0, real:].any()  # pad ids that no text marks
    assert torch.equal(packed[2:].sum(1), lens)  # each text marks its own tokens
    assert packed[1][: int(lens[0])].tolist() == list(range(int(lens[0])))  # positions restart...
    assert int(packed[1][int(lens[0])]) == 0  # ...at every text
    assert torch.equal(unpack(packed, 0), tokens)
    assert torch.equal(unpack(head(packed, 2), 0), lite.tokenizer(QUERIES[:2]))


def test_rows_hold_at_most_the_row_budget() -> None:
    tokens = torch.zeros(7, 200, dtype=torch.long)
    for i, n in enumerate([100, 100, 60, 200, 60, 10, 10]):
        tokens[i, :n] = 5
    assert rows(tokens, 0) == [(0, 2), (2, 3), (3, 4), (4, 7)]  # 200 + 60 > 256: a new row
    assert all(int((tokens[a:b] != 0).sum()) <= PACK_MAX_TOKENS for a, b in rows(tokens, 0))
    tokens[0, :] = 5  # a text longer than a row goes alone
    assert rows(tokens[:1], 0) == [(0, 1)]


def test_only_short_uneven_right_padded_batches_are_worth_packing(lite: OpenClipEncoder) -> None:
    uneven = lite.tokenizer(QUERIES)
    assert worth_packing(uneven, 0)
    assert not worth_packing(uneven[: PACK_MIN_TEXTS - 1], 0)  # too few texts to gain
    assert not worth_packing(lite.tokenizer(["the same length"] * 4), 0)  # nothing padded
    assert not worth_packing(uneven.flip(1), 0)  # left padding: positions would not follow
    long = lite.tokenizer(["word " * 200, "word " * 150, "word"])  # chunks, not queries
    assert not worth_packing(long, 0)


@pytest.mark.parametrize("pooler", ["MeanPooler", "ClsPooler"])
def test_the_packed_tower_gives_the_padded_towers_vectors(lite: OpenClipEncoder, pooler: str) -> None:
    from open_clip import hf_model

    tower = copy.deepcopy(lite.model.text).eval()
    tower.pooler = getattr(hf_model, pooler)()
    assert packable(tower)
    tokens = lite.tokenizer(QUERIES)
    row = pack(tokens, 0)
    real = int((tokens != 0).sum())
    with torch.inference_mode():
        padded = tower(tokens)
        packed = packed_tower(tower)(row)
        unaligned = packed_tower(tower)(row[:, :real])  # without the alignment padding
    assert packed.shape == padded.shape
    assert _cos(packed, padded) >= 0.99999
    torch.testing.assert_close(packed, unaligned, rtol=1e-4, atol=1e-5)  # the padding is seen by none


def test_a_tower_without_such_pooling_is_not_packable(lite: OpenClipEncoder) -> None:
    from open_clip import hf_model

    tower = copy.deepcopy(lite.model.text)
    tower.pooler = hf_model.MaxPooler()
    assert not packable(tower) and not packable(lite.model.visual)


@pytest.mark.parametrize("change", ["bert pooling layer", "eager attention", "roberta positions"])
def test_towers_a_packed_row_cannot_reproduce_are_not_packable(lite: OpenClipEncoder, change: str) -> None:
    from open_clip import hf_model
    from transformers.models.bert.modeling_bert import BertPooler

    tower = copy.deepcopy(lite.model.text).eval()
    tower.pooler = hf_model.ClsPooler()
    assert packable(tower)  # CLS pooling of the last hidden state: reproduced
    model = tower.transformer
    if change == "bert pooling layer":  # the padded tower returns tanh(dense(CLS)) instead
        model.pooler = BertPooler(model.config)
    elif change == "eager attention":  # adds a boolean mask to the scores: nothing masked
        model.config._attn_implementation = "eager"
    else:  # positions start after the padding index, not at 0
        model.embeddings.padding_idx = 1
    assert not packable(tower)


def test_a_training_tower_never_runs_packed(lite: OpenClipEncoder) -> None:
    with running(lite, "bf16"):
        packed = lite.text_packed
        assert packed is not None and packed.wanted(lite.tokenizer(QUERIES))
        lite.model.text.train()
        try:
            assert not packed.wanted(lite.tokenizer(QUERIES)) and not lite.describe()["text_packed"]
        finally:
            lite.model.text.eval()
        assert packed.active


def test_uneven_query_batches_run_packed_in_bf16(
    lite: OpenClipEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []  # packed rows per packed batch

    def counted(tokens: torch.Tensor, pad_id: int) -> list[tuple[int, int]]:
        cut = rows(tokens, pad_id)
        runs.append(len(cut))
        return cut

    monkeypatch.setattr(packing, "rows", counted)
    with running(lite, "fp32"):
        ref = lite.encode_text(QUERIES)
    with running(lite, "bf16"):
        packed = lite.text_packed
        assert packed is not None and packed.min_batch == PACK_MIN_TEXTS
        out = lite.encode_text(QUERIES)
        assert runs == [1]  # one packed row
        lite.encode_text(["the same length"] * 4)  # nothing to unpad: the padded path
        lite.encode_text(QUERIES[: PACK_MIN_TEXTS - 1])
        assert runs == [1]
        fwd = packed.forward
        assert fwd.parity is not None and fwd.parity >= PARITY_MIN and lite.describe()["text_packed"]
        if hasattr(torch.jit, "trace"):
            assert fwd.traced
        # a micro-batch of 32 queries: several rows, each text's vector where it belongs
        many = [QUERIES[i % len(QUERIES)] + " and" + " more words" * (i % 5) for i in range(32)]
        together = lite.encode_text(many)
        assert runs[-1] > 1
        alone = np.concatenate([lite.encode_text([t]) for t in many[:8]])
    assert _cos(out, ref) >= PARITY_MIN
    assert _cos(together[:8], alone) >= PARITY_MIN


def test_a_tower_that_fails_packed_runs_padded(
    lite: OpenClipEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with running(lite, "fp32"):
        ref = lite.encode_text(QUERIES)
    with running(lite, "bf16"):
        packed = lite.text_packed
        assert packed is not None

        def broken(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
            raise RuntimeError("no position ids here")

        monkeypatch.setattr(packing, "pack", broken)
        with caplog.at_level(logging.WARNING, logger="mmrag.encoders.packing"):
            out = lite.encode_text(QUERIES)
            again = lite.encode_text(QUERIES)
        assert packed.failed and not packed.wanted(lite.tokenizer(QUERIES))
        assert not lite.describe()["text_packed"]  # /health says batches run padded now
        assert sum("cannot run packed" in r.getMessage() for r in caplog.records) == 1
    assert _cos(out, ref) >= PARITY_MIN and _cos(again, ref) >= PARITY_MIN
