"""Maps for decoding: the lazy 1x heatmap (:class:`Heat1x`), the 1x upsampling rule, local
maxima with deterministic top-k, bilinear reads and absolute keypoint maps.

"grid" pixels are the network's stride-4 output, "1x" pixels those of the resized test
image, with 1x coordinate = OUTPUT_STRIDE x grid coordinate (docs/method.md §0, §5.3).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from arkpose.spec import OUTPUT_STRIDE


def upsample_to(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Upsample ``maps (..., h, w)`` to ``size = (H, W)`` so that 1x coord = f x grid coord.

    Bilinear with ``align_corners=True`` to ``(H - f + 1, W - f + 1)``, then replication
    padding of ``f - 1`` on the right and bottom, ``f = H // h`` (and ``W // w``).
    This is the official ``up_interpolate`` rule (docs/method.md §5.3).
    """
    H, W = size
    h, w = maps.shape[-2:]
    if (h, w) == (H, W):
        return maps
    fh, fw = max(H // h, 1), max(W // w, 1)
    lead = maps.shape[:-2]
    x = maps.reshape(1, -1, h, w).float()
    x = F.interpolate(x, size=(H - fh + 1, W - fw + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, (0, fw - 1, 0, fh - 1), mode="replicate")
    return x.reshape(*lead, H, W)


def local_maxima(maps: torch.Tensor, kernel: int) -> torch.Tensor:
    """``maps (C, H, W)`` with every value that is not the max of its ``kernel`` window zeroed."""
    pooled = F.max_pool2d(maps[None], kernel, 1, kernel // 2)[0]
    return maps * (pooled == maps)


def topk_stable(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` along the last dim, ties broken by the lower index (deterministic).

    ``values (C, L)`` -> ``(vals (C, k'), idx (C, k'))`` with ``k' = min(k, L)``, sorted
    descending. ``-inf`` entries are fillers: their order is left to ``torch.topk``.
    """
    L = values.shape[-1]
    k = min(k, L)
    if k == 0:
        return values[:, :0], values[:, :0].long()
    vals, idx = values.topk(k, dim=-1)
    kth = vals[:, -1:]
    # Rows where an entry outside the top k equals the k-th value: choose by index.
    tied = ((values >= kth).sum(-1) > k) & torch.isfinite(kth[:, 0])
    for r in torch.nonzero(tied)[:, 0].tolist():
        cols = torch.nonzero(values[r] >= kth[r])[:, 0]  # increasing index
        order = torch.argsort(-values[r, cols], stable=True)[:k]
        idx[r] = cols[order]
        vals[r] = values[r, idx[r]]
    # Equal values inside the top k: lower index first.
    order = torch.argsort(idx, dim=-1, stable=True)
    idx, vals = idx.gather(-1, order), vals.gather(-1, order)
    order = torch.argsort(-vals, dim=-1, stable=True)
    return vals.gather(-1, order), idx.gather(-1, order)


def bilinear_sample(heat: Heat1x, points: torch.Tensor) -> torch.Tensor:
    """Bilinear 1x heat of channel k at ``points (P, K, 2)`` (x, y, 1x px) -> ``(P, K)``.

    Zero for points outside ``[0, W-1] x [0, H-1]`` (the official code also gives 0 there).
    """
    K = heat.num_keypoints
    H, W = heat.size
    P = points.shape[0]
    if P == 0:
        return heat.maps.new_zeros(0, K)
    x, y = points[..., 0].float(), points[..., 1].float()
    inside = (x >= 0) & (x <= W - 1) & (y >= 0) & (y <= H - 1)
    x0 = x.floor().clamp(0, max(W - 2, 0))
    y0 = y.floor().clamp(0, max(H - 2, 0))
    u, v = (x - x0).clamp(0, 1), (y - y0).clamp(0, 1)
    x0, y0 = x0.long(), y0.long()
    kk = torch.arange(K, device=points.device).expand(P, K)
    val = (
        heat.at(kk, x0, y0) * (1 - u) * (1 - v)
        + heat.at(kk, x0 + 1, y0) * u * (1 - v)
        + heat.at(kk, x0, y0 + 1) * (1 - u) * v
        + heat.at(kk, x0 + 1, y0 + 1) * u * v
    )
    return torch.where(inside, val, torch.zeros_like(val))


def absolute_keypoints(offsets: torch.Tensor) -> torch.Tensor:
    """Offsets ``(2K, h, w)`` (keypoint - position, grid px) -> absolute keypoint map."""
    _, h, w = offsets.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=offsets.dtype, device=offsets.device),
        torch.arange(w, dtype=offsets.dtype, device=offsets.device),
        indexing="ij",
    )
    pos = torch.stack([xs, ys]).repeat(offsets.shape[0] // 2, 1, 1)
    return offsets + pos


# ---------------------------------------------------------------------------------------
# The 1x heatmap, dense or lazily upsampled


class Heat1x:
    """The fused keypoint heatmaps on the 1x grid, ``(K, H, W)``.

    Either dense (``maps`` is already 1x) or lazy: ``maps (K, h, w)`` on the stride-4 grid
    stands for ``upsample_to(maps, (4h, 4w))`` without building it (17 x 512 x 512 floats
    take longer to scan on a CPU than the whole grouping). Values at integer 1x pixels are
    computed on demand, bit-for-bit the bilinear rule of :func:`upsample_to` up to float
    rounding, and the 5x5 local maxima of the upsampled map are found on the grid
    (:func:`grid_candidate_mask`).
    """

    def __init__(self, maps: torch.Tensor, factor: int = 1):
        if factor not in (1, OUTPUT_STRIDE):
            raise ValueError(f"factor must be 1 (dense) or {OUTPUT_STRIDE} (grid), got {factor}")
        self.maps = maps.float()
        self.factor = factor
        K, h, w = self.maps.shape
        self.num_keypoints = K
        self.size = (h * factor, w * factor)
        self._flat = self.maps.reshape(K, -1)

    @classmethod
    def from_maps(cls, heatmaps: torch.Tensor, grid_size: tuple[int, int]) -> Heat1x:
        """Dense when ``heatmaps`` is ``4 x grid_size``, lazy when it is ``grid_size``."""
        hw = tuple(heatmaps.shape[-2:])
        if hw == tuple(grid_size):
            return cls(heatmaps, OUTPUT_STRIDE)
        if hw == (OUTPUT_STRIDE * grid_size[0], OUTPUT_STRIDE * grid_size[1]):
            return cls(heatmaps, 1)
        raise ValueError(
            f"heatmaps of size {hw} fit neither the grid {tuple(grid_size)} nor its 1x "
            f"size {(OUTPUT_STRIDE * grid_size[0], OUTPUT_STRIDE * grid_size[1])}"
        )

    def dense(self) -> torch.Tensor:
        """The ``(K, H, W)`` 1x maps (built on demand for a lazy source)."""
        if self.factor == 1:
            return self.maps
        return upsample_to(self.maps, self.size)

    def at(self, k: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Value of channel ``k`` at integer 1x pixels ``(X, Y)`` (broadcast, clamped in range)."""
        H, W = self.size
        X = X.clamp(0, W - 1)
        Y = Y.clamp(0, H - 1)
        _, h, w = self.maps.shape
        if self.factor == 1:
            return self._flat[k, Y * w + X]
        f = self.factor
        # 1x pixel X sits at grid x = X / 4; the replicated right/bottom border clamps.
        X = X.clamp(max=f * (w - 1))
        Y = Y.clamp(max=f * (h - 1))
        x0, y0 = torch.div(X, f, rounding_mode="floor"), torch.div(Y, f, rounding_mode="floor")
        u = (X - x0 * f).float() / f
        v = (Y - y0 * f).float() / f
        x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
        m = self._flat
        return (
            (m[k, y0 * w + x0] * (1 - u) + m[k, y0 * w + x1] * u) * (1 - v)
            + (m[k, y1 * w + x0] * (1 - u) + m[k, y1 * w + x1] * u) * v
        )


    def windows(
        self, k: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, half: int
    ) -> torch.Tensor:
        """``(M, n, n)`` patches of channel ``k (M,)`` at rows ``cy - half .. cy + half`` and
        columns ``cx - half .. cx + half`` (``n = 2 half + 1``), the same values as
        :meth:`at` (clamped outside the map).

        A lazy source interpolates each patch from its few grid nodes with two small
        matrix products instead of gathering 4 nodes for every pixel.
        """
        n = 2 * half + 1
        if self.factor == 1:
            offs = torch.arange(-half, half + 1, device=cx.device)
            return self.at(k[:, None, None], cx[:, None, None] + offs[None, None, :],
                           cy[:, None, None] + offs[None, :, None])
        f = self.factor
        _, h, w = self.maps.shape
        sx, sy = cx - half, cy - half
        bx, by = torch.div(sx, f, rounding_mode="floor"), torch.div(sy, f, rounding_mode="floor")
        nodes = (f - 1 + n - 1) // f + 2
        j = torch.arange(nodes, device=cx.device)
        gx = (bx[:, None] + j).clamp(0, w - 1)
        gy = (by[:, None] + j).clamp(0, h - 1)
        patch = self._flat[k[:, None, None], gy[:, :, None] * w + gx[:, None, :]]
        R = _phase_matrices(f, n, nodes, cx.device)  # (f, n, nodes)
        return R[sy - by * f] @ patch @ R[sx - bx * f].transpose(1, 2)


@functools.lru_cache(maxsize=8)
def _phase_matrices(f: int, n: int, nodes: int, device: torch.device) -> torch.Tensor:
    """``R[p] (n, nodes)``: linear interpolation of n consecutive 1x pixels starting at
    phase p (0 <= p < f) inside a cell, from consecutive grid nodes."""
    R = np.zeros((f, n, nodes), np.float32)
    for p in range(f):
        for o in range(n):
            t = p + o
            u = (t % f) / f
            R[p, o, t // f] += 1 - u
            R[p, o, t // f + 1] += u
    return torch.from_numpy(R).to(device)


def grid_candidate_mask(maps: torch.Tensor) -> torch.Tensor:
    """Which grid nodes are 5x5 local maxima of ``upsample_to(maps, 4x)``: ``(K, h, w)`` bool.

    Inside a cell the bilinear map is monotone along each axis, so (ties aside) only
    nodes can be maxima; a node's 5x5 window reaches half-way to its neighbours, where
    the bilinear values are extreme at the corners (2, 0), (0, 2) and (2, 2). So node v
    is a maximum iff every axial neighbour a <= v and, per diagonal quadrant with axial
    neighbours a, b and diagonal d, (a + b + d) / 4 + v / 4 <= v. Off the map: nothing
    left/top (max-pool padding), the replicated border right/bottom.
    """
    h, w = maps.shape[-2:]
    m = maps.float()
    p = F.pad(m, (0, 1, 0, 1), mode="replicate")
    p = F.pad(p, (1, 0, 1, 0), value=float("-inf"))  # (K, h+2, w+2)
    c = m

    def nb(dy: int, dx: int) -> torch.Tensor:
        return p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    axial = {d: nb(*d) for d in ((0, -1), (0, 1), (-1, 0), (1, 0))}
    biggest = torch.maximum(
        torch.maximum(axial[(0, -1)], axial[(0, 1)]), torch.maximum(axial[(-1, 0)], axial[(1, 0)])
    )
    ok = biggest <= c
    c3 = 3 * c
    for dy in (-1, 1):
        for dx in (-1, 1):
            # -inf neighbours (left/top border) make the sum -inf: that quadrant is off the map.
            ok &= (axial[(0, dx)] + axial[(dy, 0)] + nb(dy, dx)) <= c3
    return ok
