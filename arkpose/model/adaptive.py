"""The adaptive convolution (pixel-wise spatial transformer) and the residual units.

The adaptive 3x3 convolution samples tap ``i`` of output pixel ``p`` at

    p + d·g_i + (T(p) − I)·g_i,

where ``g_i = (dy_i, dx_i)`` runs over the regular 3x3 grid in row-major order, ``d`` is the
dilation and ``T(p)`` a 2x2 matrix predicted per pixel by a plain 3x3 conv (``tconv``, C→4,
with bias: ``T = [[t0, t1], [t2, t3]]`` acting on the column vector ``(dy, dx)``).
The dilation scales only the regular part (official code; docs/method.md §1 ★), so T = I gives a
dilated conv and T = 0 gives a conv of dilation ``d − 1`` (a 1x1 conv with the summed kernel
when d = 1). Samples are bilinear with zeros outside the map. This is exactly torchvision's
``deform_conv2d`` (one group, no mask, padding = dilation = d) fed the 18-channel offsets
``[dy_0, dx_0, ..., dy_8, dx_8] = T·G − G``.

Implementation: the four bilinear corners of every (pixel, tap) are gathered and weighted in
one ``F.embedding_bag`` call over the rows of a zero-padded channels-last copy of the input
(a corner outside the map reads a zero row, so no corner needs a mask of its own), which
gives the (N·H·W, 9·C) column matrix directly; one matmul with the kernel finishes the conv.
At 256 channels that is ~7x faster than ``grid_sample`` (which writes channels-first).
Autograd's backward of that call sorts all 4·9·N·H·W indices and gathers per corner, so CPU
training uses :class:`PaddedBilinear` instead: the same forward, and a hand-written backward
(one sort of 9·N·H·W top-left corners, weighted segment sums for the input gradient, two
gathers of the bilinear weight derivatives for the position gradient).
The CPU training sampler is an argument (``sampler``, one of :data:`CPU_SAMPLERS`); every path
is tested against a direct per-pixel loop. Sampling positions are computed in at least float32.
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


def _padded_terms(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor):
    """What bilinear sampling from a zero-padded channels-last table needs.

    x: (N, C, H, W); pos_y, pos_x: (N, H, W, P). Returns ``table`` (N·(H+2)·(W+2), C) (x with a
    zero border), ``q`` (S,) the table row of each sample's top-left corner (S = N·H·W·P),
    ``ly``, ``lx`` (S,) the fractional parts, ``valid`` (S,) whether the corner lies in
    [-1, H-1] x [-1, W-1], and ``weight`` (S, 4) the corners' bilinear weights (0 unless valid),
    corners ordered (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1) (:func:`_weighted_corners`).
    One clamp per coordinate and no per-corner masks: 1.6x faster than masking each corner.
    """
    n, c, h, w = x.shape
    wp = w + 2
    y0 = torch.floor(pos_y)
    x0 = torch.floor(pos_x)
    ly, lx = (pos_y - y0).reshape(-1), (pos_x - x0).reshape(-1)
    valid = ((y0 >= -1) & (y0 <= h - 1) & (x0 >= -1) & (x0 <= w - 1)).reshape(-1)
    base = (torch.arange(n, device=x.device) * ((h + 2) * wp)).view(n, 1, 1, 1)
    # Clamped after the cast: a NaN or huge position casts to any integer (weight 0 or NaN
    # then, as for any invalid sample), and the clamp keeps its row inside the table.
    q = (base + (y0.long().clamp(-1, h - 1) + 1) * wp + x0.long().clamp(-1, w - 1) + 1).reshape(-1)
    table = x.new_zeros(n, h + 2, wp, c)
    table[:, 1:-1, 1:-1] = x.permute(0, 2, 3, 1)
    m = valid.to(ly.dtype)
    weight = _corner_products(((1 - ly) * m, ly * m), (1 - lx, lx))
    return table.view(-1, c), q, ly, lx, valid, weight


def _corner_products(along_y: tuple, along_x: tuple) -> torch.Tensor:
    """(S, 4): ``along_y[i] * along_x[j]`` in corner order (i, j) = (0, 0), (0, 1), (1, 0),
    (1, 1); each factor an (S,) tensor or a number, at least one of each pair a tensor.
    Written column by column into one buffer: several times faster than stacking products
    (stacked when autograd must see them: the "embedding_bag" sampler)."""
    pairs = [(a, b) for a in along_y for b in along_x]
    ref = next(v for v in along_y + along_x if isinstance(v, torch.Tensor))
    if torch.is_grad_enabled() and any(isinstance(v, torch.Tensor) and v.requires_grad
                                       for v in along_y + along_x):
        return torch.stack([a * b for a, b in pairs], -1)
    out = torch.empty(ref.shape[0], 4, dtype=ref.dtype, device=ref.device)
    for k, (a, b) in enumerate(pairs):
        a, b = (b, a) if not isinstance(a, torch.Tensor) else (a, b)  # exact either way
        torch.mul(a, b, out=out[:, k])
    return out


def _corner_shifts(width: int) -> tuple[int, int, int, int]:
    """Table-row offsets of the 4 corners from the top-left one, in corner order, for padded
    rows ``width`` + 2 long (:func:`_padded_terms`)."""
    return (0, 1, width + 2, width + 3)


def _weighted_corners(table: torch.Tensor, q: torch.Tensor, weight: torch.Tensor, width: int) -> torch.Tensor:
    """(S, C): Σ_k weight[:, k] · table[q + shift_k] over the 4 corners of each sample
    (:func:`_corner_shifts`)."""
    index = q[:, None] + torch.tensor(_corner_shifts(width), device=q.device)
    return F.embedding_bag(index, table, per_sample_weights=weight.to(table.dtype), mode="sum")


def bilinear_columns(x: torch.Tensor, pos_y: torch.Tensor, pos_x: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` at P positions per pixel, zeros outside the map.

    x: (N, C, H, W); pos_y, pos_x: (N, H, W, P) absolute pixel positions.
    Returns (N, H·W, P·C), ordered (pixel, position, channel): the im2col matrix.
    Differentiable by autograd (the "embedding_bag" sampler).
    """
    n, c, h, w = x.shape
    table, q, _, _, _, weight = _padded_terms(x, pos_y, pos_x)
    return _weighted_corners(table, q, weight, w).view(n, h * w, pos_y.shape[-1] * c)


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


