"""The encoder an API ingest embeds with: it takes turns with the searches of the same server.

The encoder runs one batch at a time (a lock per batch), so a search that arrives while an ingest
embeds waits for that ingest's current batch. :class:`TurnTakingEncoder` keeps those batches small
(``ApiConfig.ingest_batch_size``) and lets in-flight searches finish before each one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from mmrag.encoders.base import DualEncoder

__all__ = ["TurnTakingEncoder"]

T = TypeVar("T")


class TurnTakingEncoder:
    """``encoder`` in calls of at most ``batch`` items, each after ``wait()`` (searches first).

    The ingest hands over whole windows (up to 256 text chunks, ``IngestOptions.text_window``);
    they are sorted by length and split here, so each call pads little and a search never waits
    behind more than ``batch`` items (it waited behind the encoder's own 32-text batches when the
    windows went through in one call: p95 2.1 s at 8 dense clients during an ingest, fp32 text
    path, 2-core AMD EPYC).

    Args:
        encoder: The server's encoder.
        wait: Returns once the searches in flight have finished, or after a bound.
        batch: Items per encoder call.
    """

    def __init__(self, encoder: DualEncoder, wait: Callable[[], None], batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._enc, self._wait, self.batch = encoder, wait, batch
        self.id, self.dim, self.spec, self.aligned = encoder.id, encoder.dim, encoder.spec, encoder.aligned
        prepare = getattr(encoder, "prepare_image", None)
        if prepare is not None:  # the ingest's parsing threads prepare images for the encoder
            self.prepare_image = prepare

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> Any:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i] or ""))
        return self._in_turns(texts, order, lambda part: self._enc.encode_text(part, batch_size=self.batch))

    def encode_image(self, images: Sequence[Any], *, batch_size: int | None = None) -> Any:
        order = list(range(len(images)))
        return self._in_turns(images, order, lambda part: self._enc.encode_image(part, batch_size=self.batch))

    def describe(self) -> dict[str, Any]:
        return self._enc.describe()

    def _in_turns(self, items: Sequence[T], order: list[int], fn: Callable[[list[T]], Any]) -> Any:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            self._wait()
            out[idx] = fn([items[i] for i in idx])
        return out
