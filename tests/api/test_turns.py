"""An API ingest embeds in small calls, each after the searches in flight (api/turns.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mmrag.api.config import ApiConfig
from mmrag.api.service import Principal, Service
from mmrag.api.turns import TurnTakingEncoder
from mmrag.config import Settings
from tests.fakes import HashEncoder


class Recording(HashEncoder):
    """HashEncoder that records the size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[str, int]] = []

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> Any:
        self.sizes.append(("text", len(texts)))
        return super().encode_text(texts, batch_size=batch_size)

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> Any:
        self.sizes.append(("image", len(images)))
        return super().encode_image(images, batch_size=batch_size)


def test_calls_of_at_most_batch_items_each_after_a_wait_same_vectors() -> None:
    enc, waits = Recording(), []
    turns = TurnTakingEncoder(enc, lambda: waits.append(1), batch=2)
    texts = ["a much longer text about vectors and stores", "short", "", "mid length text", "x y"]
    out = turns.encode_text(texts)
    assert [n for _, n in enc.sizes] == [2, 2, 1] and len(waits) == 3
    np.testing.assert_allclose(out, HashEncoder().encode_text(texts), atol=1e-6)  # rows in input order
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]
    np.testing.assert_allclose(turns.encode_image(images), HashEncoder().encode_image(images), atol=1e-6)
    assert enc.sizes[-2:] == [("image", 2), ("image", 1)] and len(waits) == 5
    assert turns.encode_text([]).shape == (0, enc.dim)
    assert not hasattr(turns, "prepare_image")  # HashEncoder has none; an encoder that has one keeps it
    enc.prepare_image = lambda image: ("prepared", image)  # type: ignore[attr-defined]
    assert TurnTakingEncoder(enc, lambda: None, batch=2).prepare_image("im") == ("prepared", "im")
    with pytest.raises(ValueError, match="batch"):
        TurnTakingEncoder(enc, lambda: None, batch=0)


def test_an_api_ingest_never_hands_the_encoder_more_than_its_batch(tmp_path: Path) -> None:
    # The ingest gathers text chunks into windows of up to 256 (one sorted encoder call in the CLI);
    # through the API a search would wait behind all of them, so they go in calls of 2
    docs = tmp_path / "root" / "docs"
    docs.mkdir(parents=True)
    for i in range(20):
        (docs / f"d{i:02d}.txt").write_text(f"document {i} about topic{i % 5} and word{i}")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(docs / "red.png")
    enc = Recording()
    svc = Service(
        Settings(store=str(tmp_path / "store")),
        ApiConfig(ingest_root=docs.parent, ingest_batch_size=2),
        encoder=enc,
    )
    try:
        warm = len(enc.sizes)  # the server's warm-up calls (wiring.resolve_models)
        summary = svc.ingest(Principal(), tenant=None, files=[], paths=[docs])
        assert summary["written"] == 21 and svc.store.count() == 21
        texts = [n for kind, n in enc.sizes[warm:] if kind == "text"]
        assert sum(texts) >= 20 and max(texts) == 2 and ("image", 1) in enc.sizes
    finally:
        svc.close()
