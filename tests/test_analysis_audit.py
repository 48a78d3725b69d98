"""Audit of arkpose.analysis against error_analysis.md (and coco-analyze's code as it describes).

Every expected value here is computed by hand from the spec's formulas, on scenes small enough
to follow keypoint by keypoint: ks = exp(-d² / (2σ)² / (A + eps) / 2), OKS = mean ks over the
GT's labelled keypoints, corrected x = x_gt + sqrt(-ln(ks_target) · 2 · A · σ²) (σ² quirk).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from arkpose.analysis import analyze, area_ranges
from arkpose.analysis.benchmarks import occlusion_crowding
from arkpose.analysis.breakdown import Engine
from arkpose.analysis.data import load
from arkpose.spec import COCO

EPS = float(np.spacing(1))
SIG = np.array(COCO.sigmas)
LW, RW = COCO.index("left_wrist"), COCO.index("right_wrist")
POSE = np.array([
    [50, 20], [45, 15], [55, 15], [38, 18], [62, 18], [30, 50], [70, 50], [22, 85], [78, 85],
    [18, 120], [82, 120], [38, 120], [62, 120], [36, 160], [64, 160], [35, 195], [65, 195],
], dtype=float)
ALL = area_ranges("coco-analyze")["all"]


def _gt(ann_id, img, xy, area, vis=None, bbox=None):
    v = np.full(len(xy), 2.0) if vis is None else np.asarray(vis, dtype=float)
    kp = np.concatenate([xy, v[:, None]], 1)
    if bbox is None:
        lab = xy[v > 0] if (v > 0).any() else xy
        bbox = [float(lab[:, 0].min()), float(lab[:, 1].min()),
                float(np.ptp(lab[:, 0])), float(np.ptp(lab[:, 1]))]
    return {"id": ann_id, "image_id": img, "category_id": 1, "iscrowd": 0, "area": float(area),
            "keypoints": kp.ravel().tolist(), "num_keypoints": int((v > 0).sum()), "bbox": bbox}


def _dt(img, xy, score):
    kp = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    return {"image_id": img, "category_id": 1, "score": float(score),
            "keypoints": kp.ravel().tolist()}


def _coco(n_images, anns):
    return {"images": [{"id": i, "width": 640, "height": 480} for i in range(1, n_images + 1)],
            "annotations": anns, "categories": [COCO.coco_category()]}


def _ks(d2, k, area):
    return math.exp(-d2 / (2 * SIG[k]) ** 2 / (area + EPS) / 2)


def _fix_x(x_gt, ks, k, area):
    """§3.4: x shifted by the distance at which ks is reached, with σ² (the quirk)."""
    return x_gt + math.sqrt(-math.log(ks) * 2 * area * SIG[k] ** 2)


# §3.3 swap: "Any annotation with that keypoint labelled counts, including ignored ones and
# people below 32²", "using that annotation's area as scale".
def test_swap_onto_a_tiny_ignored_person_uses_its_area_and_fix_targets_own_gt():
    a = POSE + [100, 100]                        # area 20000: 'large', counted in 'all'
    c = POSE * 0.1 + [400, 300]                  # area 500 < 32²: ignored in 'all'
    gt = _coco(1, [_gt(1, 1, a, 20000), _gt(2, 1, c, 500)])
    d = a.copy()
    d[LW] = c[LW] + [2.0, 0.0]
    data = load(gt, [_dt(1, d, 0.9)])
    errs = Engine(data).errors(ALL)
    assert errs.analysed[0] and data.gt_ids[errs.gt[0]] == 1
    assert np.nonzero(errs.flags["swap"][0])[0].tolist() == [LW]
    assert errs.flags["good"][0].sum() == 16
    ks = _ks(4.0, LW, 500)                       # measured against C's wrist with C's area
    assert 0.5 <= ks < 0.85
    assert errs.opt_xy[0, LW, 0] == pytest.approx(_fix_x(a[LW, 0], ks, LW, 20000), abs=1e-9)
    assert errs.opt_xy[0, LW, 1] == a[LW, 1]     # y on the matched GT's own wrist
    # the corrected wrist has ks = ks_max^(1/4) with its own GT (§3.4 quirk)
    d2 = float(np.sum((errs.opt_xy[0, LW] - a[LW]) ** 2))
    assert _ks(d2, LW, 20000) == pytest.approx(ks ** 0.25, abs=1e-12)


# §3.3 inversion: nearest to the mirrored part of the same person; fix uses ks_max.
def test_inverted_wrists_are_inversions_fixed_from_their_mirror_ks():
    a = POSE + [100, 100]
    d = a.copy()
    d[LW] = a[RW] + [3.0, 0.0]
    d[RW] = a[LW] + [3.0, 0.0]
    data = load(_coco(1, [_gt(1, 1, a, 20000)]), [_dt(1, d, 0.9)])
    errs = Engine(data).errors(ALL)
    assert np.nonzero(errs.flags["inversion"][0])[0].tolist() == [LW, RW]
    assert errs.flags["good"][0].sum() == 15 and not errs.flags["swap"][0].any()
    ks = _ks(9.0, LW, 20000)                     # the same 3 px from the mirrored wrist
    for k in (LW, RW):
        assert errs.opt_xy[0, k, 0] == pytest.approx(_fix_x(a[k, 0], ks, k, 20000), abs=1e-9)
        assert errs.opt_xy[0, k, 1] == a[k, 1]


# §3.1: "A match to an *ignored* GT also counts, e.g. a GT with area < 32² that has keypoints."
def test_detection_matched_only_to_a_tiny_ignored_gt_is_still_classified():
    c = POSE * 0.1 + [400, 300]
    res = analyze(_coco(1, [_gt(7, 1, c, 500)]), [_dt(1, c, 0.9)], benchmarks=False)
    ke = res.keypoint_errors
    assert ke["num_matched"] == 1 and ke["totals"]["good"] == 17 and ke["num_keypoints"] == 17
    # ... but the GT is outside 'all' = [32², 1e10]: no AP is defined there
    assert all(math.isnan(v) for v in res.cumulative["ap"]["baseline"]["all"])


# §4: opt_score = max OKS with a *non-ignored* GT, then Gaussian soft-NMS in the image's
# loadRes order (score-sorted by run_analysis.py), so ties go to the higher original score.
def test_optimal_scores_max_oks_and_soft_nms_by_hand():
    a = POSE + [100, 100]
    c = POSE * 0.1 + [400, 300]
    gt = _coco(2, [_gt(1, 1, a, 20000), _gt(2, 2, c, 500)])
    dets = [_dt(1, a, 0.3), _dt(1, a, 0.8), _dt(2, c, 0.7)]  # two identical dts on A
    res = analyze(gt, dets, benchmarks=False)
    opt = np.asarray(res.scoring["opt_score"])
    # data order: image 1 by score (0.8, 0.3), then image 2. Identical poses: dt-dt OKS = 1,
    # so the second one is multiplied by exp(-1² / 0.5). C is ignored in 'all': max OKS 0.
    assert opt.tolist() == [1.0, math.exp(-2.0), 0.0]


# §2 / §6b on a one-person scene: every AP is 0 or 1, so the isolated improvement is known.
def test_isolated_miss_improvement_by_hand_shows_the_quarter_power_quirk():
    a = POSE + [100, 100]
    d = a.copy()
    d[LW] += [0.0, 300.0]                        # two far misses: ks ~ 0
    d[RW] += [0.0, 300.0]
    gt, dets = _coco(1, [_gt(1, 1, a, 20000)]), [_dt(1, d, 0.9)]
    oks = 15 / 17                                # 0.882: a TP up to OKS .85, FP above
    one = float(np.mean(np.full(101, 1 / (1 + EPS))))  # lone TP: precision tp / (tp + fp + eps)
    thrs = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    base = [one if t <= oks else 0.0 for t in thrs]
    for compat, fixed_ks in (("coco-analyze", 0.5 ** 0.25), ("fixed", 0.5)):
        res = analyze(gt, dets, compat=compat, benchmarks=False)
        assert res.isolated["ap"]["baseline"]["all"].tolist() == base
        after = (15 + 2 * fixed_ks) / 17         # compat: 0.981 (passes .95); fixed: 0.941
        want = [(one if t <= after else 0.0) - b for t, b in zip(res.oks_thresholds, base)]
        assert res.isolated["improvement"]["miss"]["all"].tolist() == want
        assert res.isolated["improvement"]["miss"]["large"].tolist() == want
        assert math.isnan(res.isolated["mean"]["miss"]["medium"])   # no medium GT
        assert res.isolated["mean"]["miss"]["all"] == pytest.approx(np.mean(want))
    assert res.isolated["improvement"]["jitter"]["all"].tolist() == [0.0] * 10


# §8: in a cell, GTs outside it are ignored *also for the OKS .1 matching* that decides which
# detection's keypoints are counted, so a detection may be classified against a cell GT
# although another annotation fits it better.
def test_occlusion_cell_classifies_against_the_cell_gt_when_others_are_ignored():
    a = POSE + [100, 100]                        # 17 keypoints -> column 16-17
    b = POSE + [400, 100]                        # 8 keypoints (joints 5..12) -> column 6-10
    vb = np.zeros(17)
    vb[5:13] = 2
    gt = _coco(1, [_gt(1, 1, a, 20000, bbox=[100, 100, 100, 200]),
                   _gt(2, 1, b, 20000, vis=vb, bbox=[400, 100, 100, 200])])
    d = a.copy()
    d[5:13] = b[5:13]                            # OKS 1 with B, 9/17 with A
    data = load(gt, [_dt(1, d, 0.9)])
    occ = occlusion_crowding(data, "coco-analyze", ALL)
    assert occ["instances"][0].tolist() == [0, 1, 0, 1]
    # A's cell: B ignored, the detection matches A: 9 joints good, B's 8 joints are swaps
    assert occ["counts"]["good"][0, 3] == 9 and occ["counts"]["swap"][0, 3] == 8
    assert occ["percent"]["swap"][0, 3] == pytest.approx(100 * 8 / 17)
    # B's cell: A ignored, the detection matches B: its 8 labelled joints are good
    assert occ["counts"]["good"][0, 1] == 8
    assert sum(occ["counts"][c][0, 1] for c in ("jitter", "inversion", "swap", "miss")) == 0
    # overall (no cell ignores) the detection goes to B, its better match
    errs = Engine(data).errors(ALL)
    assert data.gt_ids[errs.gt[0]] == 2


# §4 scoringErrors: the OKS matrix comes from utilities.compute_oks, whose sigmas are
# COCOeval's np.array([.26, .25, ...]) / 10 (not the literal .026 of Params.sigmas). For the
# nose they differ in the last bit, which decides OKS >= .5 right at the boundary.
def test_scoring_errors_use_cocoeval_sigmas():
    nose_only = np.zeros(17)
    nose_only[0] = 2
    g = np.zeros((17, 2))
    g[:, 1] = 100.0
    gt = _coco(1, [_gt(1, 1, g, 10000, vis=nose_only, bbox=[0, 90, 20, 20])])
    d0 = 6.1225321170804685                       # OKS .5000000000000001 (COCOeval sigma)
    ce = np.array([0.26])[0] / 10.0
    assert math.exp(-d0 ** 2 / (ce * 2) ** 2 / (10000 + EPS) / 2) >= 0.5
    assert math.exp(-d0 ** 2 / (SIG[0] * 2) ** 2 / (10000 + EPS) / 2) < 0.5
    spread = np.stack([np.linspace(0, 40, 17), np.linspace(100, 140, 17)], 1)
    high, exact = spread.copy(), spread.copy()
    high[0] = [d0, 100.0]
    exact[0] = [0.0, 100.0]
    res = analyze(gt, [_dt(1, high, 0.9), _dt(1, exact, 0.1)], benchmarks=False)
    # both detections reach OKS .5; the best-scored one is not the best-OKS one: 1 error
    assert res.scoring["scoring_errors_original"] == 1
    assert res.scoring["scoring_errors_optimal"] == 0


# §4 _soft_nms: score *= exp(-(oks ** 2) / .5) with ``oks`` a numpy scalar, so the square is
# libm's pow; numpy's array ``** 2`` (x * x) differs from it in the last bit for some values,
# which this shift (found by search, checked below) hits.
def test_soft_nms_squares_the_dt_dt_oks_like_a_scalar():
    a = POSE + [100, 100]
    d = a + [2.59, 0.0]
    data = load(_coco(1, [_gt(1, 1, a, 20000)]), [_dt(1, a, 0.9), _dt(1, d, 0.8)])
    x, y = data.dt_kpts[:, :, 0], data.dt_kpts[:, :, 1]
    box = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
    var = (SIG * 2) ** 2
    e = ((x[1] - x[0]) ** 2 + (y[1] - y[0]) ** 2) / var / (0.5 * (box[0] + box[1]) + EPS) / 2
    o = float(np.sum(np.exp(-e)) / 17)          # dt-dt OKS, both keypoint-bbox areas averaged
    assert o * o != o ** 2                       # the case where the two squares differ
    ce = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                   .89, .89]) / 10.0
    g = data.gt_kpts[0, :, :2]
    eg = ((x[1] - g[:, 0]) ** 2 + (y[1] - g[:, 1]) ** 2) / (ce * 2) ** 2 / (20000 + EPS) / 2
    max_oks = float(np.sum(np.exp(-eg)) / 17)    # COCOeval's OKS with the only GT
    res = analyze(_coco(1, [_gt(1, 1, a, 20000)]), [_dt(1, a, 0.9), _dt(1, d, 0.8)],
                  benchmarks=False)
    opt = res.scoring["opt_score"]
    assert opt[0] == 1.0
    assert opt[1] == max_oks * math.exp(-(o ** 2) / 0.5)


# §5/§6: _summarize_bckgd_errors stores the 'w/o FN' curves threshold by threshold in
# ascending OKS order (ps_mat_false_neg[oind] = precision[oind]) while every other step is
# stored reversed (precision[::-1]) and summarize() labels all of them in descending order.
# So the tool's 'false_neg' figure labelled OKS t is the one computed at the mirrored
# threshold (.50 <-> .95, ...). Invisible while it is 1.0 everywhere; in these scenes the
# only GT is lost at the top thresholds, where the true 'w/o FN' AP is undefined (-1).
def test_false_neg_step_is_read_at_the_mirrored_threshold_in_compat_mode():
    a = POSE + [100, 100]
    one = float(np.mean(np.full(101, 1 / (1 + EPS))))
    nan = float("nan")
    # isolated (original dts): OKS 15/17 = .882, the GT is found up to .85 only
    d = a.copy()
    d[LW] += [0.0, 300.0]
    d[RW] += [0.0, 300.0]
    gt, dets = _coco(1, [_gt(1, 1, a, 20000)]), [_dt(1, d, 0.9)]
    res = analyze(gt, dets, benchmarks=False)
    true_fn = [one] * 8 + [nan, nan]
    np.testing.assert_array_equal(res.isolated["ap"]["false_neg"]["all"], true_fn[::-1])
    np.testing.assert_array_equal(res.isolated["ap"]["bckgd_false_pos"]["all"],
                                  [one] * 8 + [0.0, 0.0])
    # improvement = AP(w/o FN, as labelled) - AP(w/o FP), the tool subtracting its -1 sentinel
    # where the 'w/o FN' AP is undefined (§6b: "'false_neg' = AP(w/o FN) - AP(w/o FP)")
    np.testing.assert_array_equal(res.isolated["improvement"]["false_neg"]["all"],
                                  [-1 - one, -1 - one] + [0.0] * 6 + [one, one])
    mean = (2 * (-1 - one) + 2 * one) / 10
    assert res.isolated["mean"]["false_neg"]["all"] == pytest.approx(mean)
    fixed = analyze(gt, dets, compat="fixed", benchmarks=False)
    np.testing.assert_array_equal(fixed.isolated["ap"]["false_neg"]["all"], true_fn)
    np.testing.assert_array_equal(fixed.isolated["improvement"]["false_neg"]["all"],
                                  [0.0] * 8 + [nan, nan])
    # cumulative: every keypoint a miss (ks .3, shifted down); fixed to ks .5^(1/4) = .8409,
    # so even after all corrections the GT is found up to OKS .80 only
    d = a.copy()
    d[:, 1] += np.sqrt(-np.log(0.3) * 2 * 20000 * (2 * SIG) ** 2)
    res = analyze(_coco(1, [_gt(1, 1, a, 20000)]), [_dt(1, d, 0.9)], benchmarks=False)
    assert res.keypoint_errors["totals"]["miss"] == 17
    true_fn = [one] * 7 + [nan] * 3
    np.testing.assert_array_equal(res.cumulative["ap"]["false_neg"]["all"], true_fn[::-1])
    np.testing.assert_array_equal(res.cumulative["recall"]["false_neg"]["all"],
                                  [nan] * 3 + [1.0] * 7)
