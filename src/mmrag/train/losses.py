"""Triplet and InfoNCE losses for training the dual encoder's heads.

Each loss wraps the model it trains (anything with ``embed_anchor`` / ``embed_positive``, see
:class:`PairEncoder`); the math lives in plain functions and static methods that take tensors, so it is tested
without a model. Embeddings are L2-normalised inside, because retrieval scores normalised vectors.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Distance = Literal["cosine", "euclidean"]
Strategy = Literal["given", "random", "batch_hard", "semi_hard"]

# Also the floor under sqrt: its slope is infinite at 0, and a positive identical to its anchor is common.
_EPS = 1e-12
# CLIP caps the inverse temperature at 100 so the logits cannot blow up while it is learned.
_MAX_LOGIT_SCALE = math.log(100.0)


class PairEncoder(Protocol):
    """What the losses need from a model: one embedding function per side of a pair (e.g. text and image)."""

    def embed_anchor(self, x: Any) -> Tensor:
        """Embed a batch of anchors (e.g. captions) to ``(n, d)``."""
        ...

    def embed_positive(self, x: Any) -> Tensor:
        """Embed a batch of positives or negatives (e.g. images) to ``(n, d)``."""
        ...


def _distance_from_cos(cos: Tensor, distance: Distance) -> Tensor:
    if distance == "cosine":
        return 1.0 - cos
    # ||a - b||² = 2 - 2·cos for unit vectors; rounding can make it slightly negative, hence the clamp.
    return (2.0 - 2.0 * cos).clamp_min(_EPS).sqrt()


def pairwise_distance(a: Tensor, b: Tensor, distance: Distance) -> Tensor:
    """Distances between every row of ``a`` ``(n, d)`` and every row of ``b`` ``(m, d)``, shape ``(n, m)``.

    Rows are L2-normalised first. ``cosine`` is ``1 - cos_sim``; ``euclidean`` is the L2 distance between the
    normalised rows (orthogonal rows are ``sqrt(2)`` apart), with a gradient that stays finite at 0.
    """
    _check_choice(distance, Distance, "distance")
    cos = F.normalize(a, dim=-1, eps=_EPS) @ F.normalize(b, dim=-1, eps=_EPS).T
    return _distance_from_cos(cos, distance)


def _rowwise_distance(a: Tensor, b: Tensor, distance: Distance) -> Tensor:
    cos = (F.normalize(a, dim=-1, eps=_EPS) * F.normalize(b, dim=-1, eps=_EPS)).sum(-1)
    return _distance_from_cos(cos, distance)


def triplet_margin(d_ap: Tensor, d_an: Tensor, margin: float) -> Tensor:
    """Elementwise triplet loss ``max(0, d(a, p) - d(a, n) + margin)``."""
    return F.relu(d_ap - d_an + margin)


def select_negatives(
    dist: Tensor,
    strategy: Strategy,
    margin: float,
    *,
    positives_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one negative per anchor from a distance matrix and return its distance, shape ``(n,)``.

    Args:
        dist: ``(n, m)``, ``m >= n``; ``dist[i, j] = d(anchor_i, candidate_j)``, candidate ``i`` is anchor
            ``i``'s positive (the diagonal is never a negative). Columns ``n..m-1`` are extra negatives
            (e.g. mined from the index) that any anchor may use.
        strategy: ``random`` (uniform over valid negatives), ``batch_hard`` (the closest: VSE++
            max-violation) or ``semi_hard`` (FaceNet as in TF-addons / sentence-transformers: the closest
            negative with ``d_an > d_ap``, else the farthest valid negative).
        margin: the triplet margin; used only for rows without any valid negative.
        positives_mask: ``(n, m)`` bool, True where a candidate is also a positive (another caption of the
            same image) and so must never be a negative.
        generator: makes ``random`` reproducible.

    Returns:
        The chosen negative distances. A row with no valid negative (batch of one, or everything masked) gets
        ``d_ap + margin``, so its triplet loss and gradient are zero instead of NaN or inf.
    """
    n, m = dist.shape
    if m < n:
        raise ValueError(f"dist must be (n, m) with m >= n (column i is anchor i's positive); got {(n, m)}")
    if strategy == "given":
        raise ValueError("strategy 'given' has no mining: the negatives come with the triplet")
    _check_choice(strategy, Strategy, "negative strategy")
    d_ap = dist.diagonal()
    valid = ~torch.eye(n, m, dtype=torch.bool, device=dist.device)
    if positives_mask is not None:
        if positives_mask.shape != dist.shape:
            raise ValueError(f"positives_mask shape {tuple(positives_mask.shape)} != dist shape {(n, m)}")
        valid &= ~positives_mask.to(device=dist.device, dtype=torch.bool)
    # Mining picks an index; gathering afterwards keeps inf/-inf fill values out of the graph.
    with torch.no_grad():
        if strategy == "random":
            # argmax of uniform noise over the valid entries is a uniform choice among them.
            noise = torch.rand(n, m, generator=generator).to(dist.device)
            idx = noise.masked_fill(~valid, -1.0).argmax(1)
        elif strategy == "batch_hard":
            idx = dist.masked_fill(~valid, math.inf).argmin(1)
        else:
            outside = valid & (dist > d_ap[:, None])
            closest_outside = dist.masked_fill(~outside, math.inf).argmin(1)
            farthest = dist.masked_fill(~valid, -math.inf).argmax(1)
            idx = torch.where(outside.any(1), closest_outside, farthest)
    chosen = dist.gather(1, idx[:, None]).squeeze(1)
    return torch.where(valid.any(1), chosen, d_ap + margin)


