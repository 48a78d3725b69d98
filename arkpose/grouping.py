"""Grouping: from fused maps to poses (docs/method.md §5.4-5.9).

Pure, vectorised torch functions, one image at a time. Coordinates are ``(x, y)`` with x
to the right; "grid" pixels are the network's stride-4 output, "1x" pixels those of the
resized test image, with 1x coordinate = 4 x grid coordinate (docs/method.md §0, §5.3).

What :func:`parse` calls "fused maps" (what :func:`arkpose.inference.flip_test` returns,
or the multi-scale average of :func:`arkpose.inference.fuse_scales`):

- ``heatmaps``: ``(K, H, W)`` keypoint heatmaps, flip- (and scale-) averaged, either on
  the 1x grid (``H = 4h``, e.g. the multi-scale average) or on the reference stride-4
  grid (``H = h``); the latter stand for their 1x upsampling by :func:`upsample_to`,
  which :class:`Heat1x` evaluates lazily (same numbers, a fraction of the time);
- ``center``: ``(1, h, w)`` flip-averaged center heatmap on the reference stride-4 grid,
  or a sequence of them, one per test scale, the reference scale first;
- ``offsets``: ``(2K, h, w)`` flip-averaged **absolute keypoint map** (position + offset,
  channels ``[x0, y0, x1, y1, ...]``) in reference *grid* pixels, or a sequence matching
  ``center``. Each map keeps its own spatial size; only its values are in reference grid
  pixels. Pass raw arkpose offsets (keypoint - position) with ``absolute=False``.

Deviations from the official code (documented in docs/inference.md): pose NMS is a plain
greedy NMS in score order; the absorb fallback reads the heat at (x, y), not transposed;
the refinement fits on windows clipped at the map border with the correct axes; top-k
ties are broken by the lower flat index, so results do not depend on the torch build.

Speed: the official grouping takes ~360 ms for a 20-person image, mostly scipy fitting
one joint at a time; here the 1x maps are never built (:class:`Heat1x`), the keypoint
candidates are found on the grid (:func:`grid_candidate_mask`) and all Gaussian fits run
as one batched Levenberg-Marquardt (:func:`fit_gaussians`): ~16 ms of CPU on one core
(tests/benchmarks/bench_grouping.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

STRIDE = 4


# ---------------------------------------------------------------------------------------
# Small map utilities


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


def center_pool_size(h: int, w: int) -> int:
    """Max-pool size of the center NMS for a ``(h, w)`` grid map: 3, 5 above 200, 7 above 300."""
    size = (h + w) / 2.0
    return 7 if size > 300 else 5 if size > 200 else 3


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
        if factor not in (1, STRIDE):
            raise ValueError(f"factor must be 1 (dense) or {STRIDE} (grid), got {factor}")
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
            return cls(heatmaps, STRIDE)
        if hw == (STRIDE * grid_size[0], STRIDE * grid_size[1]):
            return cls(heatmaps, 1)
        raise ValueError(
            f"heatmaps of size {hw} fit neither the grid {tuple(grid_size)} nor its 1x "
            f"size {(STRIDE * grid_size[0], STRIDE * grid_size[1])}"
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


# ---------------------------------------------------------------------------------------
# Centers and regression poses (§5.4-5.6)


def find_centers(
    center: torch.Tensor, max_people: int = 30, threshold: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """Person centers: NMS (3x3/5x5/7x7 by map size), top ``max_people``, score > threshold.

    ``center (1, h, w)`` or ``(h, w)`` -> ``(scores (M,), flat_index (M,))`` sorted by
    descending score (ties: lower index first), ``M <= max_people``.
    """
    c = center.reshape(1, *center.shape[-2:]).float()
    peaks = local_maxima(c, center_pool_size(*c.shape[-2:])).reshape(1, -1)
    scores, idx = topk_stable(peaks, max_people)
    keep = scores[0] > threshold
    return scores[0][keep], idx[0][keep]


def pose_nms(
    joints: torch.Tensor,
    scores: torch.Tensor,
    distance: float = 10.0,
    overlap: int = 10,
    max_people: int = 30,
) -> torch.Tensor:
    """Greedy pose NMS: ``joints (P, K, 2)`` (1x px), ``scores (P,)`` -> kept indices.

    Two poses are duplicates when more than ``overlap`` of their K joints are closer than
    ``distance`` pixels. Poses are visited by descending score (ties: lower index); one
    is kept unless it duplicates an already kept pose; at most ``max_people`` are kept.
    The official code keeps ``overlap = 10`` for CrowdPose's 14 joints too, so do we.
    """
    P = joints.shape[0]
    if P == 0:
        return torch.zeros(0, dtype=torch.long, device=joints.device)
    dist = (joints[:, None] - joints[None]).norm(dim=-1)  # (P, P, K)
    dup = ((dist < distance).sum(-1) > overlap).cpu().numpy()
    order = torch.argsort(-scores.cpu(), stable=True).tolist()
    kept: list[int] = []
    for i in order:
        if not dup[i, kept].any():
            kept.append(i)
            if len(kept) == max_people:
                break
    return torch.tensor(kept, dtype=torch.long, device=joints.device)


# ---------------------------------------------------------------------------------------
# Absorb and refinement (§5.7-5.8)


def keypoint_candidates(
    heat: Heat1x, k: int = 30, kernel: int = 5, threshold: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-type candidates: ``kernel`` x ``kernel`` NMS on the 1x maps, top ``k``, values
    not above ``threshold`` zeroed.

    ``heat`` 1x maps ``(K, H, W)`` -> ``(positions (K, k, 2) xy 1x px, values (K, k))``.
    Zeroed candidates keep their positions (as the official code): a joint absorbed by
    one gets score 0. A map with fewer than ``k`` local maxima fills the remaining slots
    with position ``inf`` and value 0 (never absorbed; the official code would fill them
    with arbitrary zero pixels). A lazy (grid) source finds the 5x5 maxima on the grid
    nodes (:func:`grid_candidate_mask`); other kernels use the dense maps.
    """
    if heat.factor == 1 or kernel != 5:
        maps = heat.dense()
        K, W = maps.shape[0], maps.shape[-1]
        mask = F.max_pool2d(maps[None], kernel, 1, kernel // 2)[0] == maps
        step, width = 1, W
    else:
        maps = heat.maps
        K, _, width = maps.shape
        mask = grid_candidate_mask(maps)
        step = STRIDE
    peaks = torch.where(mask, maps, torch.full_like(maps, float("-inf"))).reshape(K, -1)
    vals, idx = topk_stable(peaks, k)
    filled = torch.isfinite(vals)
    pos = step * torch.stack([idx % width, torch.div(idx, width, rounding_mode="floor")], -1)
    pos = torch.where(filled[..., None], pos.float(), torch.tensor(float("inf")))
    vals = torch.where(filled & (vals > threshold), vals, torch.zeros_like(vals))
    return pos, vals


def absorb(
    poses: torch.Tensor,
    heat: Heat1x,
    cand_pos: torch.Tensor,
    cand_val: torch.Tensor,
    max_distance: float = 75.0,
) -> torch.Tensor:
    """Move each joint to the nearest same-type candidate closer than ``max_distance``.

    ``poses (P, K, 3)`` (x, y, score) in 1x px; ``heat`` the 1x maps;
    ``cand_pos (K, C, 2)``, ``cand_val (K, C)`` -> new ``(P, K, 3)``. An absorbed joint
    takes the candidate's position and its score is multiplied by the candidate's value;
    otherwise it stays and its score is multiplied by the (nearest-pixel) heat at the
    joint, read at ``[k, y, x]`` (the official code reads it transposed).
    """
    P, K, _ = poses.shape
    if P == 0 or cand_pos.shape[1] == 0:
        return poses.clone()
    xy = poses[..., :2]
    d = (xy[:, :, None, :] - cand_pos[None]).norm(dim=-1)  # (P, K, C)
    best_d, best = d.min(dim=-1)  # min returns the first minimum: deterministic
    kk = torch.arange(K, device=poses.device).expand(P, K)
    near_pos = cand_pos[kk, best]
    near_val = cand_val[kk, best]
    # int() truncation and clamping into the map, as the official code (minus the transpose)
    here = heat.at(kk, xy[..., 0].long(), xy[..., 1].long())
    close = best_d < max_distance
    out = poses.clone()
    out[..., :2] = torch.where(close[..., None], near_pos, xy)
    out[..., 2] = poses[..., 2] * torch.where(close, near_val, here)
    return out


def _gauss_terms(theta, Z, wx, wy, grid, zz):
    """Cost, J^T J and J^T r of the windowed Gaussian fit, by separability.

    The model A ex(x) ey(y) and the clipped-window weights wx(x) wy(y) factor over x and
    y, so every sum over the n x n window is a product of 1D moments or one small matrix
    product ``ey^T Z ex``: no (M, n, n, 4) Jacobian is ever built.
    """
    A, mx, my, s = theta.unbind(-1)
    q = 1.0 / (s * s)
    dx = grid - mx[:, None]  # (M, n)
    dy = grid - my[:, None]
    ex = torch.exp(-0.5 * q[:, None] * dx * dx) * wx
    ey = torch.exp(-0.5 * q[:, None] * dy * dy) * wy
    # (weights are 0/1 so ex * ex carries one factor of the weight, as it must)
    dx2, dy2 = dx * dx, dy * dy
    pows_x = torch.stack([torch.ones_like(dx), dx, dx2, dx2 * dx, dx2 * dx2], 1)  # (M, 5, n)
    pows_y = torch.stack([torch.ones_like(dy), dy, dy2, dy2 * dy, dy2 * dy2], 1)
    sx0, sx1, sx2, sx3, sx4 = ((ex * ex)[:, None] * pows_x).sum(-1).unbind(-1)
    sy0, sy1, sy2, sy3, sy4 = ((ey * ey)[:, None] * pows_y).sum(-1).unbind(-1)
    # Small batched products are faster as broadcast sums than as bmm here.
    U = (Z[:, None] * (ex[:, None] * pows_x[:, :3])[:, :, None, :]).sum(-1)  # (M, 3 dx^k, n rows)
    V = ey[:, None] * pows_y[:, :3]  # (M, 3 dy^m, n rows)
    t00, t10, t20 = (U * V[:, :1]).sum(-1).unbind(-1)
    t01, t02 = (U[:, :1] * V[:, 1:]).sum(-1).unbind(-1)
    c = A * q
    cs = A / (s * s * s)
    # J columns: e, A q e dx, A q e dy, (A / s^3) e (dx^2 + dy^2), with e = ex ey.
    jaa = sx0 * sy0
    jam = c * sx1 * sy0
    jan = c * sx0 * sy1
    jas = cs * (sx2 * sy0 + sx0 * sy2)
    jmm = c * c * sx2 * sy0
    jmn = c * c * sx1 * sy1
    jms = c * cs * (sx3 * sy0 + sx1 * sy2)
    jnn = c * c * sx0 * sy2
    jns = c * cs * (sx2 * sy1 + sx0 * sy3)
    jss = cs * cs * (sx4 * sy0 + 2 * sx2 * sy2 + sx0 * sy4)
    JtJ = torch.stack(
        [jaa, jam, jan, jas, jam, jmm, jmn, jms, jan, jmn, jnn, jns, jas, jms, jns, jss], -1
    ).reshape(-1, 4, 4)
    # J^T r = J^T g - J^T z, and J^T g = A * (column A of J^T J) since g = A * J_A.
    jtz = torch.stack([t00, c * t10, c * t01, cs * (t20 + t02)], -1)
    Jtr = A[:, None] * torch.stack([jaa, jam, jan, jas], -1) - jtz
    cost = A * A * jaa - 2 * A * t00 + zz
    return cost, JtJ, Jtr


def fit_gaussians(
    windows: torch.Tensor,
    valid_x: torch.Tensor,
    valid_y: torch.Tensor,
    init: torch.Tensor,
    iterations: int = 100,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares fit of ``A exp(-((x-mx)^2 + (y-my)^2) / (2 s^2))`` to many windows.

    Batched Levenberg-Marquardt in float64 with an analytic, separable Jacobian
    (:func:`_gauss_terms`). ``windows (M, n, n)`` (row y, column x); ``valid_x (M, n)``,
    ``valid_y (M, n)`` 1 where the column / row lies inside the map (a window clipped at
    the border); ``init (M, 4)`` = (A, mx, my, s) in window coordinates ->
    ``(params (M, 4), ok (M,))`` with ``s >= 0``; ``ok`` is False where the fit did not
    converge or went non-finite (the official code keeps such joints unrefined: scipy's
    ``curve_fit`` raises).
    """
    M, n, _ = windows.shape
    dt = torch.float64
    wx, wy = valid_x.to(dt), valid_y.to(dt)
    Z = windows.to(dt) * wy[:, :, None] * wx[:, None, :]
    zz = (Z * Z).sum((1, 2))
    grid = torch.arange(n, dtype=dt, device=windows.device)[None]
    theta = init.to(dt).clone()
    cost, JtJ, Jtr = _gauss_terms(theta, Z, wx, wy, grid, zz)
    lam = torch.full((M,), 1e-4, dtype=dt, device=windows.device)
    done = torch.zeros(M, dtype=torch.bool, device=windows.device)
    eye = torch.eye(4, dtype=dt, device=windows.device)
    for _ in range(iterations):
        diag = torch.diagonal(JtJ, dim1=1, dim2=2).clamp_min(1e-30)
        step = torch.linalg.solve(
            JtJ + lam[:, None, None] * torch.diag_embed(diag) + 1e-30 * eye, -Jtr[..., None]
        )[..., 0]
        step = torch.where(torch.isfinite(step) & ~done[:, None], step, torch.zeros_like(step))
        cand = theta + step
        c_cost, c_JtJ, c_Jtr = _gauss_terms(cand, Z, wx, wy, grid, zz)
        better = torch.isfinite(c_cost) & (c_cost <= cost) & ~done
        # Converged once a step (taken or not) no longer moves anything: at the minimum
        # up to rounding. Heavy damping without progress means the same.
        small = (step.abs() <= tol * theta.abs().clamp_min(1.0)).all(-1)
        done |= (small & torch.isfinite(c_cost)) | (lam > 1e10)
        theta = torch.where(better[:, None], cand, theta)
        cost = torch.where(better, c_cost, cost)
        JtJ = torch.where(better[:, None, None], c_JtJ, JtJ)
        Jtr = torch.where(better[:, None], c_Jtr, Jtr)
        lam = torch.where(better, lam * 0.1, lam * 10.0).clamp_min(1e-12)
        if bool(done.all()):
            break
    theta[:, 3] = theta[:, 3].abs()
    ok = done & torch.isfinite(theta).all(-1)
    return theta, ok


def initial_guess(windows: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Starting point (A, mx, my, s) of the fit for ``windows (M, n, n)`` -> ``(M, 4)``.

    The official start is (value at the center, the center, ``sigma``); with s = 2 for
    peaks of s ~ 8 (1x maps) the fit needs many damped steps. A Gaussian's log is a
    parabola, so where the log of the center row and column at -4, 0, +4 px (one grid
    cell: exact on bilinearly upsampled maps) is a clean downward parabola, its
    curvature and slope give s and the mean, which the fit then polishes in a few steps
    to the same least-squares optimum; elsewhere the official start is kept.
    """
    n = windows.shape[-1]
    c = n // 2
    w = windows.double()
    z0 = w[:, c, c]
    official = torch.stack(
        [z0, torch.full_like(z0, c), torch.full_like(z0, c), torch.full_like(z0, sigma)], -1
    )
    d = min(4, c)
    if d < 1:
        return official
    trip = torch.stack([w[:, c, c - d], w[:, c, c + d], w[:, c - d, c], w[:, c + d, c]], -1)
    logs = torch.log(torch.cat([trip, z0[:, None]], -1).clamp_min(1e-30))
    lxm, lxp, lym, lyp, lc = logs.unbind(-1)
    kx = (lxm - 2 * lc + lxp) / d**2  # = -1 / s^2 for a Gaussian
    ky = (lym - 2 * lc + lyp) / d**2
    mx = c - (lxp - lxm) / (2 * d) / kx
    my = c - (lyp - lym) / (2 * d) / ky
    s = torch.sqrt(-2.0 / (kx + ky))
    good = (
        (trip > 0).all(-1) & (z0 > 0) & (kx < 0) & (ky < 0)
        & ((mx - c).abs() <= d) & ((my - c).abs() <= d) & (s > 0.5) & (s < 3 * n)
    )
    A = z0 * torch.exp(((mx - c) ** 2 + (my - c) ** 2) / (2 * s * s))
    guess = torch.stack([A, mx, my, s], -1)
    return torch.where(good[:, None] & torch.isfinite(guess), guess, official)


def refine(
    poses: torch.Tensor,
    heat: Heat1x,
    center_scores: torch.Tensor,
    threshold: float = 0.05,
    window: int = 13,
    sigma: float = 2.0,
) -> torch.Tensor:
    """Gaussian-fit refinement of joints with score > ``threshold`` (docs/method.md §5.8).

    ``poses (P, K, 3)`` 1x px, ``heat`` the 1x maps, ``center_scores (P,)`` ->
    ``(P, K, 3)``. For each selected joint, rounded to the pixel ``(int(x+.5), int(y+.5))``
    and not on the map border, fit ``A exp(-d^2 / 2 s^2)`` (official init: the heat there,
    that pixel, ``s = sigma``; see :func:`initial_guess`) on the ``window x window`` patch around it (clipped at the map
    border); the joint moves to the fitted mean and its score becomes ``A x center
    score``. All joints are fitted in one batch (:func:`fit_gaussians`).
    """
    out = poses.clone()
    P = poses.shape[0]
    if P == 0:
        return out
    H, W = heat.size
    half = window // 2
    xi = (poses[..., 0] + 0.5).floor().long()
    yi = (poses[..., 1] + 0.5).floor().long()
    sel = (poses[..., 2] > threshold) & (xi >= 1) & (xi <= W - 2) & (yi >= 1) & (yi <= H - 2)
    pi, ki = torch.nonzero(sel, as_tuple=True)
    if pi.numel() == 0:
        return out
    cx, cy = xi[pi, ki], yi[pi, ki]
    offs = torch.arange(-half, half + 1, device=poses.device)
    rows = cy[:, None] + offs  # (M, n)
    cols = cx[:, None] + offs
    valid_y = (rows >= 0) & (rows < H)
    valid_x = (cols >= 0) & (cols < W)
    wins = heat.windows(ki, cx, cy, half)
    init = initial_guess(wins, sigma)
    params, ok = fit_gaussians(wins, valid_x, valid_y, init)
    pi, ki, params = pi[ok], ki[ok], params[ok]
    cx, cy = cx[ok], cy[ok]
    out[pi, ki, 0] = (cx - half + params[:, 1]).to(out.dtype)
    out[pi, ki, 1] = (cy - half + params[:, 2]).to(out.dtype)
    out[pi, ki, 2] = (params[:, 0] * center_scores[pi].double()).to(out.dtype)
    return out


def mean_score(poses: torch.Tensor) -> torch.Tensor:
    """Naive pose score: mean joint score. ``(P, K, 3) -> (P,)``."""
    return poses[..., 2].mean(-1)


# ---------------------------------------------------------------------------------------
# The whole grouping


def _as_list(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


def _drop_batch(x: torch.Tensor, name: str, dims: int) -> torch.Tensor:
    if x.dim() == dims + 1:
        if x.shape[0] != 1:
            raise ValueError(f"parse handles one image at a time; {name} has batch {x.shape[0]}")
        x = x[0]
    if x.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims (C, H, W), got shape {tuple(x.shape)}")
    return x


def regression_poses(
    num_keypoints: int,
    centers: Sequence[torch.Tensor],
    keypoint_maps: Sequence[torch.Tensor],
    *,
    max_people: int = 30,
    center_threshold: float = 0.01,
    scale_decrease: float = 0.001,
    nms_distance: float = 10.0,
    nms_overlap: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centers -> NMS'd regressed joints ``(P, K, 2)`` in 1x px and center scores ``(P,)``.

    ``centers[i] (1, h_i, w_i)``, ``keypoint_maps[i] (2K, h_i,
    w_i)`` absolute, reference grid px; entry 0 is the reference scale. Other scales'
    center maps are normalised to the reference map's maximum and multiplied by
    ``scale_decrease`` (threshold too), as the official multi-scale test.
    """
    K = num_keypoints
    ref_max = centers[0].max()
    all_scores, all_joints = [], []
    for i, (c, kp) in enumerate(zip(centers, keypoint_maps)):
        c = c.float()
        factor = 1.0
        if i > 0:
            factor = scale_decrease
            c = factor * c / c.max().clamp_min(1e-12) * ref_max
        scores, idx = find_centers(c, max_people, center_threshold * factor)
        joints = kp.reshape(K, 2, -1)[:, :, idx].permute(2, 0, 1) * STRIDE  # (M, K, 2)
        all_scores.append(scores)
        all_joints.append(joints.float())
    scores = torch.cat(all_scores)
    joints = torch.cat(all_joints)
    keep = pose_nms(joints, scores, nms_distance, nms_overlap, max_people)
    return joints[keep], scores[keep]


def parse(
    heatmaps: torch.Tensor,
    center: torch.Tensor | Sequence[torch.Tensor],
    offsets: torch.Tensor | Sequence[torch.Tensor],
    *,
    absolute: bool = True,
    max_people: int = 30,
    center_threshold: float = 0.01,
    scale_decrease: float = 0.001,
    nms_distance: float = 10.0,
    nms_overlap: int = 10,
    candidates: int = 30,
    candidate_kernel: int = 5,
    keypoint_threshold: float = 0.01,
    max_distance: float = 75.0,
    refine_joints: bool = True,
    refine_threshold: float = 0.05,
    window: int = 13,
    sigma: float = 2.0,
    score_fn: ScoreFn | None = None,
) -> dict[str, torch.Tensor]:
    """Group one image's fused maps into poses (docs/method.md §5.4-5.9).

    Args:
        heatmaps: ``(K, H, W)`` (or ``(1, K, H, W)``) fused keypoint heatmaps, on the 1x
            grid or on the reference stride-4 grid (then upsampled with
            :func:`upsample_to`); see the module docstring.
        center: ``(1, h, w)`` fused center heatmap on the reference grid, or a sequence
            of per-scale center maps with the reference scale first.
        offsets: ``(2K, h, w)`` absolute keypoint map (position + offset, ``[x0, y0, ...]``)
            in reference grid px, or a sequence matching ``center``.
        absolute: False when ``offsets`` holds raw offsets (keypoint - position) of maps
            at the reference resolution; they are made absolute here.
        score_fn: ``poses (P, K, 3) -> (P,)`` final pose score; default mean joint score.

    Returns:
        dict with ``regression (P, K, 3)`` (x, y, center score x bilinear heat at the
        regressed point), ``regression_scores (P,)`` (mean joint score),
        ``final (P, K, 3)`` (absorbed and refined), ``final_scores (P,)`` (``score_fn``),
        ``center_scores (P,)``; all in 1x px, poses in NMS order (descending center
        score). P = 0 gives empty tensors.
    """
    centers = [_drop_batch(c, "center", 3) for c in _as_list(center)]
    kmaps = [_drop_batch(o, "offsets", 3) for o in _as_list(offsets)]
    if len(centers) != len(kmaps):
        raise ValueError(f"{len(centers)} center maps but {len(kmaps)} keypoint maps")
    maps = _drop_batch(heatmaps, "heatmaps", 3)
    K = maps.shape[0]
    for c, o in zip(centers, kmaps):
        if o.shape[0] != 2 * K or o.shape[-2:] != c.shape[-2:]:
            raise ValueError(
                f"offsets {tuple(o.shape)} must be (2K={2 * K}, h, w) matching center "
                f"{tuple(c.shape)}"
            )
    if not absolute:
        kmaps = [absolute_keypoints(o.float()) for o in kmaps]
    heat = Heat1x.from_maps(maps, tuple(centers[0].shape[-2:]))

    joints, cscores = regression_poses(
        K, centers, kmaps,
        max_people=max_people, center_threshold=center_threshold,
        scale_decrease=scale_decrease, nms_distance=nms_distance, nms_overlap=nms_overlap,
    )
    P = joints.shape[0]
    regression = torch.cat([joints, (cscores[:, None] * bilinear_sample(heat, joints))[..., None]], -1)
    if P == 0:
        empty = heat.maps.new_zeros(0, K, 3)
        zero = heat.maps.new_zeros(0)
        return {"regression": empty, "regression_scores": zero, "final": empty.clone(),
                "final_scores": zero.clone(), "center_scores": zero.clone()}
    start = torch.cat([joints, cscores[:, None, None].expand(P, K, 1)], -1)
    cand_pos, cand_val = keypoint_candidates(heat, candidates, candidate_kernel, keypoint_threshold)
    final = absorb(start, heat, cand_pos, cand_val, max_distance)
    if refine_joints:
        final = refine(final, heat, cscores, refine_threshold, window, sigma)
    final_scores = (score_fn or mean_score)(final)
    return {
        "regression": regression,
        "regression_scores": mean_score(regression),
        "final": final,
        "final_scores": final_scores.reshape(P).to(final.dtype),
        "center_scores": cscores,
    }


def heatmap_poses(
    heat: Heat1x,
    cues: torch.Tensor,
    *,
    candidates: int = 30,
    candidate_kernel: int = 5,
    keypoint_threshold: float = 0.01,
    refine_joints: bool = True,
    refine_threshold: float = 0.05,
    window: int = 13,
    sigma: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table 4's "heatmap" quality: heatmap keypoints grouped by ground-truth cue poses.

    ``heat`` the 1x maps; ``cues (G, K, 3)`` ground-truth poses (x, y, v) in the same
    1x pixels -> ``(poses (G, K, 3), scores (G,))``.

    Definition (no ground-truth position leaks into a prediction): for each labelled
    cue joint (v > 0) the prediction is the **nearest keypoint candidate** of that type
    (:func:`keypoint_candidates`: 5x5 NMS, top 30), whatever its distance, with the
    candidate's value as score; positions are then refined by the same Gaussian fit as
    the final poses (center score taken as 1), so heatmap and final quality differ only
    by the grouping cue. Unlabelled cue joints (v = 0; OKS ignores them) are placed at
    the mean of the pose's predicted joints with score 0. The pose score is the mean
    score of its labelled joints. The ground truth only *selects* candidates.
    """
    G, K, _ = cues.shape
    if G == 0:
        return heat.maps.new_zeros(0, K, 3), heat.maps.new_zeros(0)
    cand_pos, cand_val = keypoint_candidates(heat, candidates, candidate_kernel, keypoint_threshold)
    d = (cues[:, :, None, :2].float() - cand_pos[None]).norm(dim=-1)
    best = d.argmin(-1)
    kk = torch.arange(K, device=cues.device).expand(G, K)
    pos = cand_pos[kk, best]
    val = cand_val[kk, best]
    labelled = (cues[..., 2] > 0) & torch.isfinite(pos).all(-1)
    pos = torch.where(torch.isfinite(pos), pos, torch.zeros_like(pos))
    poses = torch.cat([pos, val[..., None]], -1)
    if refine_joints:
        poses = refine(poses, heat, poses.new_ones(G), refine_threshold, window, sigma)
    n = labelled.sum(-1, keepdim=True).clamp_min(1)
    mean_xy = (poses[..., :2] * labelled[..., None]).sum(1) / n
    poses[..., :2] = torch.where(labelled[..., None], poses[..., :2], mean_xy[:, None].expand(G, K, 2))
    poses[..., 2] = torch.where(labelled, poses[..., 2], torch.zeros_like(poses[..., 2]))
    scores = poses[..., 2].sum(-1) / n[:, 0]
    return poses, scores
