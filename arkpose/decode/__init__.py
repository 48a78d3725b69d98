"""Decoding: from one image's fused maps to poses (docs/method.md §5.4-5.9).

Pure, vectorised torch functions, one image at a time (:func:`decode_many` decodes a batch
of images with one refinement for all, the same numbers); every setting comes in one
:class:`arkpose.config.DecodeConfig`. Coordinates are ``(x, y)`` with x to the right; "grid"
pixels are the network's stride-4 output, "1x" pixels those of the resized test image, with
1x coordinate = 4 x grid coordinate (docs/method.md §0, §5.3).

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

The modules, in pipeline order: :mod:`.maps` (the 1x maps and their reads),
:mod:`.centers` (center NMS, regressed poses, pose NMS), :mod:`.candidates` (keypoint
candidates, absorb), :mod:`.refine` (the Gaussian fit), :mod:`.parse` (the whole image, or
a batch of images).

Deviations from the official code (documented in docs/inference.md): pose NMS is a plain
greedy NMS in score order; the absorb fallback reads the heat at (x, y), not transposed;
the refinement fits on windows clipped at the map border with the correct axes; top-k
ties are broken by the lower flat index, so results do not depend on the torch build.

Speed: the official grouping takes ~360 ms for a 20-person image, mostly scipy fitting
one joint at a time; here the 1x maps are never built (:class:`Heat1x`), the keypoint
candidates are found on the grid (:func:`grid_candidate_mask`) and all Gaussian fits run
as one batched Levenberg-Marquardt (:func:`fit_gaussians`): ~16 ms of CPU on one core
(tests/benchmarks/bench_grouping.py). The fit's many tiny ops cost mostly per-call
overhead, so :func:`refine_many` fits the joints of a batch of images in one call.
"""

from arkpose.decode.candidates import absorb, keypoint_candidates
from arkpose.decode.centers import center_pool_size, find_centers, pose_nms, regression_poses
from arkpose.decode.maps import (
    Heat1x,
    absolute_keypoints,
    bilinear_sample,
    grid_candidate_mask,
    local_maxima,
    topk_stable,
    upsample_to,
)
from arkpose.decode.parse import ScoreFn, decode_many, heatmap_poses, mean_score, parse
from arkpose.decode.refine import fit_gaussians, initial_guess, refine, refine_many

__all__ = [
    "Heat1x", "ScoreFn", "absolute_keypoints", "absorb", "bilinear_sample", "center_pool_size",
    "decode_many", "find_centers", "fit_gaussians", "grid_candidate_mask", "heatmap_poses",
    "initial_guess", "keypoint_candidates", "local_maxima", "mean_score", "parse", "pose_nms",
    "refine", "refine_many", "regression_poses", "topk_stable", "upsample_to",
]
