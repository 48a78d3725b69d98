"""PoseNet: shapes, ablation switches, tied weights, initialisation, size, and a tiny overfit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from arkpose.config import ModelConfig
from arkpose.config_check import problems
from arkpose.loss import compute_losses
from arkpose.model import (
    AdaptiveConv2d,
    AdaptiveUnit,
    RegularUnit,
    build_model,
    count_params_and_macs,
)
from arkpose.presets import preset
from arkpose.runtime import configure_threads

configure_threads()  # ARKPOSE_THREADS; torch's default (all cores) thrashes on shared CPUs
NANO = preset("smoke").model  # nano-w16 with its CPU head widths


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (96, 32)])
def test_output_shapes_square_and_non_square(size):
    torch.manual_seed(0)
    model = build_model(NANO, 5).eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w), return_transforms=True)
    assert out["heatmaps"].shape == (2, 5, h // 4, w // 4)
    assert out["center"].shape == (2, 1, h // 4, w // 4)
    assert out["offsets"].shape == (2, 10, h // 4, w // 4)
    names = {f"heatmap.{b}.t{i}" for b in range(3) for i in (1, 2)} | {"regression.t1", "regression.t2"}
    assert set(out["transforms"]) == names
    assert all(t.shape == (2, 4, h // 4, w // 4) for t in out["transforms"].values())
    # Official init: every T is exactly zero before training.
    assert all(torch.count_nonzero(t) == 0 for t in out["transforms"].values())
    assert "transforms" not in model(torch.randn(1, 3, h, w))


def test_input_size_must_be_a_multiple_of_32():
    model = build_model(NANO, 3)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 64, 80))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 64, 64))


def test_guidance_switch_changes_only_the_regression_input_channels():
    on = _shapes(build_model(dataclasses.replace(NANO, guidance=True), 5))
    off = _shapes(build_model(dataclasses.replace(NANO, guidance=False), 5))
    assert on.keys() == off.keys()
    diff = {k for k in on if on[k] != off[k]}
    assert diff == {"regression_head.transition.0.weight"}
    assert on[next(iter(diff))][1] - off[next(iter(diff))][1] == 5


def test_guidance_gradients_reach_the_heatmap_head_only_when_on():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for guidance in (True, False):
        model = build_model(dataclasses.replace(NANO, guidance=guidance), 3)
        for p in model.heatmap_head.classifier.parameters():
            torch.nn.init.normal_(p)
        model(x)["offsets"].square().sum().backward()
        grad = model.heatmap_head.classifier.weight.grad
        reached = grad is not None and torch.count_nonzero(grad) > 0
        assert reached == guidance  # heatmaps are not detached in the guided head


def test_adaptive_switch_swaps_only_the_units():
    on = build_model(dataclasses.replace(NANO, adaptive=True), 5)
    off = build_model(dataclasses.replace(NANO, adaptive=False), 5)
    unit_prefixes = ("heatmap_head.branches.", "regression_head.unit.")
    s_on, s_off = _shapes(on), _shapes(off)
    rest_on = {k: v for k, v in s_on.items() if not k.startswith(unit_prefixes)}
    rest_off = {k: v for k, v in s_off.items() if not k.startswith(unit_prefixes)}
    assert rest_on == rest_off
    assert all(isinstance(u, AdaptiveUnit) for u in [*on.heatmap_head.branches, on.regression_head.unit])
    assert all(isinstance(u, RegularUnit) for u in [*off.heatmap_head.branches, off.regression_head.unit])
    assert [u.dilation for u in off.heatmap_head.branches] == [1, 2, 3] == [u.dilation for u in on.heatmap_head.branches]
    assert off.eval()(torch.zeros(1, 3, 32, 32), return_transforms=True)["transforms"] == {}


@pytest.mark.parametrize("adaptive", [True, False])
def test_heatmap_branches_tie_conv_weights_not_biases_or_bns(adaptive):
    model = build_model(dataclasses.replace(NANO, adaptive=adaptive), 3)
    b0, b1, b2 = model.heatmap_head.branches
    for name in b0.tied:
        assert getattr(b1, name).weight is getattr(b0, name).weight is getattr(b2, name).weight
    assert b1.bn1.weight is not b0.bn1.weight and b1.bn2.running_mean is not b0.bn2.running_mean
    if adaptive:
        assert b1.tconv1.bias is not b0.tconv1.bias


def test_official_initialisation():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(NANO, regression_channels=64), 3)
    w = model.backbone.stage4[0].branches[0][0].conv1.weight
    assert 0.0007 < w.std().item() < 0.0013
    assert torch.all(model.regression_head.classifier.bias == 0)
    unit = model.regression_head.unit
    for tconv in (unit.tconv1, unit.tconv2):
        assert torch.all(tconv.weight == 0) and torch.all(tconv.bias == 0)
    bound = 1 / (64 * 9) ** 0.5
    assert unit.aconv1.weight.abs().max().item() <= bound
    assert unit.aconv1.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    assert torch.all(unit.bn1.weight == 1) and torch.all(unit.bn1.bias == 0)


def test_w32_and_w48_size_match_the_official_models():
    w32 = ModelConfig(backbone="w32")
    params, macs = count_params_and_macs(w32, 512)
    assert params == 30_678_516
    assert macs == 64_387_284_992  # arkpose runs the heatmap transition once
    official_macs = count_params_and_macs(w32, 512, as_official=True)[1]
    assert official_macs == 64_890_601_472 and round(official_macs / 1e9, 1) == 64.9
    params48, _ = count_params_and_macs(ModelConfig(backbone="w48", heatmap_channels=48), 640)
    assert params48 == 66_803_428
    # MACs scale with the area: 256x512 is half of 512x512.
    assert count_params_and_macs(NANO, (256, 512))[1] * 2 == count_params_and_macs(NANO, 512)[1]


def test_backbone_overrides_and_unknown_names():
    cfg = dataclasses.replace(NANO, backbone_widths=(8, 16, 24, 32), backbone_blocks=(2, 1, 1))
    model = build_model(cfg, 3)
    assert model.backbone.shape.widths == (8, 16, 24, 32)
    assert len(model.backbone.stage2[0].branches[0]) == 2
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model(dataclasses.replace(NANO, backbone="w33"), 3)


def _blob(cx, cy, sigma, size):
    ys = torch.arange(size, dtype=torch.float32)[:, None]
    xs = torch.arange(size, dtype=torch.float32)[None, :]
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


def _synthetic_batch(k=3, size=64, sigma=2.0):
    """4 images with one coloured Gaussian disc per keypoint and matching targets."""
    g = torch.Generator().manual_seed(0)
    h = size // 4
    images = torch.zeros(4, 3, size, size)
    heat = torch.zeros(4, k + 1, h, h)
    offsets = torch.zeros(4, 2 * k, h, h)
    weights = torch.zeros(4, 2 * k, h, h)
    for n in range(4):
        pts = torch.rand(k, 2, generator=g) * (h - 4) + 2
        for j in range(k):
            heat[n, j] = _blob(pts[j, 0], pts[j, 1], sigma, h)
            # grid coordinate u is input coordinate 4u + 1.5 (pixel centres)
            images[n, j % 3] += 2 * _blob(4 * pts[j, 0] + 1.5, 4 * pts[j, 1] + 1.5, 4 * sigma, size)
        c = pts.mean(0)
        heat[n, k] = _blob(c[0], c[1], 2.0, h)
        cx, cy = int(c[0]), int(c[1])
        for y in range(cy - 2, cy + 2):
            for x in range(cx - 2, cx + 2):
                offsets[n, 0::2, y, x] = pts[:, 0] - x
                offsets[n, 1::2, y, x] = pts[:, 1] - y
                weights[n, :, y, x] = 0.1
    batch = {
        "heatmaps": heat, "tradeoff_mask": torch.ones(4, 1, h, h), "ignore_mask": torch.ones(4, 1, h, h),
        "offsets": offsets, "offset_weights": weights,
    }
    return images, batch


def test_nano_overfits_four_synthetic_images():
    torch.manual_seed(0)
    images, batch = _synthetic_batch()
    model = build_model(NANO, 3)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        loss = compute_losses(model(images), batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] * 5 <= losses[0], losses


@pytest.mark.parametrize("sampler", ["auto", "grid_sample"])
def test_build_model_passes_the_cpu_sampler_to_every_adaptive_conv(sampler):
    model = build_model(dataclasses.replace(NANO, cpu_sampler=sampler), 3)
    convs = [m for m in model.modules() if isinstance(m, AdaptiveConv2d)]
    assert convs and all(m.sampler == sampler for m in convs)
    with pytest.raises(ValueError, match="sampler"):
        build_model(dataclasses.replace(NANO, cpu_sampler="deform"), 3)
    cfg = preset("smoke")
    cfg.model.cpu_sampler = "deform"
    assert problems(cfg) == [("model.cpu_sampler='deform' must be one of auto, padded, "
                              "embedding_bag, grid_sample")]
