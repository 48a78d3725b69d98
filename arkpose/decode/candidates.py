"""Keypoint candidates on the heatmaps and the absorb step (docs/method.md §5.7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arkpose.decode.maps import Heat1x, grid_candidate_mask, topk_stable
from arkpose.spec import OUTPUT_STRIDE


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
        step = OUTPUT_STRIDE
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
