"""The whole decoding of one image: :func:`parse` (regression and final poses) and
:func:`heatmap_poses` (Table 4's heatmap quality) (docs/method.md §5.4-5.9, §7); of
several images with one refinement for all: :func:`decode_many`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from arkpose.config import DEFAULT_DECODE, DecodeConfig
from arkpose.decode.candidates import absorb, keypoint_candidates
from arkpose.decode.centers import regression_poses
from arkpose.decode.maps import Heat1x, absolute_keypoints, bilinear_sample
from arkpose.decode.refine import refine, refine_many

# A pose scorer: ``poses (P, K, 3) -> scores (P,)`` (mean joint score, or the learned one).
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def mean_score(poses: torch.Tensor) -> torch.Tensor:
    """Naive pose score: mean joint score. ``(P, K, 3) -> (P,)``."""
    return poses[..., 2].mean(-1)


def _candidates(heat: Heat1x, decode: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return keypoint_candidates(
        heat, decode.candidates, decode.candidate_kernel, decode.keypoint_threshold)


def _refine(poses: torch.Tensor, heat: Heat1x, center_scores: torch.Tensor,
            decode: DecodeConfig) -> torch.Tensor:
    return refine(poses, heat, center_scores, decode.refine_threshold, decode.refine_window,
                  decode.refine_sigma)


def _refine_many(jobs: list[tuple[torch.Tensor, Heat1x, torch.Tensor]],
                 decode: DecodeConfig) -> list[torch.Tensor]:
    return refine_many(jobs, decode.refine_threshold, decode.refine_window, decode.refine_sigma)


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


def parse(
    heatmaps: torch.Tensor,
    center: torch.Tensor | Sequence[torch.Tensor],
    offsets: torch.Tensor | Sequence[torch.Tensor],
    decode: DecodeConfig = DEFAULT_DECODE,
    *,
    absolute: bool = True,
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
        decode: every setting (``flip`` and ``scales`` were used making the maps).
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
    res, heat = _group(heatmaps, center, offsets, decode, absolute)
    if decode.refine:
        res["final"] = _refine(res["final"], heat, res["center_scores"], decode)
    return _score_final(res, score_fn)


def _group(
    heatmaps: torch.Tensor,
    center: torch.Tensor | Sequence[torch.Tensor],
    offsets: torch.Tensor | Sequence[torch.Tensor],
    decode: DecodeConfig,
    absolute: bool,
) -> tuple[dict[str, torch.Tensor], Heat1x]:
    """:func:`parse` up to the refinement: its dict without ``final_scores``, ``final``
    absorbed but not refined; and the 1x maps."""
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

    joints, cscores = regression_poses(K, centers, kmaps, decode)
    P = joints.shape[0]
    regression = torch.cat([joints, (cscores[:, None] * bilinear_sample(heat, joints))[..., None]], -1)
    if P == 0:
        empty = heat.maps.new_zeros(0, K, 3)
        zero = heat.maps.new_zeros(0)
        return {"regression": empty, "regression_scores": zero, "final": empty.clone(),
                "center_scores": zero.clone()}, heat
    start = torch.cat([joints, cscores[:, None, None].expand(P, K, 1)], -1)
    cand_pos, cand_val = _candidates(heat, decode)
    final = absorb(start, heat, cand_pos, cand_val, decode.max_distance)
    return {"regression": regression, "regression_scores": mean_score(regression),
            "final": final, "center_scores": cscores}, heat


def _score_final(res: dict[str, torch.Tensor], score_fn: ScoreFn | None) -> dict[str, torch.Tensor]:
    """:func:`_group`'s dict with the (refined) final poses scored: ``final_scores (P,)``.
    No pose: no call to ``score_fn`` (a learned scorer need not take P = 0)."""
    final = res["final"]
    P = final.shape[0]
    if P == 0:
        return {**res, "final_scores": final.new_zeros(0)}
    scores = (score_fn or mean_score)(final)
    return {**res, "final_scores": scores.reshape(P).to(final.dtype)}


def heatmap_poses(
    heat: Heat1x,
    cues: torch.Tensor,
    decode: DecodeConfig = DEFAULT_DECODE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table 4's "heatmap" quality: heatmap keypoints grouped by ground-truth cue poses.

    ``heat`` the 1x maps; ``cues (G, K, 3)`` ground-truth poses (x, y, v) in the same
    1x pixels -> ``(poses (G, K, 3), scores (G,))``.

    Definition (no ground-truth position leaks into a prediction): for each labelled
    cue joint (v > 0) the prediction is the **nearest keypoint candidate** of that type
    (:func:`keypoint_candidates` with ``decode.candidates``, ``candidate_kernel``), whatever its distance, with the
    candidate's value as score; positions are then refined by the same Gaussian fit as
    the final poses (center score taken as 1), so heatmap and final quality differ only
    by the grouping cue. Unlabelled cue joints (v = 0; OKS ignores them) are placed at
    the mean of the pose's predicted joints with score 0. The pose score is the mean
    score of its labelled joints. The ground truth only *selects* candidates.
    """
    poses, labelled = _nearest_candidates(heat, cues, decode)
    if decode.refine:
        poses = _refine(poses, heat, poses.new_ones(poses.shape[0]), decode)
    return _place_unlabelled(poses, labelled)