def info_nce(sim: Tensor, logit_scale: Tensor, *, positives_mask: Tensor | None = None) -> Tensor:
    """Symmetric CLIP loss over a square similarity matrix whose diagonal holds the positives.

    Args:
        sim: ``(n, n)`` similarities, rows anchors (e.g. texts), columns positives (e.g. images).
        logit_scale: scalar log inverse temperature (CLIP's parameter); logits are ``sim * exp(logit_scale)``.
        positives_mask: ``(n, n)`` bool; True off the diagonal marks pairs that are also positives. They are
            removed from both softmax denominators (a second caption of the same image is not a wrong answer)
            but not counted as targets.

    Returns:
        The mean of the anchor→positive and positive→anchor cross-entropies.
    """
    n = sim.shape[0]
    if sim.shape != (n, n):
        raise ValueError(f"sim must be square (diagonal = positives); got {tuple(sim.shape)}")
    logits = sim * logit_scale.exp()
    if positives_mask is not None:
        eye = torch.eye(n, dtype=torch.bool, device=sim.device)
        logits = logits.masked_fill(positives_mask.to(sim.device, torch.bool) & ~eye, -math.inf)
    target = torch.arange(n, device=sim.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _check_choice(value: str, choices: Any, what: str) -> None:
    if value not in get_args(choices):
        raise ValueError(f"unknown {what} {value!r}; use one of {get_args(choices)}")


def _check_model(model: object) -> None:
    # Registering the model as a submodule is what puts its weights in loss.parameters() for the optimizer.
    if not isinstance(model, nn.Module):
        raise TypeError(f"the loss needs an nn.Module to train, got {type(model).__name__}")
    for name in ("embed_anchor", "embed_positive"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"{type(model).__name__} has no {name}(); the model must implement PairEncoder")


class TripletLoss(nn.Module):
    """Triplet loss over a model that maps a batch to (anchor, positive[, negative]) embeddings.

    Negatives are either given with each triplet (``strategy="given"``) or mined in the batch from the other
    anchors' positives (``random``, ``batch_hard``, ``semi_hard``). With ``symmetric=True`` the reverse
    direction (positives as anchors, anchors as candidates; ``random`` when negatives were given) is averaged
    in, so text→image and image→text are trained together.

    Args:
        model: an ``nn.Module`` implementing :class:`PairEncoder`.
        margin: the triplet margin, > 0.
        distance: ``cosine`` or ``euclidean`` (between L2-normalised embeddings).
        strategy: how each anchor's negative is chosen (see :func:`select_negatives`).
        symmetric: also train the reverse direction.
        seed: seeds the generator behind random negatives.

    Example:
        >>> class Heads(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.text, self.image = nn.Linear(8, 4), nn.Linear(6, 4)
        ...     def embed_anchor(self, x: Tensor) -> Tensor:
        ...         return self.text(x)
        ...     def embed_positive(self, x: Tensor) -> Tensor:
        ...         return self.image(x)
        >>> loss_fn = TripletLoss(Heads(), margin=0.2, strategy="semi_hard")
        >>> loss = loss_fn(torch.randn(5, 8), torch.randn(5, 6))
        >>> loss.backward()
    """

    def __init__(
        self,
        model: PairEncoder,
        margin: float = 0.2,
        distance: Distance = "cosine",
        strategy: Strategy = "semi_hard",
        symmetric: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _check_model(model)
        _check_args(margin, distance, strategy)
        self.model = model
        self.margin, self.distance, self.strategy, self.symmetric = margin, distance, strategy, symmetric
        self.generator = torch.Generator().manual_seed(seed)

    def forward(
        self,
        anchor_inputs: Any,
        positive_inputs: Any,
        negative_inputs: Any = None,
        *,
        positives_mask: Tensor | None = None,
    ) -> Tensor:
        """Embed the batch and return the mean triplet loss (negatives embedded with ``embed_positive``)."""
        if self.strategy == "given" and negative_inputs is None:
            raise ValueError("strategy 'given' needs negative_inputs; or pick an in-batch strategy")
        a = self.model.embed_anchor(anchor_inputs)
        p = self.model.embed_positive(positive_inputs)
        n = None if negative_inputs is None else self.model.embed_positive(negative_inputs)
        return self.loss_from_embeddings(
            a, p, n, self.margin, self.distance, self.strategy,
            positives_mask=positives_mask, generator=self.generator, symmetric=self.symmetric,
        )  # fmt: skip

    @staticmethod
    def loss_from_embeddings(
        a: Tensor,
        p: Tensor,
        n: Tensor | None,
        margin: float,
        distance: Distance,
        strategy: Strategy,
        positives_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        symmetric: bool = False,
    ) -> Tensor:
        """The loss on plain ``(batch, d)`` embeddings; ``forward`` is this after the model.

        ``n`` is one negative per anchor for ``given``. For the in-batch strategies, given negatives join the
        candidates as extra columns every anchor may pick. ``positives_mask`` is ``(batch, batch)``, anchors ×
        positives; ``symmetric`` averages in the reverse direction (see the class docstring).
        """
        _check_args(margin, distance, strategy)
        if a.ndim != 2 or a.shape != p.shape:
            raise ValueError(f"anchors and positives must both be (batch, d); got {a.shape} and {p.shape}")
        if n is not None and (n.ndim != 2 or n.shape[1] != a.shape[1]):
            raise ValueError(f"negatives must be (k, {a.shape[1]}); got {tuple(n.shape)}")
        if strategy == "given":
            if n is None or n.shape[0] != a.shape[0]:
                raise ValueError("strategy 'given' needs one negative per anchor")
            d_ap, d_an = _rowwise_distance(a, p, distance), _rowwise_distance(a, n, distance)
        else:
            candidates = p if n is None else torch.cat([p, n])
            mask = positives_mask
            if mask is not None and n is not None:
                mask = F.pad(mask.to(torch.bool), (0, n.shape[0]), value=False)
            dist = pairwise_distance(a, candidates, distance)
            d_ap = dist.diagonal()
            d_an = select_negatives(dist, strategy, margin, positives_mask=mask, generator=generator)
        loss = triplet_margin(d_ap, d_an, margin).mean()
        if not symmetric:
            return loss
        # Given negatives live on the positive side, so the reverse direction mines among the other anchors.
        reverse_strategy: Strategy = "random" if strategy == "given" else strategy
        reverse_mask = None if positives_mask is None else positives_mask.T
        dist_r = pairwise_distance(p, a, distance)
        d_an_r = select_negatives(
            dist_r, reverse_strategy, margin, positives_mask=reverse_mask, generator=generator
        )
        return (loss + triplet_margin(dist_r.diagonal(), d_an_r, margin).mean()) / 2


def _check_args(margin: float, distance: str, strategy: str) -> None:
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (0.1 to 0.3 is usual for cosine), got {margin}")
    _check_choice(distance, Distance, "distance")
    _check_choice(strategy, Strategy, "negative strategy")


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE / CLIP loss with a learned temperature: the baseline triplet training is compared to.

    Args:
        model: an ``nn.Module`` implementing :class:`PairEncoder`.
        init_temperature: starting softmax temperature (CLIP: 0.07); ``logit_scale = log(1 / T)``, capped at
            ``log(100)`` when used.
        learn_temperature: train ``logit_scale`` along with the model.

    Example:
        >>> class Heads(nn.Module):  # any PairEncoder
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.text, self.image = nn.Linear(8, 4), nn.Linear(6, 4)
        ...     def embed_anchor(self, x: Tensor) -> Tensor:
        ...         return self.text(x)
        ...     def embed_positive(self, x: Tensor) -> Tensor:
        ...         return self.image(x)
        >>> loss_fn = InfoNCELoss(Heads(), init_temperature=0.07)
        >>> loss = loss_fn(torch.randn(5, 8), torch.randn(5, 6))
        >>> loss.backward()
    """

    def __init__(
        self, model: PairEncoder, init_temperature: float = 0.07, learn_temperature: bool = True
    ) -> None:
        super().__init__()
        _check_model(model)
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0 (CLIP uses 0.07), got {init_temperature}")
        self.model = model
        start = torch.tensor(math.log(1.0 / init_temperature))
        self.logit_scale = nn.Parameter(start, requires_grad=learn_temperature)

    def forward(
        self, anchor_inputs: Any, positive_inputs: Any, *, positives_mask: Tensor | None = None
    ) -> Tensor:
        """Embed the batch and return the symmetric InfoNCE loss (in-batch negatives)."""
        a = self.model.embed_anchor(anchor_inputs)
        p = self.model.embed_positive(positive_inputs)
        return self.loss_from_embeddings(a, p, self.logit_scale, positives_mask=positives_mask)

    @staticmethod
    def loss_from_embeddings(
        a: Tensor, p: Tensor, logit_scale: Tensor, *, positives_mask: Tensor | None = None
    ) -> Tensor:
        """The loss on plain ``(batch, d)`` embeddings (cosine similarity, logit_scale capped at log 100)."""
        sim = F.normalize(a, dim=-1, eps=_EPS) @ F.normalize(p, dim=-1, eps=_EPS).T
        return info_nce(sim, logit_scale.clamp(max=_MAX_LOGIT_SCALE), positives_mask=positives_mask)
