"""The adaptive convolution against a direct per-pixel loop, and its identities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arkpose.model import adaptive
from arkpose.model.adaptive import (
    REGULAR_GRID,
    AdaptiveConv2d,
    AdaptiveUnit,
    PaddedBilinear,
    RegularUnit,
    adaptive_conv2d,
    bilinear_columns,
    sampling_positions,
    transform_to_offsets,
)
from arkpose.runtime import configure_threads

configure_threads()  # ARKPOSE_THREADS; torch's default (all cores) thrashes on shared CPUs

IDENTITY = torch.tensor([1.0, 0.0, 0.0, 1.0])


def direct_adaptive_conv(x, transform, weight, dilation):
    """Per-pixel loop: tap i of pixel p samples p + d·g_i + (T(p) − I)·g_i, bilinear, zeros outside."""
    n, c, h, w = x.shape
    rows = []
    for b in range(n):
        plane = []
        for y in range(h):
            line = []
            for xx in range(w):
                t = transform[b, :, y, xx]
                acc = torch.zeros(weight.shape[0], dtype=x.dtype)
                for i in range(9):
                    gy, gx = float(REGULAR_GRID[0][i]), float(REGULAR_GRID[1][i])
                    py = y + dilation * gy + (t[0] * gy + t[1] * gx - gy)
                    px = xx + dilation * gx + (t[2] * gy + t[3] * gx - gx)
                    y0, x0 = math.floor(py.item()), math.floor(px.item())
                    ly, lx = py - y0, px - x0
                    sample = torch.zeros(c, dtype=x.dtype)
                    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
                        for xc, wx in ((x0, 1 - lx), (x0 + 1, lx)):
                            if 0 <= yy < h and 0 <= xc < w:
                                sample = sample + wy * wx * x[b, :, yy, xc]
                    acc = acc + weight[:, :, i // 3, i % 3] @ sample
                line.append(acc)
            plane.append(torch.stack(line, -1))
        rows.append(torch.stack(plane, -2))
    return torch.stack(rows)


def _inputs(seed, n=2, c=3, o=2, h=5, w=6, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    t = IDENTITY.double().view(1, 4, 1, 1) + scale * torch.randn(n, 4, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64)
    return x, t, wt


@pytest.mark.parametrize("path", adaptive.CPU_SAMPLERS)
@pytest.mark.parametrize("dilation", [1, 2])
def test_matches_direct_loop_forward_and_gradients(dilation, path):
    # Every CPU training sampler (the leaves require grad, so the training path runs).
    x, t, wt = _inputs(dilation)
    pos_y, pos_x = sampling_positions(t, dilation)
    h, w = x.shape[-2:]
    outside = (pos_y <= -1) | (pos_y >= h) | (pos_x <= -1) | (pos_x >= w)
    partial = ~outside & ((pos_y < 0) | (pos_y > h - 1) | (pos_x < 0) | (pos_x > w - 1))
    assert outside.any() and partial.any(), "the test must sample outside and across the border"

    leaves = [v.clone().requires_grad_() for v in (x, t, wt)]
    ours = adaptive_conv2d(*leaves, dilation=dilation, sampler=path)
    ref_leaves = [v.clone().requires_grad_() for v in (x, t, wt)]
    ref = direct_adaptive_conv(*ref_leaves, dilation=dilation)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)

    upstream = torch.randn(ours.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = torch.autograd.grad(ours, leaves, upstream)
    ref_grads = torch.autograd.grad(ref, ref_leaves, upstream)
    for name, g, r in zip(("x", "T", "weight"), grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=f"gradient wrt {name}")


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_identity_transform_is_a_dilated_conv(dilation):
    x, _, wt = _inputs(3, n=2, c=4, o=5, h=9, w=7)
    t = IDENTITY.double().view(1, 4, 1, 1).expand(2, 4, 9, 7)
    expected = F.conv2d(x, wt, padding=dilation, dilation=dilation)
    torch.testing.assert_close(adaptive_conv2d(x, t, wt, dilation), expected, rtol=1e-12, atol=1e-12)


def test_zero_transform_is_a_1x1_conv_with_the_summed_kernel():
    x, _, wt = _inputs(4, n=1, c=4, o=3, h=6, w=8)
    t = torch.zeros(1, 4, 6, 8, dtype=torch.float64)
    expected = F.conv2d(x, wt.sum(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(adaptive_conv2d(x, t, wt, 1), expected, rtol=1e-12, atol=1e-12)
    # The dilation scales only the regular part: T = 0 with d = 2 is a plain 3x3 conv.
    torch.testing.assert_close(adaptive_conv2d(x, t, wt, 2), F.conv2d(x, wt, padding=1), rtol=1e-12, atol=1e-12)


def test_offsets_layout_is_deform_conv2d_layout():
    _, t, _ = _inputs(5)
    off = transform_to_offsets(t)  # (N, 18, H, W): [dy_0, dx_0, dy_1, dx_1, ...]
    pos_y, pos_x = sampling_positions(t, dilation=2)
    h, w = t.shape[-2:]
    for i in range(9):
        gy, gx = REGULAR_GRID[0][i], REGULAR_GRID[1][i]
        base_y = torch.arange(h, dtype=t.dtype)[:, None] + 2 * gy
        base_x = torch.arange(w, dtype=t.dtype)[None, :] + 2 * gx
        torch.testing.assert_close(pos_y[..., i], base_y + off[:, 2 * i])
        torch.testing.assert_close(pos_x[..., i], base_x + off[:, 2 * i + 1])


def test_channels_last_and_float32_agree_with_contiguous_float64():
    x, t, wt = _inputs(6, n=2, c=8, o=4, h=8, w=8, scale=0.5)
    ref = adaptive_conv2d(x, t, wt, 1)
    xf = x.float().contiguous(memory_format=torch.channels_last)
    out = adaptive_conv2d(xf, t.float().contiguous(memory_format=torch.channels_last), wt.float(), 1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise():
    x, t, wt = _inputs(7)
    with pytest.raises(ValueError, match="transform"):
        adaptive_conv2d(x, t[:, :3], wt)
    with pytest.raises(ValueError, match="3x3 conv"):
        adaptive_conv2d(x, t, wt[:, :2])


def test_units_official_init_and_shapes():
    torch.manual_seed(0)
    unit = AdaptiveUnit(8, dilation=2)
    bound = 1 / math.sqrt(8 * 9)
    assert unit.aconv1.weight.abs().max() <= bound and unit.aconv1.weight.abs().max() > 0.5 * bound
    x = torch.randn(2, 8, 6, 10)
    out, t = unit(x)
    assert out.shape == x.shape and set(t) == {"t1", "t2"} and t["t1"].shape == (2, 4, 6, 10)
    regular = RegularUnit(8, dilation=2)
    assert regular.conv1.dilation == (2, 2) and regular.conv1.padding == (2, 2)
    out, t = regular(x)
    assert out.shape == x.shape and t == {}
    assert isinstance(AdaptiveConv2d(3, 5).weight, torch.nn.Parameter)


def test_low_precision_inputs_sample_at_float32_positions():
    # bf16 holds T fine but not a position like 60.3 (spacing 0.25 there): sampling must
    # not happen at bf16 positions.
    x, t, wt = (v.bfloat16() for v in _inputs(8, n=1, c=8, o=4, h=64, w=64, scale=0.3))
    ref = adaptive_conv2d(x.float(), t.float(), wt.float(), 1)
    low = adaptive_conv2d(x, t, wt, 1)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().max().item()
    assert err < 0.05 * ref.abs().max().item(), err


def test_padded_sampler_gradcheck_far_outside_and_on_the_grid():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    # Positions from far outside (whole sample zero) across the borders to inside, plus
    # exact integers (T = I), where the bilinear weights have a kink.
    pos_y = (torch.rand(2, 4, 5, 6, generator=g, dtype=torch.float64) * 9 - 3).requires_grad_()
    pos_x = (torch.rand(2, 4, 5, 6, generator=g, dtype=torch.float64) * 11 - 3).requires_grad_()
    assert ((pos_y < -1) | (pos_x > 5)).any()
    torch.autograd.gradcheck(PaddedBilinear.apply, (x, pos_y, pos_x))
    ints = (pos_y.detach().round(), pos_x.detach().round())
    torch.testing.assert_close(PaddedBilinear.apply(x, *ints), bilinear_columns(x, *ints), rtol=0, atol=1e-15)
    # At integer positions the derivative is the forward difference, as in the direct loop.
    ref_leaves = [v.clone().requires_grad_() for v in ints]
    ours_leaves = [v.clone().requires_grad_() for v in ints]
    up = torch.randn(2, 20, 18, generator=g, dtype=torch.float64)
    ref = torch.autograd.grad(bilinear_columns(x.detach(), *ref_leaves), ref_leaves, up)
    ours = torch.autograd.grad(PaddedBilinear.apply(x.detach(), *ours_leaves), ours_leaves, up)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_huge_and_nan_positions_read_nothing_outside_the_map():
    # An untrained or diverged T can put a tap at 1e30 or NaN; the cast to a table row must
    # not index outside the table (it did, for a moment, with the clamp before the cast).
    x = torch.randn(1, 3, 4, 5)
    pos_y = torch.full((1, 4, 5, 2), 1.5)
    pos_x = torch.full((1, 4, 5, 2), 2.5)
    pos_y[0, 0, 0, 0], pos_x[0, 0, 1, 0], pos_y[0, 1, 0, 1] = 1e30, -1e30, float("nan")
    for columns in (bilinear_columns(x, pos_y, pos_x), PaddedBilinear.apply(x, pos_y, pos_x)):
        cols = columns.view(4, 5, 2, 3)
        assert torch.equal(cols[0, 0, 0], torch.zeros(3)) and torch.equal(cols[0, 1, 0], torch.zeros(3))
        assert cols[1, 0, 1].isnan().all()  # a NaN position gives NaN, as the direct formula
        inside = x[0, :, 1:3, 2:4].mean((1, 2))  # the bilinear centre of 4 pixels
        torch.testing.assert_close(cols[2, 2, 0], inside)


@pytest.mark.parametrize("needs", ["x", "T", "weight"])
def test_padded_sampler_partial_gradients_in_float32(needs):
    # Only some inputs need a gradient (frozen layers); float32 channels-last input.
    x, t, wt = _inputs(10, n=2, c=8, o=4, h=6, w=7, scale=0.8)
    ref_leaves = [v.clone().requires_grad_() for v in (x, t, wt)]
    up = torch.randn(2, 4, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    ref = torch.autograd.grad(direct_adaptive_conv(*ref_leaves, dilation=1), ref_leaves, up)
    k = ("x", "T", "weight").index(needs)
    leaves = [x.float().contiguous(memory_format=torch.channels_last), t.float(), wt.float()]
    leaves[k].requires_grad_()
    (grad,) = torch.autograd.grad(adaptive_conv2d(*leaves, dilation=1, sampler="padded"), leaves[k],
                                  up.float())
    torch.testing.assert_close(grad.double(), ref[k], rtol=1e-4, atol=1e-4)


def test_unknown_sampler_is_refused():
    x, t, wt = _inputs(12)
    with pytest.raises(ValueError, match="sampler"):
        adaptive_conv2d(x, t, wt.requires_grad_(), sampler="deform")
