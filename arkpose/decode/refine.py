"""Refinement: a Gaussian fitted to the 1x heatmap around each joint by batched
Levenberg-Marquardt (docs/method.md §5.8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from arkpose.decode.maps import Heat1x


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


class _Picked(NamedTuple):
    """The joints of one image that :func:`refine_many` fits: ``M`` windows."""

    pi: torch.Tensor  # (M,) pose index
    ki: torch.Tensor  # (M,) joint index
    cx: torch.Tensor  # (M,) window center, 1x px
    cy: torch.Tensor
    wins: torch.Tensor  # (M, n, n)
    valid_x: torch.Tensor  # (M, n)
    valid_y: torch.Tensor


def _pick(poses: torch.Tensor, heat: Heat1x, threshold: float, half: int) -> _Picked | None:
    """The windows of the joints of ``poses (P, K, 3)`` to refine; None when there is none."""
    if poses.shape[0] == 0:
        return None
    H, W = heat.size
    xi = (poses[..., 0] + 0.5).floor().long()
    yi = (poses[..., 1] + 0.5).floor().long()
    sel = (poses[..., 2] > threshold) & (xi >= 1) & (xi <= W - 2) & (yi >= 1) & (yi <= H - 2)
    pi, ki = torch.nonzero(sel, as_tuple=True)
    if pi.numel() == 0:
        return None
    cx, cy = xi[pi, ki], yi[pi, ki]
    offs = torch.arange(-half, half + 1, device=poses.device)
    rows = cy[:, None] + offs  # (M, n)
    cols = cx[:, None] + offs
    valid_y = (rows >= 0) & (rows < H)
    valid_x = (cols >= 0) & (cols < W)
    return _Picked(pi, ki, cx, cy, heat.windows(ki, cx, cy, half), valid_x, valid_y)


def _move(poses: torch.Tensor, picked: _Picked, params: torch.Tensor, ok: torch.Tensor,
          center_scores: torch.Tensor, half: int) -> torch.Tensor:
    """``poses (P, K, 3)`` with the picked joints whose fit ``params (M, 4)`` is ``ok (M,)``
    moved to the fitted mean and scored ``A x center score``."""
    out = poses.clone()
    pi, ki, params = picked.pi[ok], picked.ki[ok], params[ok]
    cx, cy = picked.cx[ok], picked.cy[ok]
    out[pi, ki, 0] = (cx - half + params[:, 1]).to(out.dtype)
    out[pi, ki, 1] = (cy - half + params[:, 2]).to(out.dtype)
    out[pi, ki, 2] = (params[:, 0] * center_scores[pi].double()).to(out.dtype)
    return out


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
    that pixel, ``s = sigma``; see :func:`initial_guess`) on the ``window x window`` patch
    around it (clipped at the map border); the joint moves to the fitted mean and its score
    becomes ``A x center score``. All joints are fitted in one batch (:func:`fit_gaussians`).
    """
    return refine_many([(poses, heat, center_scores)], threshold, window, sigma)[0]


def refine_many(
    jobs: Sequence[tuple[torch.Tensor, Heat1x, torch.Tensor]],
    threshold: float = 0.05,
    window: int = 13,
    sigma: float = 2.0,
) -> list[torch.Tensor]:
    """:func:`refine` of each ``(poses (P, K, 3), heat, center_scores (P,))`` job, with one
    :func:`fit_gaussians` call for the joints of all jobs -> ``[(P, K, 3)]``.

    The fit is overhead-bound (~10 iterations of many tiny ops), so the images of a batch
    are much cheaper together; each window's fit is independent (its own damping and
    convergence), so the result equals refining each job alone, bit for bit.
    """
    half = window // 2
    picked = [_pick(poses, heat, threshold, half) for poses, heat, _ in jobs]
    found = [p for p in picked if p is not None]
    if not found:
        return [poses.clone() for poses, _, _ in jobs]
    wins = torch.cat([p.wins for p in found])
    params, ok = fit_gaussians(wins, torch.cat([p.valid_x for p in found]),
                               torch.cat([p.valid_y for p in found]), initial_guess(wins, sigma))
    sizes = [p.pi.numel() for p in found]
    fits = iter(zip(params.split(sizes), ok.split(sizes)))
    return [
        poses.clone() if p is None else _move(poses, p, *next(fits), scores, half)
        for (poses, _, scores), p in zip(jobs, picked)
    ]