def _nearest_candidates(
    heat: Heat1x, cues: torch.Tensor, decode: DecodeConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`heatmap_poses` up to the refinement: ``(poses (G, K, 3), labelled (G, K))``."""
    G, K, _ = cues.shape
    if G == 0:
        return heat.maps.new_zeros(0, K, 3), cues.new_zeros(0, K, dtype=torch.bool)
    cand_pos, cand_val = _candidates(heat, decode)
    d = (cues[:, :, None, :2].float() - cand_pos[None]).norm(dim=-1)
    best = d.argmin(-1)
    kk = torch.arange(K, device=cues.device).expand(G, K)
    pos = cand_pos[kk, best]
    val = cand_val[kk, best]
    labelled = (cues[..., 2] > 0) & torch.isfinite(pos).all(-1)
    pos = torch.where(torch.isfinite(pos), pos, torch.zeros_like(pos))
    return torch.cat([pos, val[..., None]], -1), labelled


def _place_unlabelled(
    poses: torch.Tensor, labelled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`heatmap_poses` after the refinement: unlabelled joints at the mean of the
    labelled ones with score 0, pose scores -> ``(poses (G, K, 3), scores (G,))``."""
    G, K, _ = poses.shape
    if G == 0:
        return poses, poses.new_zeros(0)
    n = labelled.sum(-1, keepdim=True).clamp_min(1)
    mean_xy = (poses[..., :2] * labelled[..., None]).sum(1) / n
    poses[..., :2] = torch.where(labelled[..., None], poses[..., :2], mean_xy[:, None].expand(G, K, 2))
    poses[..., 2] = torch.where(labelled, poses[..., 2], torch.zeros_like(poses[..., 2]))
    scores = poses[..., 2].sum(-1) / n[:, 0]
    return poses, scores


def decode_many(
    images: Sequence[tuple[torch.Tensor, Sequence[torch.Tensor], Sequence[torch.Tensor]]],
    decode: DecodeConfig = DEFAULT_DECODE,
    *,
    qualities: Sequence[str] = ("final",),
    cues: Sequence[torch.Tensor] | None = None,
    score_fn: ScoreFn | None = None,
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The poses of several images per quality, with one Gaussian fit
    (:func:`refine_many`) for the joints of every image and quality.

    ``images``: per image ``(heatmaps, centers, keypoints)``, :func:`parse`'s maps with
    absolute keypoint maps; ``qualities`` among "regression", "final" (:func:`parse`) and
    "heatmap" (:func:`heatmap_poses`, which needs ``cues``: per image ``(G, K, 3)`` in 1x
    px); ``score_fn`` as :func:`parse`. Returns per image ``{quality: (poses (P, K, 3),
    scores (P,))}`` in 1x px, bit-equal to :func:`parse` and :func:`heatmap_poses` of that
    image alone.
    """
    qualities = tuple(qualities)
    heatmap = "heatmap" in qualities
    if heatmap and (cues is None or len(cues) != len(images)):
        raise ValueError("the 'heatmap' quality needs one cue tensor per image")
    groups = ([_group(h, c, o, decode, True) for h, c, o in images]
              if "regression" in qualities or "final" in qualities else [])
    heats = ([heat for _, heat in groups] if groups else
             [Heat1x.from_maps(_drop_batch(h, "heatmaps", 3), tuple(_as_list(c)[0].shape[-2:]))
              for h, c, _ in images])
    nearest = ([_nearest_candidates(heat, g, decode) for heat, g in zip(heats, cues)]
               if heatmap else [])
    jobs = [(res["final"], heat, res["center_scores"]) for res, heat in groups]
    jobs += [(poses, heat, poses.new_ones(poses.shape[0]))
             for (poses, _), heat in zip(nearest, heats)]
    refined = _refine_many(jobs, decode) if decode.refine else [poses for poses, _, _ in jobs]
    out: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in images]
    for found, (res, _), final in zip(out, groups, refined):
        res = _score_final({**res, "final": final}, score_fn)
        found["regression"] = (res["regression"], res["regression_scores"])
        found["final"] = (res["final"], res["final_scores"])
    for found, (_, labelled), poses in zip(out, nearest, refined[len(groups):]):
        found["heatmap"] = _place_unlabelled(poses, labelled)
    return [{q: found[q] for q in qualities} for found in out]