class PaddedBilinear(torch.autograd.Function):
    """:func:`bilinear_columns` with a backward written for CPU training.

    The input is copied into a zero-padded channels-last table (N·(H+2)·(W+2), C), so a
    sample whose top-left corner lies in [-1, H-1] x [-1, W-1] reads its 4 corners from
    rows q, q+1, q+W+2, q+W+3 (outside corners hit the zero border) and any other sample
    gets weight 0. Backward: the input gradient sorts the 9·N·H·W rows q once and sums the
    weighted column gradients per row with ``embedding_bag`` (one call per corner, shifted
    into place); the position gradient is ⟨grad, Σ_k ∂w_k/∂y · corner_k⟩ (and x), the sums
    gathered by ``embedding_bag`` with the weight derivatives. Not twice differentiable.
    apply(x (N, C, H, W), pos_y, pos_x (N, H, W, P)) -> (N, H·W, P·C).
    """

    @staticmethod
    def forward(ctx, x, pos_y, pos_x):
        n, c, h, w = x.shape
        table, q, ly, lx, valid, weight = _padded_terms(x, pos_y, pos_x)
        cols = _weighted_corners(table, q, weight, w)
        ctx.save_for_backward(table, q, ly, lx, valid, weight)
        ctx.shape = (n, c, h, w, pos_y.shape[-1])
        return cols.view(n, h * w, pos_y.shape[-1] * c)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_cols):
        table, q, ly, lx, valid, weight = ctx.saved_tensors
        n, c, h, w, p = ctx.shape
        wp = w + 2
        rows = table.shape[0]
        grad = grad_cols.to(table.dtype).reshape(-1, c).contiguous()  # (N·H·W·P, C)
        grad_x = grad_y = grad_x_pos = None
        if ctx.needs_input_grad[0]:
            order = torch.sort(q.int() if rows < 2**31 else q).indices  # int32 keys sort ~2x faster
            counts = torch.bincount(q, minlength=rows)
            offsets = counts.cumsum(0) - counts
            sorted_weight = weight.index_select(0, order).t().to(table.dtype).contiguous()  # (4, S)
            padded = torch.zeros_like(table)
            for k, shift in enumerate(_corner_shifts(w)):
                part = F.embedding_bag(order, grad, offsets, per_sample_weights=sorted_weight[k], mode="sum")
                padded[shift:] += part[: rows - shift]
            grad_x = padded.view(n, h + 2, wp, c)[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            m = valid.to(ly.dtype)
            vy, vx, ly, lx = (1 - ly) * m, (1 - lx) * m, ly * m, lx * m
            # ∂w/∂y = (-1, 1) ⊗ (vx, lx) and ∂w/∂x = (vy, ly) ⊗ (-1, 1), in corner order.
            slopes = (_corner_products((-1, 1), (vx, lx)), _corner_products((vy, ly), (-1, 1)))
            grads = []
            for dw in slopes:
                d = _weighted_corners(table, q, dw, w)
                grads.append(torch.bmm(d.unsqueeze(1), grad.unsqueeze(2)).view(n, h, w, p).to(m.dtype))
            grad_y, grad_x_pos = grads
        return grad_x, grad_y, grad_x_pos


# How CPU training samples: "padded" (PaddedBilinear), "embedding_bag" (autograd through
# bilinear_columns), "grid_sample", or "auto": padded from PADDED_MIN_CHANNELS channels up,
# grid_sample below (measured at batch 16, 16x16-64x64, 1 thread: padded ~1.3-1.5x faster
# at 24-64 channels, even at 16, ~1.3x slower at 8). Inference, and training on other
# devices, use bilinear_columns whatever the sampler.
CPU_SAMPLERS = ("auto", "padded", "embedding_bag", "grid_sample")
PADDED_MIN_CHANNELS = 16


def check_sampler(sampler: str) -> None:
    if sampler not in CPU_SAMPLERS:
        raise ValueError(f"the adaptive conv's CPU training sampler must be one of "
                         f"{CPU_SAMPLERS}, got {sampler!r}")


def adaptive_conv2d(
    x: torch.Tensor, transform: torch.Tensor, weight: torch.Tensor, dilation: int = 1,
    *, sampler: str = "auto",
) -> torch.Tensor:
    """Adaptive 3x3 conv, stride 1, no bias.

    x: (N, C, H, W); transform: (N, 4, H, W) per-pixel T; weight: (O, C, 3, 3); ``sampler``:
    how CPU training samples (one of :data:`CPU_SAMPLERS`, see above).
    Returns (N, O, H, W) (channels-last memory except on the grid_sample path).
    """
    check_sampler(sampler)
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
    if not (training and x.device.type == "cpu"):
        sampler = "embedding_bag"
    if sampler == "auto":
        sampler = "padded" if c >= PADDED_MIN_CHANNELS else "grid_sample"
    if sampler == "grid_sample":
        cols = grid_sample_columns(x, pos_y, pos_x)  # (N, 9C, HW), (channel, tap) order
        # A 1x1 conv rather than a batched matmul: its backward needs no transposed copies.
        return F.conv2d(cols.view(n, c * 9, h, w), weight.reshape(o, c * 9, 1, 1))
    if sampler == "padded":
        cols = PaddedBilinear.apply(x, pos_y, pos_x)
    else:
        cols = bilinear_columns(x, pos_y, pos_x)  # (N, HW, 9C), (tap, channel) order
    kernel = weight.permute(0, 2, 3, 1).reshape(o, 9 * c)  # same (tap, channel) order
    out = torch.matmul(cols, kernel.t())  # (N, HW, O)
    return out.view(n, h, w, o).permute(0, 3, 1, 2)


class AdaptiveConv2d(nn.Module):
    """3x3 adaptive conv (no bias) whose taps follow a per-pixel transform; see module doc.
    ``sampler``: how CPU training samples (:data:`CPU_SAMPLERS`)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1, sampler: str = "auto"):
        super().__init__()
        check_sampler(sampler)
        self.in_channels, self.out_channels, self.dilation = in_channels, out_channels, dilation
        self.sampler = sampler
        self.kernel_size = (3, 3)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official DCN init: uniform ±1/sqrt(C·9).
        bound = 1.0 / math.sqrt(self.in_channels * 9)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
        return adaptive_conv2d(x, transform, self.weight, self.dilation, sampler=self.sampler)

    def extra_repr(self) -> str:
        sampler = "" if self.sampler == "auto" else f", sampler={self.sampler!r}"
        return f"{self.in_channels}, {self.out_channels}, dilation={self.dilation}{sampler}"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.1)


class AdaptiveUnit(nn.Module):
    """Residual block of two adaptive 3x3 convs ("ART"), both T predicted from the block input.

    ``out = relu(bn1(aconv1(x; T1))); out = bn2(aconv2(out; T2)); return relu(out + x)``,
    T1 = tconv1(x), T2 = tconv2(x). forward(x (N, C, H, W)) -> (out (N, C, H, W),
    {"t1": T1, "t2": T2} each (N, 4, H, W)). ``sampler``: the adaptive convs' CPU training
    sampler.
    """

    adaptive = True
    # Submodules whose weights the heatmap head ties across its dilated branches.
    tied = ("tconv1", "aconv1", "tconv2", "aconv2")

    def __init__(self, channels: int, dilation: int = 1, sampler: str = "auto"):
        super().__init__()
        self.dilation = dilation
        self.tconv1 = nn.Conv2d(channels, 4, 3, padding=1, bias=True)
        self.aconv1 = AdaptiveConv2d(channels, channels, dilation, sampler)
        self.bn1 = _bn(channels)
        self.tconv2 = nn.Conv2d(channels, 4, 3, padding=1, bias=True)
        self.aconv2 = AdaptiveConv2d(channels, channels, dilation, sampler)
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


def make_unit(channels: int, dilation: int = 1, adaptive: bool = True, sampler: str = "auto") -> nn.Module:
    """An :class:`AdaptiveUnit` (with the CPU training ``sampler``) or a :class:`RegularUnit`."""
    return AdaptiveUnit(channels, dilation, sampler) if adaptive else RegularUnit(channels, dilation)


def tie_weights(units: list[nn.Module]) -> None:
    """Make ``units[1:]`` use the conv weights of ``units[0]`` (not biases, not BNs)."""
    first = units[0]
    for unit in units[1:]:
        for name in first.tied:
            getattr(unit, name).weight = getattr(first, name).weight
