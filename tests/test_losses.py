"""Each loss term on tiny tensors whose value is computed by hand."""

import math

import pytest
import torch

from napari_medcam.engine import losses


def test_binarize_forward_is_hard_and_gradient_is_identity():
    s = torch.tensor([0.2, 0.5, 0.51, 0.9], requires_grad=True)
    m = losses.binarize(s, 0.5)
    assert m.tolist() == [0.0, 0.0, 1.0, 1.0]
    (m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert s.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_area_is_mean_of_soft_mask():
    s = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    assert losses.area_loss(s).item() == pytest.approx(0.5)


def test_binarization_is_zero_on_binary_and_quarter_at_half():
    assert losses.binarization_loss(torch.tensor([[[[0.0, 1.0]]]])).item() == 0.0
    assert losses.binarization_loss(torch.full((1, 1, 2, 2), 0.5)).item() == pytest.approx(0.25)


def test_tv_counts_both_directions_per_pixel():
    # [[0, 1], [1, 1]]: horizontal |0-1| + |1-1| = 1, vertical |0-1| + |1-1| = 1 → 2 / 4 px
    s = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert losses.tv_loss(s).item() == pytest.approx(0.5)
    assert losses.tv_loss(torch.ones(1, 1, 3, 3)).item() == 0.0


def test_tv_works_on_volumes():
    s = torch.zeros(1, 1, 2, 2, 2)
    s[..., 0, 0, 0] = 1.0  # one corner voxel: 3 neighbours differ by 1
    assert losses.tv_loss(s).item() == pytest.approx(3 / 8)


def test_ce_is_negative_log_probability():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = [0.25, 0.75]
    assert losses.ce_loss(logits, 1).item() == pytest.approx(-math.log(0.75))
    assert losses.robustness_loss(logits.repeat(3, 1), 0).item() == pytest.approx(-math.log(0.25))


def test_kl_zero_for_equal_and_matches_formula():
    a = torch.tensor([[1.0, 2.0]])
    assert losses.kl_loss(a, a, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    p = torch.softmax(a / 2, 1)[0]
    b = torch.tensor([[2.0, 0.0]])
    q = torch.softmax(b / 2, 1)[0]
    expected = float((p * (p.log() - q.log())).sum())
    assert losses.kl_loss(a, b, 2.0).item() == pytest.approx(expected)


def test_feature_distance_channel_normalised_mse():
    ref = torch.tensor([[[[0.0, 2.0]], [[0.0, 20.0]]]])  # channel stds 1 and 10
    other = ref + torch.tensor([[[[1.0, 1.0]], [[10.0, 10.0]]]])
    # every element is off by exactly one channel std → mean squared error 1
    assert losses.feature_distance(ref, other).item() == pytest.approx(1.0, rel=1e-4)


def test_feature_distance_cosine_for_vectors():
    ref = torch.tensor([[1.0, 0.0]])
    assert losses.feature_distance(ref, torch.tensor([[0.0, 3.0]])).item() == pytest.approx(1.0)
    assert losses.feature_distance(ref, torch.tensor([[5.0, 0.0]])).item() == pytest.approx(0.0)


def test_activation_loss_weights_layers():
    ref = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    other = [torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])]
    assert losses.activation_loss(ref, other, [2.0, 5.0]).item() == pytest.approx(2.0)


def test_linear_slope_keeps_value_and_constant_gradient():
    z = torch.tensor([-8.0, 0.0, 8.0], requires_grad=True)
    s = torch.sigmoid(z)
    out = losses.linear_slope(z, s)
    assert torch.allclose(out, s)
    out.sum().backward()
    assert z.grad.tolist() == [0.25, 0.25, 0.25]  # no fading where the mask is crisp


def test_feature_distance_floors_silent_channels():
    # channel 2 is silent on the original (std 0): its scale is floored at 10 % of the
    # layer's mean std (0.1 × 0.5), not ~1e-6
    ref = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]])
    other = ref + torch.tensor([[[[0.0, 0.0]], [[0.05, 0.05]]]])
    assert losses.feature_distance(ref, other).item() == pytest.approx(0.5, rel=1e-3)


def test_shared_multipliers_answer_every_batch_per_tile_ones_only_their_tile():
    """An amortised fit samples each tile rarely: its shared multiplier must rise at every
    batch whose masks lose the decision (by the batch's mean violation), while the
    per-image engine's multipliers stay one per tile."""
    from napari_medcam.engine.config import MedCAMConfig
    from napari_medcam.engine.objective import Objective

    cfg = MedCAMConfig.fast()
    lost, kept = math.log(1e-3), math.log(0.999)  # decision lost / kept on the mask
    shared = Objective(cfg, [0.99] * 100, shared=True)
    start = shared.multipliers(0)["mu_keep"]
    for step in range(5):  # five batches of different tiles, all losing the decision
        tiles = list(range(8 * step, 8 * step + 8))
        shared.update_batch(tiles, [lost] * 8, [kept] * 8)
    assert shared.multipliers(99)["mu_keep"] == pytest.approx(
        start * math.exp(5 * cfg.multiplier_rate)
    )
    assert shared.multipliers(99)["mu_rob"] < start  # the kept constraint relaxes
    half = Objective(cfg, [0.99] * 2, shared=True)
    half.update_batch([0, 1], [lost, half.goal[1]], [kept, kept])  # violations 1 and 0
    assert half.multipliers(1)["mu_keep"] == pytest.approx(
        start * math.exp(0.5 * cfg.multiplier_rate)
    )
    own = Objective(cfg, [0.99] * 100)
    own.update_batch([0, 1], [lost, lost], [kept, kept])
    assert own.multipliers(0)["mu_keep"] > start and own.multipliers(99)["mu_keep"] == start
