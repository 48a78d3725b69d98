"""Keypoint localisation errors: good / jitter / inversion / swap / miss, and their fixes.

Ronchi & Perona's taxonomy as coco-analyze's ``_find_kpt_errors`` computes it
(error_analysis.md §3). A detection matched to a GT at OKS >= 0.1 compares each keypoint k
with keypoint k and with its mirror ``flip_index[k]`` of every annotation of the image;
the best keypoint similarity (ks) and where it was found decide the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arkpose.analysis.data import AnalysisData
from arkpose.analysis.matching import EPS, Match

ERROR_TYPES = ("miss", "swap", "inversion", "jitter")  # coco-analyze's err_types order
CLASSES = ("good", "jitter", "inversion", "swap", "miss")
JITTER_KS = (0.5, 0.85)
LOC_OKS = 0.1


@dataclass
class KeypointErrors:
    """Per-detection keypoint classes for one area range.

    flags: dict class -> (D, K) bool (all False for unanalysed detections).
    analysed: (D,) detections matched at OKS 0.1 to a GT with keypoints.
    gt: (D,) flat index of the matched GT, -1 when not analysed.
    opt_xy: (D, K, 2) corrected keypoints (the detection's own where not an error).
    unclassified: (D, K) labelled keypoints in no class (ks exactly 0.85, compat mode).
    """

    flags: dict
    analysed: np.ndarray
    gt: np.ndarray
    opt_xy: np.ndarray
    unclassified: np.ndarray

    def error_mask(self, types) -> np.ndarray:
        """(D, K) keypoints carrying any of ``types``."""
        mask = np.zeros_like(self.flags["good"])
        for t in types:
            mask |= self.flags[t]
        return mask

    def corrected(self, dt_xy: np.ndarray, types) -> np.ndarray:
        """dt_xy (D, K, 2) with the keypoints of ``types`` moved to their fix."""
        mask = self.error_mask(types)[..., None]
        return np.where(mask, self.opt_xy, dt_xy)


def matched_pairs(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """(dt, gt) flat indices matched at the match's single threshold (ignored GTs included)."""
    hit = m.dt_gt[0] >= 0
    return m.dsel[hit], m.dt_gt[0][hit]


def classify(data: AnalysisData, m: Match, compat: str = "coco-analyze") -> KeypointErrors:
    """Classify the keypoints of every detection matched in ``m`` (a match at OKS 0.1)."""
    spec = data.spec
    n_d, k = len(data.dt_ids), spec.num_keypoints
    flags = {c: np.zeros((n_d, k), dtype=bool) for c in CLASSES}
    analysed = np.zeros(n_d, dtype=bool)
    gt_of = -np.ones(n_d, dtype=np.int64)
    dt_xy = data.dt_kpts[:, :, :2]
    opt_xy = dt_xy.copy()
    unclassified = np.zeros((n_d, k), dtype=bool)
    d, g = matched_pairs(m)
    keep = data.gt_numkpts[g] != 0  # GTs without keypoints cannot be analysed
    d, g = d[keep], g[keep]
    if len(d) == 0:
        return KeypointErrors(flags, analysed, gt_of, opt_xy, unclassified)

    # Rows: the matched GT, the image's other GTs (json order), then all of them mirrored.
    gi = data.gidx[data.dt_img[d]]                            # (M, Gm)
    n_g = gi.shape[1]
    slot = np.arange(n_g)[None]
    key = np.where(gi == g[:, None], -1, np.where(gi >= 0, slot, n_g + 1))
    rows = np.take_along_axis(gi, np.argsort(key, axis=1, kind="stable"), 1)
    valid = rows >= 0
    kp = data.gt_kpts[np.maximum(rows, 0)]                    # (M, Gm, K, 3)
    flip = np.asarray(spec.flip_index)
    kp = np.concatenate([kp, kp[:, :, flip]], axis=1)         # (M, 2Gm, K, 3)
    valid = np.concatenate([valid, valid], axis=1)
    area = data.gt_scale[np.maximum(rows, 0)]
    area = np.concatenate([area, area], axis=1)
    vis = (kp[..., 2] > 0) & valid[..., None]
    dxy = dt_xy[d][:, None]                                   # (M, 1, K, 2)
    sq = (kp[..., 0] - dxy[..., 0]) ** 2 + (kp[..., 1] - dxy[..., 1]) ** 2
    sig = np.asarray(spec.sigmas, dtype=np.float64)
    ks = np.where(vis, np.exp(-sq / (sig * 2) ** 2 / (area[..., None] + EPS) / 2), -1.0)
    ks_max = ks.max(1)
    arg = ks.argmax(1)                                        # first maximum: ties -> row 0
    ks_max = np.where(ks_max < 0, 0.0, ks_max)

    gv = data.gt_kpts[g][:, :, 2] != 0
    lo, hi = JITTER_KS
    on_self = arg == 0
    on_mirror = arg == n_g
    good = (ks_max > hi) & on_self & gv
    if compat == "fixed":
        good = (ks_max >= hi) & on_self & gv
    jitter = (ks_max >= lo) & (ks_max < hi) & on_self & gv
    inversion = (ks_max >= lo) & on_mirror & gv
    swap = (ks_max >= lo) & ~on_self & ~on_mirror & gv
    miss = (ks_max < lo) & gv

    # Corrected positions (l.348-376): y on the GT, x shifted right by the distance at which
    # ks takes the target value. coco-analyze uses sigma^2 where ks uses (2 sigma)^2, so its
    # shift is half the intended one and the corrected ks is ks^(1/4) (compat quirk).
    var = sig ** 2 if compat != "fixed" else (sig * 2) ** 2
    a = data.gt_scale[g][:, None]
    d_low = np.sqrt(-np.log(lo) * 2 * a * var)
    d_high = np.sqrt(-np.log(hi) * 2 * a * var)
    rounded = ks_max + EPS * (ks_max == 0) - EPS * (ks_max == 1)
    d_max = np.sqrt(-np.log(rounded) * 2 * a * var)
    gx, gy = data.gt_kpts[g][:, :, 0], data.gt_kpts[g][:, :, 1]
    dx, dy = dt_xy[d][..., 0], dt_xy[d][..., 1]
    bad = inversion | swap
    x = np.where(jitter, gx + d_high, np.where(miss, gx + d_low, np.where(bad, gx + d_max, dx)))
    y = np.where(jitter | miss | bad, gy, dy)
    opt_xy[d] = np.stack([x, y], axis=-1)

    for name, val in zip(CLASSES, (good, jitter, inversion, swap, miss)):
        flags[name][d] = val
    analysed[d] = True
    gt_of[d] = g
    unclassified[d] = gv & ~(good | jitter | inversion | swap | miss)
    return KeypointErrors(flags, analysed, gt_of, opt_xy, unclassified)
