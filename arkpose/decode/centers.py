"""Person centers and their regressed poses: center NMS, pose NMS (docs/method.md §5.4-5.6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from arkpose.config import DEFAULT_DECODE, DecodeConfig
from arkpose.decode.maps import local_maxima, topk_stable
from arkpose.spec import OUTPUT_STRIDE


def center_pool_size(h: int, w: int) -> int:
    """Max-pool size of the center NMS for a ``(h, w)`` grid map: 3, 5 above 200, 7 above 300."""
    size = (h + w) / 2.0
    return 7 if size > 300 else 5 if size > 200 else 3


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


def regression_poses(
    num_keypoints: int,
    centers: Sequence[torch.Tensor],
    keypoint_maps: Sequence[torch.Tensor],
    decode: DecodeConfig = DEFAULT_DECODE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centers -> NMS'd regressed joints ``(P, K, 2)`` in 1x px and center scores ``(P,)``.

    ``centers[i] (1, h_i, w_i)``, ``keypoint_maps[i] (2K, h_i,
    w_i)`` absolute, reference grid px; entry 0 is the reference scale. Other scales'
    center maps are normalised to the reference map's maximum and multiplied by
    ``decode.scale_decrease`` (threshold too), as the official multi-scale test.
    """
    K = num_keypoints
    ref_max = centers[0].max()
    all_scores, all_joints = [], []
    for i, (c, kp) in enumerate(zip(centers, keypoint_maps)):
        c = c.float()
        factor = 1.0
        if i > 0:
            factor = decode.scale_decrease
            c = factor * c / c.max().clamp_min(1e-12) * ref_max
        scores, idx = find_centers(c, decode.max_people, decode.center_threshold * factor)
        joints = kp.reshape(K, 2, -1)[:, :, idx].permute(2, 0, 1) * OUTPUT_STRIDE  # (M, K, 2)
        all_scores.append(scores)
        all_joints.append(joints.float())
    scores = torch.cat(all_scores)
    joints = torch.cat(all_joints)
    keep = pose_nms(joints, scores, decode.nms_distance, decode.nms_overlap, decode.max_people)
    return joints[keep], scores[keep]
