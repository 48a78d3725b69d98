"""The adaptive convolution (pixel-wise spatial transformer) and the residual units.

The adaptive 3x3 convolution samples tap ``i`` of output pixel ``p`` at

    p + d·g_i + (T(p) − I)·g_i,

where ``g_i = (dy_i, dx_i)`` runs over the regular 3x3 grid in row-major order, ``d`` is the
dilation and ``T(p)`` a 2x2 matrix predicted per pixel by a plain 3x3 conv (``tconv``, C→4,
with bias: ``T = [[t0, t1], [t2, t3]]`` acting on the column vector ``(dy, dx)``).
The dilation scales only the regular part (official code; method.md §1 ★), so T = I gives a
dilated conv and T = 0 gives a conv of dilation ``d − 1`` (a 1x1 conv with the summed kernel
when d = 1). Samples are bilinear with zeros outside the map. This is exactly torchvision's
``deform_conv2d`` (one group, no mask, padding = dilation = d) fed the 18-channel offsets
``[dy_0, dx_0, ..., dy_8, dx_8] = T·G − G``.

Implementation: the four bilinear corners of every (pixel, tap) are gathered and weighted in
one ``F.embedding_bag`` call over the channels-last rows of the input, which gives the
(N·H·W, 9·C) column matrix directly; one matmul with the kernel finishes the conv. On this
CPU that is ~7x faster than ``grid_sample`` (which writes channels-first) and differentiable
in the input and in T (through the bilinear weights). CPU training of narrow layers samples
with ``grid_sample`` instead (cheaper backward there); both paths are tested against a direct
per-pixel loop. Sampling positions are computed in at least float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Regular 3x3 grid, row-major taps k = 3·row + col: row 0 is dy, row 1 is dx.
REGULAR_GRID = ((-1, -1, -1, 0, 0, 0, 1, 1, 1), (-1, 0, 1, -1, 0, 1, -1, 0, 1))


def regular_grid(device=None, dtype=torch.float32) -> torch.Tensor:
    """The official ``regular_matrix``: (2, 9), row 0 dy, row 1 dx."""
    return torch.tensor(REGULAR_GRID, device=device, dtype=dtype)


def transform_to_offsets(transform: torch.Tensor) -> torch.Tensor:
    """Per-pixel T (N, 4, H, W) -> deformable offsets T·G − G (N, 18, H, W), [dy_0, dx_0, ...].

    The layout torchvision's ``deform_conv2d`` and mmdet's DCNv1 read; used for export,
    visualisation (Fig. 3) and tests, not by :func:`adaptive_conv2d` itself.
    """
    n, _, h, w = transform.shape
    g = regular_grid(transform.device, transform.dtype)
    t = transform.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2)
    off = torch.matmul(t, g) - g  # (N, H, W, 2, 9)
    return off.transpose(-1, -2).reshape(n, h, w, 18).permute(0, 3, 1, 2)


def sampling_positions(transform: torch.Tensor, dilation: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute sampling positions of the 9 taps: ``(y, x)``, each (N, H, W, 9), in pixels.

    transform: (N, 4, H, W) per-pixel T = [[t0, t1], [t2, t3]] acting on (dy, dx).
    """
    h, w = transform.shape[-2:]
    gy, gx = regular_grid(transform.device, transform.dtype)
    t0, t1, t2, t3 = (transform[:, k, :, :, None] for k in range(4))  # (N, H, W, 1)
    # Same grouping as the official code: offsets (T·G − G) first, then add to the base.
    off_y = t0 * gy + t1 * gx - gy
    off_x = t2 * gy + t3 * gx - gx
    ys = torch.arange(h, device=transform.device, dtype=transform.dtype)[:, None, None]
    xs = torch.arange(w, device=transform.device, dtype=transform.dtype)[None, :, None]
    return ys + dilation * gy + off_y, xs + dilation * gx + off_x


