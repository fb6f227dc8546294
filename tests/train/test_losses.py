"""Losses on plain tensors (hand-computed values) and through a tiny two-head model."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mmrag.train.losses import (
    InfoNCELoss,
    Strategy,
    TripletLoss,
    info_nce,
    pairwise_distance,
    select_negatives,
    triplet_margin,
)

INF = math.inf


class TwoHeads(nn.Module):
    """A text head and an image head: the smallest PairEncoder."""

    def __init__(self, d_text: int = 6, d_image: int = 5, d: int = 4) -> None:
        super().__init__()
        self.text = nn.Linear(d_text, d)
        self.image = nn.Linear(d_image, d)

    def embed_anchor(self, x: Tensor) -> Tensor:
        return self.text(x)

    def embed_positive(self, x: Tensor) -> Tensor:
        return self.image(x)


# --- triplet_margin / pairwise_distance ---------------------------------------------------------------


def test_triplet_margin_hand_values() -> None:
    d_ap = torch.tensor([0.1, 0.5, 0.3, 0.0])
    d_an = torch.tensor([0.9, 0.4, 0.4, 0.2])
    out = triplet_margin(d_ap, d_an, margin=0.2)
    # 0.1-0.9+0.2 < 0; 0.5-0.4+0.2; 0.3-0.4+0.2; exactly on the margin -> 0
    torch.testing.assert_close(out, torch.tensor([0.0, 0.3, 0.1, 0.0]))


def test_pairwise_distance_known_vectors() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    cos = pairwise_distance(a, b, "cosine")
    torch.testing.assert_close(cos, torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0]]))
    euc = pairwise_distance(a, b, "euclidean")
    r2 = math.sqrt(2.0)
    torch.testing.assert_close(euc, torch.tensor([[0.0, r2, 2.0], [r2, 0.0, r2]]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_pairwise_distance_gradient_finite_at_identical_vectors(distance: Any) -> None:
    a = torch.tensor([[0.6, 0.8, 0.0]], requires_grad=True)
    d = pairwise_distance(a, a.detach().clone(), distance)
    d.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_pairwise_distance_rejects_unknown_distance() -> None:
    with pytest.raises(ValueError, match="distance"):
        pairwise_distance(torch.ones(1, 2), torch.ones(1, 2), "manhattan")  # type: ignore[arg-type]


# --- select_negatives ----------------------------------------------------------------------------------

# d_ap is the diagonal: 0.5, 0.2, 0.6, 0.3.
DIST = torch.tensor(
    [
        [0.5, 0.4, 0.7, 0.9],  # closer than positive: 0.4; farther: 0.7 (semi), 0.9
        [0.8, 0.2, 0.3, 0.6],  # all farther: semi = batch_hard = 0.3
        [0.1, 0.4, 0.6, 0.5],  # none farther than 0.6 -> semi falls back to the farthest, 0.5
        [0.9, 0.35, 0.31, 0.3],  # semi 0.31 (strictly greater), batch_hard 0.31
    ]
)


def test_batch_hard_picks_closest_off_diagonal() -> None:
    out = select_negatives(DIST, "batch_hard", 0.2)
    torch.testing.assert_close(out, torch.tensor([0.4, 0.3, 0.1, 0.31]))


def test_semi_hard_picks_closest_farther_than_positive_else_farthest() -> None:
    out = select_negatives(DIST, "semi_hard", 0.2)
    torch.testing.assert_close(out, torch.tensor([0.7, 0.3, 0.5, 0.31]))


def test_positives_mask_is_never_a_negative() -> None:
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 1] = mask[1, 2] = mask[2, 3] = mask[3, 2] = True
    torch.testing.assert_close(
        select_negatives(DIST, "batch_hard", 0.2, positives_mask=mask), torch.tensor([0.7, 0.6, 0.1, 0.35])
    )
    # row 2: without 0.5 the farthest valid negative is 0.4
    torch.testing.assert_close(
        select_negatives(DIST, "semi_hard", 0.2, positives_mask=mask), torch.tensor([0.7, 0.6, 0.4, 0.35])
    )


def test_random_is_reproducible_and_never_picks_diagonal_or_masked() -> None:
    n = 6
    dist = torch.arange(n * n, dtype=torch.float32).reshape(
        n, n
    )  # every entry distinct -> value names column
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[0, 1] = mask[3, 4] = mask[3, 5] = True

    def draw(seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.stack(
            [select_negatives(dist, "random", 0.2, positives_mask=mask, generator=g) for _ in range(50)]
        )

    picks = draw(7)
    assert torch.equal(picks, draw(7))
    assert not torch.equal(picks, draw(8))
    cols = (picks - torch.arange(n) * n).long()  # (draws, n) chosen column per anchor
    forbidden = mask | torch.eye(n, dtype=torch.bool)
    for i in range(n):
        chosen = set(cols[:, i].tolist())
        allowed = {j for j in range(n) if not forbidden[i, j]}
        assert chosen <= allowed
        assert len(chosen) > 1  # it varies, not a fixed pick
    assert set(cols[:, 3].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("strategy", ["random", "batch_hard", "semi_hard"])
def test_row_without_valid_negative_gives_zero_loss(strategy: Strategy) -> None:
    dist = torch.tensor([[0.5, 0.4], [0.3, 0.2]], requires_grad=True)
    mask = torch.tensor([[False, True], [False, False]])  # anchor 0 has nothing left
    d_an = select_negatives(dist, strategy, 0.2, positives_mask=mask, generator=torch.Generator())
    assert torch.isfinite(d_an).all()
    loss = triplet_margin(dist.diagonal(), d_an, 0.2)
    assert loss[0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[1].item() == pytest.approx(0.2 - 0.3 + 0.2)
    loss.sum().backward()
    assert dist.grad is not None and torch.isfinite(dist.grad).all()
    assert dist.grad[0].abs().sum().item() == pytest.approx(0.0, abs=1e-6)

    single = select_negatives(torch.tensor([[0.4]]), strategy, 0.3)  # a batch of one
    assert single.item() == pytest.approx(0.7)


def test_select_negatives_rejects_given_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="given"):
        select_negatives(DIST, "given", 0.2)
    with pytest.raises(ValueError, match="m >= n"):
        select_negatives(DIST[:, :2], "batch_hard", 0.2)
    with pytest.raises(ValueError, match="positives_mask"):
        select_negatives(DIST, "batch_hard", 0.2, positives_mask=torch.zeros(3, 3, dtype=torch.bool))


def test_extra_negative_columns_are_candidates_for_every_anchor() -> None:
    extra = torch.tensor([[0.45], [0.9], [0.05], [0.9]])
    out = select_negatives(torch.cat([DIST, extra], 1), "batch_hard", 0.2)
    torch.testing.assert_close(out, torch.tensor([0.4, 0.3, 0.05, 0.31]))


# --- info_nce ------------------------------------------------------------------------------------------


def _manual_clip_loss(sim: Tensor, scale: float, drop: Tensor | None = None) -> float:
    logits = (sim * scale).tolist()
    n = len(logits)
    keep = [[drop is None or i == j or not bool(drop[i, j]) for j in range(n)] for i in range(n)]
    rows = [
        -math.log(math.exp(logits[i][i]) / sum(math.exp(logits[i][j]) for j in range(n) if keep[i][j]))
        for i in range(n)
    ]
    cols = [
        -math.log(math.exp(logits[j][j]) / sum(math.exp(logits[i][j]) for i in range(n) if keep[i][j]))
        for j in range(n)
    ]
    return (sum(rows) / n + sum(cols) / n) / 2


SIM = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.5, 0.4], [0.0, 0.6, 0.2]])


def test_info_nce_matches_hand_cross_entropy() -> None:
    ls = torch.tensor(math.log(10.0))
    assert info_nce(SIM, ls).item() == pytest.approx(_manual_clip_loss(SIM, 10.0), rel=1e-5)


def test_info_nce_decreases_when_diagonal_similarity_increases() -> None:
    ls = torch.tensor(math.log(10.0))
    assert info_nce(SIM + 0.3 * torch.eye(3), ls) < info_nce(SIM, ls)


def test_info_nce_positives_mask_drops_entries_from_denominators() -> None:
    ls = torch.tensor(math.log(10.0))
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[2, 1] = True  # text 2 also describes image 1
    mask[0, 0] = True  # the diagonal stays a target whatever the mask says
    got = info_nce(SIM, ls, positives_mask=mask)
    assert got.item() == pytest.approx(_manual_clip_loss(SIM, 10.0, mask), rel=1e-5)
    assert got < info_nce(SIM, ls)  # the 0.6 was the strongest competitor of row 2 and column 1


# --- the nn.Module losses --------------------------------------------------------------------------------


def test_triplet_loss_backward_reaches_both_heads() -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    for strategy in ("random", "batch_hard", "semi_hard", "given"):
        for distance in ("cosine", "euclidean"):
            model.zero_grad()
            loss_fn = TripletLoss(model, margin=0.5, distance=distance, strategy=strategy)
            loss = loss_fn(torch.randn(5, 6), torch.randn(5, 5), torch.randn(5, 5))
            assert torch.isfinite(loss) and loss.ndim == 0
            loss.backward()
            for head in (model.text, model.image):
                assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_triplet_loss_parameters_include_the_model() -> None:
    model = TwoHeads()
    assert {id(p) for p in model.parameters()} <= {id(p) for p in TripletLoss(model).parameters()}


def test_triplet_loss_argument_errors() -> None:
    model = TwoHeads()
    with pytest.raises(ValueError, match="negative_inputs"):
        TripletLoss(model, strategy="given")(torch.randn(3, 6), torch.randn(3, 5))
    for kwargs in ({"margin": 0.0}, {"margin": -0.1}, {"distance": "dot"}, {"strategy": "hardest"}):
        with pytest.raises(ValueError):
            TripletLoss(model, **kwargs)
    with pytest.raises(TypeError, match="embed_anchor"):
        TripletLoss(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init_temperature"):
        InfoNCELoss(model, init_temperature=0.0)


def test_loss_from_embeddings_on_plain_tensors() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # perfect pairs, orthogonal negatives: cosine d_an = 1 > 0 + margin -> no loss in either direction
    for strategy in ("random", "batch_hard", "semi_hard"):
        loss = TripletLoss.loss_from_embeddings(a, p, None, 0.2, "cosine", strategy, symmetric=True)
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # a given negative identical to the positive: loss = 0 - 0 + margin for each row
    loss = TripletLoss.loss_from_embeddings(a, p, p, 0.3, "cosine", "given")
    assert loss.item() == pytest.approx(0.3)


def test_positives_mask_through_the_module() -> None:
    # anchors 0 and 1 are two captions of one image: the image copies must not be each other's negatives
    a = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    unmasked = TripletLoss.loss_from_embeddings(a, p, None, 0.2, "cosine", "batch_hard", symmetric=True)
    masked = TripletLoss.loss_from_embeddings(
        a, p, None, 0.2, "cosine", "batch_hard", positives_mask=mask, symmetric=True
    )
    assert unmasked.item() > 0.1 and masked.item() == pytest.approx(0.0, abs=1e-6)


def _toy_problem(n_classes: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    text_proto, image_proto = torch.randn(n_classes, 6, generator=g), torch.randn(n_classes, 5, generator=g)
    text = text_proto + 0.1 * torch.randn(n_classes, 6, generator=g)
    image = image_proto + 0.1 * torch.randn(n_classes, 5, generator=g)
    negatives = image.roll(1, 0)  # another class's image
    return text, image, negatives


def _train(loss_fn: nn.Module, batch: tuple[Tensor, ...], steps: int = 40) -> tuple[float, float]:
    opt = torch.optim.SGD(loss_fn.parameters(), lr=0.5)
    with torch.no_grad():
        before = float(loss_fn(*batch))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(*batch).backward()
        opt.step()
    with torch.no_grad():
        return before, float(loss_fn(*batch))


@pytest.mark.parametrize("strategy", ["given", "random", "batch_hard", "semi_hard"])
def test_sgd_reduces_triplet_loss(strategy: Strategy) -> None:
    torch.manual_seed(0)
    text, image, negatives = _toy_problem()
    loss_fn = TripletLoss(TwoHeads(), margin=0.5, strategy=strategy)
    batch = (text, image, negatives) if strategy == "given" else (text, image)
    before, after = _train(loss_fn, batch)
    assert before > 0 and after < 0.5 * before


def test_sgd_reduces_info_nce_and_learns_the_temperature() -> None:
    torch.manual_seed(0)
    text, image, _ = _toy_problem()
    loss_fn = InfoNCELoss(TwoHeads(), init_temperature=0.5)
    start = loss_fn.logit_scale.item()
    before, after = _train(loss_fn, (text, image))
    assert after < 0.5 * before
    assert loss_fn.logit_scale.item() != start
    frozen = InfoNCELoss(TwoHeads(), learn_temperature=False)
    assert not frozen.logit_scale.requires_grad
    assert frozen.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_info_nce_logit_scale_is_capped_at_100() -> None:
    a, p = torch.randn(4, 3), torch.randn(4, 3)
    capped = InfoNCELoss.loss_from_embeddings(a, p, torch.tensor(math.log(1000.0)))
    assert capped.item() == pytest.approx(
        InfoNCELoss.loss_from_embeddings(a, p, torch.tensor(math.log(100.0))).item()
    )


def test_given_negatives_join_in_batch_candidates_with_the_mask_padded() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[False, True], [True, False]])  # two captions of one image: no in-batch negative

    def loss(n: Tensor | None) -> float:
        return TripletLoss.loss_from_embeddings(
            a, p, n, 0.2, "cosine", "batch_hard", positives_mask=mask
        ).item()

    far, near = torch.tensor([[-1.0, 0.0]] * 3), torch.tensor([[1.0, 0.05]] * 3)  # k=3 extra columns
    assert loss(None) == pytest.approx(0.0, abs=1e-6)
    assert loss(far) == pytest.approx(0.0, abs=1e-6)
    assert loss(near) > 0.1
