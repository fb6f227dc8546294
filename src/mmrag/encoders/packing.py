"""Padding-free text batches: short texts packed into one sequence, each attending to itself only.

A padded batch of queries computes every layer over ``texts x longest text`` tokens. SciFact
queries (22 tokens on average, 7 to 79) batched in threes are 78% real tokens, in eights 65%: the
rest is padding that the linear layers, most of the work at this length, multiply all the same.
Packed, the texts' tokens sit end to end in one row, each with its own positions (0, 1, ...), and a
block-diagonal attention mask keeps every text to its own tokens; pooling and the projection then
run per text. The output is the padded tower's (per-text cosine 0.99999 in fp32; the bf16 copy is
checked against fp32 like any other, :mod:`mmrag.encoders.bf16`).

What it buys (MiniLM text tower, traced bf16, 1 thread, AMD EPYC Zen 4; scratch runs, medians):
packed / padded time 0.86 for 3 random queries, 0.78 for 8, the same for 2 (within the noise);
0.64-0.75 where under 70% of the padded batch is real, and 1.04 where all texts have the same
length (the mask and the wider attention then cost more than nothing saved). Per token the packed
pass is flat from ~96 to 256 tokens and ~35% dearer at 512 (attention grows with the square of
the row). So a batch of at least :data:`PACK_MIN_TEXTS` texts is packed only when under
:data:`PACK_BELOW` of it is real and its texts are short (at most :data:`PACK_MAX_TOKENS` / 4
tokens on average); it is cut into rows of at most :data:`PACK_MAX_TOKENS` tokens, each one
forward pass. Through ``encode_text`` (tokenizing included), ms per query padded -> packed: 3
queries 6.1 -> 5.5, 8 queries 6.1 -> 5.3, 32 queries 6.4 -> 4.8. Pairs stay padded even with rows
padded to a multiple of :data:`PACK_ALIGN` tokens (AMX Xeon, 1 thread, warm): 300 random pairs of
SciFact claims, all run both ways, took 4.2 ms a pair packed against 4.5 padded, but through
``encode_text`` on 256 claims in consecutive pairs (46% of them uneven enough to pack) packing
pairs took 3.10 ms a claim against 2.90 (5 alternating rounds), and the API at 8 clients was the
same either way (298-318 q/s, 3 alternating servers each).

Layout of a packed row (one int64 tensor, so :class:`~mmrag.encoders.bf16.Bf16Forward` and
TorchScript take it as they take token ids): row 0 the token ids, row 1 each token's position in
its text, then one 0/1 row per text marking its tokens (texts in order, end to end), then pad
tokens up to a multiple of :data:`PACK_ALIGN` that no text marks (they attend only to each other).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmrag.encoders.bf16 import Bf16Forward

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PACK_MAX_TOKENS = 256  # tokens per packed row (per-token cost flat up to here, measured above)
PACK_BELOW = 0.9  # pack a batch whose real tokens are under this share of the padded batch
PACK_MIN_TEXTS = 3  # pairs: no gain packed (see above)
# A packed row is padded to a multiple of this many tokens: oneDNN's bf16 matmuls run whole blocks
# of 8 rows faster than the ragged length (MiniLM traced bf16 on an AMX Xeon, 3 texts: 64 tokens
# 4.27 ms against 4.89-5.14 for 57-63, 72 4.60 against 4.45-5.34 for 65-71), and each new length
# makes its own oneDNN kernels (~800 minor page faults a batch at first): 8x fewer lengths to warm.
PACK_ALIGN = 8
POOLERS = ("MeanPooler", "ClsPooler")  # open_clip HF poolers a packed row reproduces


def pack(tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    """A right-padded ``(texts, length)`` batch of token ids as one packed row (layout above).

    Built in numpy, not torch: each small torch op releases the GIL and must take it back, and
    beside a busy Python thread (an API's request handlers) every such wait lasts up to the
    interpreter's switch interval. In torch this took ~14 of them per batch (0.05 ms alone, 14 ms
    beside a spinning thread at a 1 ms interval); numpy keeps the GIL on arrays this small.
    """
    import numpy as np
    import torch

    t = tokens.numpy()
    keep = t != pad_id
    lens = keep.sum(1)
    real = int(lens.sum())
    fill = -real % PACK_ALIGN  # pad tokens to the next multiple of PACK_ALIGN, in no text
    owner = np.concatenate([np.repeat(np.arange(len(t)), lens), np.full(fill, -1)])
    starts = np.cumsum(lens) - lens
    positions = np.concatenate([np.arange(real) - starts[owner[:real]], np.arange(fill)])
    ids = np.concatenate([t[keep], np.full(fill, pad_id, dtype=t.dtype)])
    marks = (owner[None, :] == np.arange(len(t))[:, None]).astype(t.dtype)
    return torch.from_numpy(np.concatenate([ids[None], positions[None].astype(t.dtype), marks]))


def unpack(packed: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The right-padded ``(texts, longest)`` token ids of a packed row (inverse of :func:`pack`)."""
    import torch

    ids, positions, marks = packed[0], packed[1], packed[2:]
    real = marks.sum(0) > 0  # not the row's alignment padding
    out = torch.full((len(marks), int(marks.sum(1).max())), pad_id, dtype=ids.dtype)
    out[marks.argmax(0)[real], positions[real]] = ids[real]
    return out