def bilinear_columns(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` at P positions per pixel, zeros outside the map.

    x: (N, C, H, W); pos_y, pos_x: (N, H, W, P) absolute pixel positions.
    Returns (N, H·W, P·C), ordered (pixel, position, channel): the im2col matrix.
    """
    n, c, h, w = x.shape
    p = pos_y.shape[-1]
    y0 = torch.floor(pos_y)
    x0 = torch.floor(pos_x)
    ly, lx = pos_y - y0, pos_x - x0
    y0, x0 = y0.long(), x0.long()
    rows = []
    weights = []
    base = (torch.arange(n, device=x.device) * (h * w))[:, None, None, None]
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            # Outside corners point at any valid row with weight 0: zero padding.
            rows.append(base + yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))
            weights.append(wy * wx * inside.to(x.dtype))
    index = torch.stack(rows, -1).reshape(-1, 4)
    weight = torch.stack(weights, -1).reshape(-1, 4).to(x.dtype)
    table = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # free when x is channels_last
    cols = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
    return cols.view(n, h * w, p * c)


def grid_sample_columns(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor) -> torch.Tensor:
    """Same samples as :func:`bilinear_columns` by ``F.grid_sample``, laid out (N, P·C, H·W)
    in (channel, position) order."""
    n, c, h, w = x.shape
    p = pos_y.shape[-1]
    # align_corners=False maps normalised g to pixel ((g + 1)·size − 1) / 2.
    grid = torch.stack([(2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1], -1)  # (N, H, W, P, 2)
    grid = grid.permute(0, 3, 1, 2, 4).reshape(n, p * h, w, 2)
    dtype = torch.promote_types(x.dtype, grid.dtype)  # a bf16 grid would misplace samples
    cols = F.grid_sample(x.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return cols.to(x.dtype).reshape(n, c * p, h * w)


# Below this many channels, CPU training samples with grid_sample: embedding_bag's backward
# sorts all 4·9·N·H·W indices, which dominates for narrow layers (measured on a 2-core CPU).
GRID_SAMPLE_MAX_CHANNELS = 64


def adaptive_conv2d(
    x: torch.Tensor, transform: torch.Tensor, weight: torch.Tensor, dilation: int = 1
) -> torch.Tensor:
    """Adaptive 3x3 conv, stride 1, no bias.

    x: (N, C, H, W); transform: (N, 4, H, W) per-pixel T; weight: (O, C, 3, 3).
    Returns (N, O, H, W) (channels-last memory on the embedding_bag path).
    """
    n, c, h, w = x.shape
    o = weight.shape[0]
    if weight.shape[1:] != (c, 3, 3):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit a 3x3 conv on {c} channels")
    if transform.shape != (n, 4, h, w):
        raise ValueError(f"transform must be {(n, 4, h, w)}, got {tuple(transform.shape)}")
    # Positions in at least float32: in bf16/fp16 (autocast) they would be off by up to a pixel.
    precise = transform.to(torch.promote_types(transform.dtype, torch.float32))
    pos_y, pos_x = sampling_positions(precise, dilation)
    training = torch.is_grad_enabled() and (x.requires_grad or transform.requires_grad or weight.requires_grad)
    if training and x.device.type == "cpu" and c <= GRID_SAMPLE_MAX_CHANNELS:
        cols = grid_sample_columns(x, pos_y, pos_x)  # (N, 9C, HW), (channel, tap) order
        # A 1x1 conv rather than a batched matmul: its backward needs no transposed copies.
        return F.conv2d(cols.view(n, c * 9, h, w), weight.reshape(o, c * 9, 1, 1))
    cols = bilinear_columns(x, pos_y, pos_x)  # (N, HW, 9C), (tap, channel) order
    kernel = weight.permute(0, 2, 3, 1).reshape(o, 9 * c)  # same (tap, channel) order
    out = torch.matmul(cols, kernel.t())  # (N, HW, O)
    return out.view(n, h, w, o).permute(0, 3, 1, 2)


class AdaptiveConv2d(nn.Module):
    """3x3 adaptive conv (no bias) whose taps follow a per-pixel transform; see module doc."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.dilation = in_channels, out_channels, dilation
        self.kernel_size = (3, 3)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official DCN init: uniform ±1/sqrt(C·9).
        bound = 1.0 / math.sqrt(self.in_channels * 9)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
        return adaptive_conv2d(x, transform, self.weight, self.dilation)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, dilation={self.dilation}"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.1)


class AdaptiveUnit(nn.Module):
    """Residual block of two adaptive 3x3 convs ("ART"), both T predicted from the block input.

    ``out = relu(bn1(aconv1(x; T1))); out = bn2(aconv2(out; T2)); return relu(out + x)``,
    T1 = tconv1(x), T2 = tconv2(x). forward(x (N, C, H, W)) -> (out (N, C, H, W),
    {"t1": T1, "t2": T2} each (N, 4, H, W)).
    """

    adaptive = True
    # Submodules whose weights the heatmap head ties across its dilated branches.
    tied = ("tconv1", "aconv1", "tconv2", "aconv2")

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.dilation = dilation
        self.tconv1 = nn.Conv2d(channels, 4, 3, padding=1, bias=True)
        self.aconv1 = AdaptiveConv2d(channels, channels, dilation)
        self.bn1 = _bn(channels)
        self.tconv2 = nn.Conv2d(channels, 4, 3, padding=1, bias=True)
        self.aconv2 = AdaptiveConv2d(channels, channels, dilation)
        self.bn2 = _bn(channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t1 = self.tconv1(x)
        t2 = self.tconv2(x)
        out = F.relu(self.bn1(self.aconv1(x, t1)))
        out = self.bn2(self.aconv2(out, t2))
        return F.relu(out + x), {"t1": t1, "t2": t2}


class RegularUnit(nn.Module):
    """The ablation baseline: the same residual block with regular dilated 3x3 convs.

    forward(x (N, C, H, W)) -> (out (N, C, H, W), {}) (no transforms).
    """

    adaptive = False
    tied = ("conv1", "conv2")

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.dilation = dilation
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = _bn(channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x), {}


def make_unit(channels: int, dilation: int = 1, adaptive: bool = True) -> nn.Module:
    return AdaptiveUnit(channels, dilation) if adaptive else RegularUnit(channels, dilation)


def tie_weights(units: list[nn.Module]) -> None:
    """Make ``units[1:]`` use the conv weights of ``units[0]`` (not biases, not BNs)."""
    first = units[0]
    for unit in units[1:]:
        for name in first.tied:
            getattr(unit, name).weight = getattr(first, name).weight
