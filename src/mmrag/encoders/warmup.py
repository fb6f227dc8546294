"""Start-up text calls that build an encoder's text paths before a first user pays for them.

A long-lived server (:func:`mmrag.wiring.resolve_models` with ``warm=True``) runs them once: a lone
query (the fp32 ONNX Runtime session; on bf16 hardware also the bf16 copy of the text tower, checked
against it: :mod:`mmrag.encoders.bf16`), a padded pair (the API's commonest micro-batch), short texts
of unequal length (:data:`WARM_PACKED`: the packed copy, :mod:`mmrag.encoders.packing`) and two long
inputs. A bf16 copy is checked against fp32 again on each input over twice as long as any it has
checked, 15-25 ms a time: a long lone text (:data:`WARM_LONG`, 128 tokens: checked up to 256, the
text tower's context length) and a packed row of ~200 tokens (:data:`WARM_ROW`; rows hold at most
256) run those checks at start-up instead of on users' first long queries and micro-batches.

An encoder that knows more about its own paths says so with a ``warm_up()`` method
(:class:`WarmsUp`); :meth:`mmrag.encoders.openclip.OpenClipEncoder.warm_up` sends the long text in
as many copies as its bf16 copy takes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from mmrag.encoders.base import DualEncoder

__all__ = ["WARM_LONG", "WARM_PACKED", "WARM_ROW", "WarmsUp", "warm_encoder", "warm_text_paths"]

# a micro-batch as the API gathers them: short queries of unequal length (the packed path)
WARM_PACKED = ("warm-up", "a warm-up query", "a longer warm-up query, with more words in it than the others")
WARM_LONG = " ".join(["warm"] * 126)
WARM_ROW = tuple(" ".join(["warm"] * (4 + 3 * i)) for i in range(10))


@runtime_checkable
class WarmsUp(Protocol):
    """An encoder with its own start-up warm-up (which runs :func:`warm_text_paths` its way)."""

    def warm_up(self) -> None: ...


def warm_text_paths(encoder: DualEncoder, *, long_copies: Callable[[], int] = lambda: 1) -> None:
    """Run the start-up calls (module docstring) on ``encoder``: ``long_copies()`` copies of
    :data:`WARM_LONG` in one batch (a path that only takes batches of some size needs that many),
    asked after the short texts, which made the copies: how many a copy takes can depend on how it
    was made (an eager bf16 copy takes more than a traced one)."""
    encoder.encode_text(["warm-up"])
    encoder.encode_text(["a warm-up query", "another warm-up query"])
    encoder.encode_text(WARM_PACKED)
    encoder.encode_text([WARM_LONG] * long_copies())
    encoder.encode_text(WARM_ROW, batch_size=len(WARM_ROW))  # one batch, whatever MMRAG_BATCH_SIZE


def warm_encoder(encoder: DualEncoder) -> None:
    """Warm ``encoder`` up its own way where it has one (:class:`WarmsUp`), else the generic way."""
    if isinstance(encoder, WarmsUp):
        encoder.warm_up()
    else:
        warm_text_paths(encoder)