def head(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The packed row of the first ``n`` texts of ``packed``."""
    import torch

    width = int(packed[2 : 2 + n].sum())
    return torch.cat([packed[:2, :width], packed[2 : 2 + n, :width]])


def worth_packing(tokens: torch.Tensor, pad_id: int) -> bool:
    """Whether a padded batch is right-padded, short texts, and under :data:`PACK_BELOW` real
    (in numpy, as :func:`pack`)."""
    import numpy as np

    keep = tokens.numpy() != pad_id
    lens = keep.sum(1)
    if len(keep) < PACK_MIN_TEXTS or int(lens.min()) < 1:
        return False
    if not np.array_equal(keep, np.arange(keep.shape[1])[None, :] < lens[:, None]):
        return False  # left padding or pad ids inside a text: positions would not follow
    real = int(lens.sum())
    return real < PACK_BELOW * keep.size and real <= len(keep) * PACK_MAX_TOKENS // 4


def rows(tokens: torch.Tensor, pad_id: int) -> list[tuple[int, int]]:
    """``(start, end)`` runs of consecutive texts of at most :data:`PACK_MAX_TOKENS` tokens each
    (a longer text alone)."""
    lens = (tokens.numpy() != pad_id).sum(1).tolist()
    cuts: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, n in enumerate(lens):
        if i > start and used + n > PACK_MAX_TOKENS:
            cuts.append((start, i))
            start, used = i, 0
        used += n
    cuts.append((start, len(lens)))
    return cuts


def packable(tower: Any) -> bool:
    """Whether ``tower`` is an open_clip HF text tower whose output a packed row reproduces: mean
    or first-token pooling of the last hidden states (not a BERT pooling layer's output), positions
    counted from 0 (BERT-style embeddings: RoBERTa's start after a padding index), and SDPA
    attention (which takes the boolean block-diagonal mask as "may attend"; eager attention would
    add it to the scores)."""
    pooler = getattr(tower, "pooler", None)
    model = getattr(tower, "transformer", None)
    config = getattr(model, "config", None)
    embeddings = getattr(model, "embeddings", None)
    pooled_output = getattr(pooler, "use_pooler_output", False) and getattr(model, "pooler", None) is not None
    return (
        model is not None
        and hasattr(tower, "proj")
        and type(pooler).__name__ in POOLERS
        and getattr(pooler, "cls_token_position", 0) == 0
        and not pooled_output
        and not getattr(tower, "output_tokens", False)
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and embeddings is not None
        and not hasattr(embeddings, "padding_idx")
    )


def packed_tower(tower: torch.nn.Module) -> torch.nn.Module:
    """A module that runs ``tower`` (see :func:`packable`) on a packed row: ``(texts, dim)`` out."""
    import torch

    class PackedTextTower(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.tower: Any = inner
            self.cls = type(inner.pooler).__name__ == "ClsPooler"

        def forward(self, packed: torch.Tensor) -> torch.Tensor:
            ids, positions, marks = packed[:1], packed[1:2], packed[2:]
            # the text of each token; -1 for the row's alignment padding, which sees only itself
            owner = torch.where(marks.sum(0) > 0, marks.argmax(0), -1)
            mask = (owner[:, None] == owner[None, :])[None, None]  # each token sees its own text
            out = self.tower.transformer(input_ids=ids, position_ids=positions, attention_mask=mask)
            hidden = out.last_hidden_state[0]
            weights = marks.to(hidden.dtype)
            if self.cls:  # the first token of each text
                pooled = (weights * (positions == 0).to(hidden.dtype)) @ hidden
            else:
                pooled = (weights @ hidden) / weights.sum(-1, keepdim=True)
            return self.tower.proj(pooled)  # type: ignore[no-any-return]

    return PackedTextTower(tower).eval()


class PackedBatches:
    """Run padded token batches packed, on a bf16 copy of the packed tower checked against fp32.

    Args:
        tower: An open_clip HF text tower (:func:`packable`).
        reference: The fp32 padded path (an encoder's ONNX Runtime text forward): what the bf16
            copy is checked against (and what it runs while it cannot be used).
        padded: What runs a batch after the packed tower failed on one (the padded bf16 path).
        pad_id: The tokenizer's pad id.
        name: What the tower is, for log messages.
        example: Makes a padded token batch (a short and a long text) to trace the copy on.
    """

    def __init__(
        self,
        tower: torch.nn.Module,
        *,
        reference: Callable[[torch.Tensor], torch.Tensor],
        padded: Callable[[torch.Tensor], torch.Tensor],
        pad_id: int,
        name: str,
        example: Callable[[], torch.Tensor],
    ) -> None:
        self.tower = tower
        self.pad_id = pad_id
        self.padded = padded
        self.name = name
        self.forward = Bf16Forward(
            packed_tower(tower),
            fallback=lambda x: reference(unpack(x, pad_id)),
            name=f"{name} (packed)",
            example=lambda: pack(example(), pad_id),
            head=head,
        )
        self.failed = False

    @property
    def min_batch(self) -> int:
        """The fewest texts run packed: :data:`PACK_MIN_TEXTS`, or the bf16 copy's own minimum."""
        return max(PACK_MIN_TEXTS, self.forward.min_batch)

    def wanted(self, tokens: torch.Tensor) -> bool:
        """Whether this batch should run packed (see the module docs); never while the tower trains
        (the packed module is a wrapper of its own, so its train flag does not follow the tower's)."""
        return self.active and worth_packing(tokens, self.pad_id)

    @property
    def active(self) -> bool:
        """Whether batches may run packed now (not failed, the tower not training, its weights
        not refused by the parity check)."""
        return not self.failed and not self.tower.training and self.forward.usable()

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embeddings of a right-padded batch, ``(texts, dim)`` float32, in order."""
        import torch

        try:
            parts = [self.forward(pack(tokens[a:b], self.pad_id)) for a, b in rows(tokens, self.pad_id)]
        except Exception as exc:  # noqa: BLE001 - a tower that cannot run packed runs padded
            self.failed = True
            log.warning("%s: cannot run packed batches (%s); batches run padded", self.name, exc)
            return self.padded(tokens).float()
        return parts[0] if len(parts) == 1 else torch.cat(parts)
