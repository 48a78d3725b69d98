"""Losses on hand-made tensors, values computed by hand."""

from __future__ import annotations

import pytest
import torch

from arkpose.loss import compute_losses, heatmap_loss, offset_loss, smooth_l1


def test_heatmap_loss_by_hand():
    # N = 2 images, 2 channels (1 keypoint + center), 1x2 maps.
    pred = torch.tensor([[[[1.0, 0.0]], [[0.5, 0.0]]], [[[0.0, 0.0]], [[0.0, 2.0]]]])
    gt = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])
    tradeoff = torch.tensor([[[[1.0, 0.1]]], [[[1.0, 0.1]]]])  # (N, 1, h, w) shared
    ignore = torch.tensor([[[[1.0, 1.0]]], [[[1.0, 0.0]]]])
    # image 0: squared errors [1, 0 | 0.25, 0] x mask 1 -> sum 1.25 / 4 = 0.3125
    # image 1: error only at (center, x=1) = 4, masked by ignore 0 -> 0
    assert heatmap_loss(pred, gt, tradeoff, ignore).item() == pytest.approx((0.3125 + 0.0) / 2)
    ignore_all = torch.ones(2, 1, 1, 2)
    # image 1 now: 4 x 0.1 / 4 = 0.1
    assert heatmap_loss(pred, gt, tradeoff, ignore_all).item() == pytest.approx((0.3125 + 0.1) / 2)
    # A per-keypoint mask (N, K+1, h, w) weights channels separately.
    per_kpt = torch.tensor([[[[0.5, 1.0]], [[1.0, 1.0]]], [[[1.0, 1.0]], [[1.0, 1.0]]]])
    assert heatmap_loss(pred, gt, per_kpt, ignore_all).item() == pytest.approx(((0.5 + 0.25) / 4 + 1.0) / 2)


def test_smooth_l1_and_offset_loss_by_hand():
    beta = 1 / 9
    d = torch.tensor([0.0, 0.05, -0.05, 1.0, -2.0])
    expected = torch.tensor([0.0, 0.5 * 0.05**2 * 9, 0.5 * 0.05**2 * 9, 1 - 0.5 / 9, 2 - 0.5 / 9])
    torch.testing.assert_close(smooth_l1(d, beta), expected)

    pred = torch.tensor([1.0, 0.05, 3.0, 0.0]).view(1, 4, 1, 1)
    gt = torch.zeros(1, 4, 1, 1)
    w = torch.tensor([0.5, 2.0, 0.0, 1.0]).view(1, 4, 1, 1)
    # 0.5·(1 − β/2) + 2·(0.5·0.05²/β) + 0·(3 − β/2) + 1·0, over three positive weights
    total = 0.5 * (1 - 0.5 / 9) + 2.0 * (0.5 * 0.05**2 * 9) + 0.0 + 1.0 * 0.0
    assert offset_loss(pred, gt, w).item() == pytest.approx(total / 3)


def test_offset_loss_without_positive_weights_is_zero_and_differentiable():
    pred = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = offset_loss(pred, torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 3, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(pred.grad) == 0


def test_compute_losses_total_is_heatmap_plus_lambda_offset():
    n, k, h, w = 2, 3, 4, 4
    g = torch.Generator().manual_seed(0)
    outputs = {
        "heatmaps": torch.rand(n, k, h, w, generator=g),
        "center": torch.rand(n, 1, h, w, generator=g),
        "offsets": torch.randn(n, 2 * k, h, w, generator=g),
    }
    batch = {
        "heatmaps": torch.rand(n, k + 1, h, w, generator=g),
        "tradeoff_mask": torch.rand(n, 1, h, w, generator=g),
        "ignore_mask": (torch.rand(n, 1, h, w, generator=g) > 0.2).float(),
        "offsets": torch.randn(n, 2 * k, h, w, generator=g),
        "offset_weights": (torch.rand(n, 2 * k, h, w, generator=g) > 0.7).float() * 0.3,
    }
    out = compute_losses(outputs, batch, offset_weight=0.01)
    pred = torch.cat([outputs["heatmaps"], outputs["center"]], 1)
    hand_heat = ((pred - batch["heatmaps"]) ** 2 * batch["tradeoff_mask"] * batch["ignore_mask"]).mean()
    d = (outputs["offsets"] - batch["offsets"]).abs()
    sl1 = torch.where(d < 1 / 9, 4.5 * d**2, d - 1 / 18)
    hand_off = (sl1 * batch["offset_weights"]).sum() / (batch["offset_weights"] > 0).sum()
    torch.testing.assert_close(out["heatmap"], hand_heat)
    torch.testing.assert_close(out["offset"], hand_off)
    torch.testing.assert_close(out["total"], hand_heat + 0.01 * hand_off)


def test_bad_inputs_name_the_problem():
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="tradeoff_mask"):
        heatmap_loss(x, x, torch.ones(1, 2, 2, 2), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="differ"):
        heatmap_loss(x, torch.zeros(1, 3, 2, 3), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="one shape"):
        offset_loss(x, x, torch.zeros(1, 3, 2, 1))
    with pytest.raises(KeyError, match="offset_weights"):
        compute_losses({"heatmaps": x, "center": x[:, :1], "offsets": x}, {"heatmaps": x})
