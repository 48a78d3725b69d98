"""The vectorised analysis against plain pycocotools COCOeval and naive loops (spec §2-§5).

Every AP the analysis reports comes from arkpose.analysis.matching; these tests rebuild
the same figures with pycocotools' COCOeval (a subclass adds coco-analyze's gtIgnoreIds)
and with per-detection loops written straight from error_analysis.md, on random inputs
with crowds, keypoint-less people, tiny people and more than 20 detections per image.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from arkpose.analysis.benchmarks import overlaps
from arkpose.analysis.breakdown import Engine, cumulative, soft_nms
from arkpose.analysis.data import load
from arkpose.analysis.errors import CLASSES
from arkpose.analysis.matching import OKS_THRS, accumulate, max_oks, pairwise_rowsum
from arkpose.analysis.report import area_ranges
from arkpose.analysis.synthetic import make_synthetic
from arkpose.spec import COCO as COCO_SPEC

AREAS = list(area_ranges("coco-analyze").values()) + [(0, 1e10)]


class IgnoringEval(COCOeval):
    """COCOeval plus coco-analyze's ``gtIgnoreIds``."""

    extra: frozenset = frozenset()

    def _prepare(self):
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                if g["id"] in self.extra:
                    g["ignore"] = 1


def _quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **k)


@pytest.fixture(scope="module")
def case():
    gt, dt = make_synthetic(40, dets_per_image=5, seed=3)
    # one image with 25 detections: the top-20 filter and maxDets must agree
    rng = np.random.default_rng(1)
    img = gt["annotations"][0]["image_id"]
    base = np.array(gt["annotations"][0]["keypoints"], dtype=float).reshape(-1, 3)
    for _ in range(25):
        kp = base.copy()
        kp[:, :2] += rng.normal(0, 4, size=(17, 2))
        kp[:, 2] = 1
        dt.append({"image_id": img, "category_id": 1, "score": float(rng.random()),
                   "keypoints": kp.ravel().tolist()})
    data = load(gt, dt)
    kept = []
    by = {}
    for d in dt:
        by.setdefault(d["image_id"], []).append(d)
    for ds in by.values():
        kept.extend(sorted(ds, key=lambda e: -e["score"])[:20])
    cg = COCO()
    cg.dataset = copy.deepcopy(gt)
    _quiet(cg.createIndex)
    cd = _quiet(cg.loadRes, copy.deepcopy(kept))
    return data, cg, cd


def _ref_eval(cg, cd, xy, scores, area, thrs, extra=frozenset(), max_det=20):
    """COCOeval precision (T, R) with detection keypoints/scores replaced in place."""
    originals = {}
    for i, ann_id in enumerate(sorted(cd.anns)):
        a = cd.anns[ann_id]
        originals[ann_id] = (a["keypoints"], a["score"])
        kp = np.array(a["keypoints"], dtype=float).reshape(-1, 3)
        kp[:, :2] = xy[i]
        a["keypoints"] = kp.ravel().tolist()
        a["score"] = float(scores[i])
    try:
        ev = IgnoringEval(cg, cd, "keypoints")
        ev.extra = set(extra)
        ev.params.areaRng = [list(area)]
        ev.params.areaRngLbl = ["a"]
        ev.params.iouThrs = np.asarray(thrs)
        ev.params.maxDets = [max_det]
        _quiet(ev.evaluate)
        _quiet(ev.accumulate)
        return ev
    finally:
        for ann_id, (kp, sc) in originals.items():
            cd.anns[ann_id]["keypoints"], cd.anns[ann_id]["score"] = kp, sc


def test_pairwise_rowsum_is_numpy_sum():
    rng = np.random.default_rng(0)
    for n in range(1, 18):
        a = np.exp(-rng.random((200, n)) * rng.choice([1e-3, 1, 30]))
        padded = np.concatenate([a, np.zeros((200, 17 - n))], 1)
        ref = np.array([np.sum(r) for r in a])
        assert np.array_equal(pairwise_rowsum(padded, np.full(200, n)), ref)


def test_baseline_and_corrected_ap_equal_cocoeval(case):
    data, cg, cd = case
    eng = Engine(data)
    for area in AREAS:
        p, r = eng.baseline(area, OKS_THRS)
        ev = _ref_eval(cg, cd, eng.xy0, eng.s0, area, OKS_THRS)
        assert np.array_equal(p, ev.eval["precision"][:, :, 0, 0, 0])
        assert np.array_equal(r, ev.eval["recall"][:, 0, 0, 0])
        errs = eng.errors(area)
        xy = errs.corrected(eng.xy0, ["miss", "swap", "inversion", "jitter"])
        p, _ = eng.curve(xy, eng.s0, area, OKS_THRS)
        ev = _ref_eval(cg, cd, xy, eng.s0, area, OKS_THRS)
        assert np.array_equal(p, ev.eval["precision"][:, :, 0, 0, 0])
        # the optimal-score step re-ranks: same check with the soft-NMS scores
        opt = eng.opt_scores([area], [xy])[0]
        assert not np.array_equal(np.argsort(-opt), np.argsort(-eng.s0))
        p, _ = eng.curve(xy, opt, area, OKS_THRS)
        ev = _ref_eval(cg, cd, xy, opt, area, OKS_THRS)
        assert np.array_equal(p, ev.eval["precision"][:, :, 0, 0, 0])


def test_gt_ignore_ids_equal_cocoeval_subclass(case):
    data, cg, cd = case
    extra = np.zeros(len(data.gt_ids), bool)
    extra[::3] = True
    eng = Engine(data, extra_ignore=extra)
    area = AREAS[0]
    p, _ = eng.baseline(area, [0.75])
    ev = _ref_eval(cg, cd, eng.xy0, eng.s0, area, [0.75], extra=set(data.gt_ids[extra]))
    assert np.array_equal(p, ev.eval["precision"][:, :, 0, 0, 0])


def _naive_classify(data, cg, ev):
    """§3 as a loop: {dt id: {class: (K,) bool}}."""
    spec = data.spec
    sig = np.array(spec.sigmas)
    out = {}
    for e in ev.evalImgs:
        if e is None:
            continue
        for dind, did in enumerate(e["dtIds"]):
            gid = int(e["dtMatches"][0][dind])
            if gid == 0:
                continue
            gt = cg.anns[gid]
            if gt["num_keypoints"] == 0:
                continue
            anns = cg.loadAnns(cg.getAnnIds(imgIds=gt["image_id"]))
            rows = [gt] + [a for a in anns if a["id"] != gid]
            n = len(rows)
            dkp = np.array(ev.cocoDt.anns[did]["keypoints"], dtype=float).reshape(-1, 3)
            gkp = np.array(gt["keypoints"], dtype=float).reshape(-1, 3)
            flags = {c: np.zeros(spec.num_keypoints, bool) for c in CLASSES}
            flags["opt"] = dkp[:, :2].copy()
            for k in range(spec.num_keypoints):
                if gkp[k, 2] == 0:
                    continue
                best, arg = -math.inf, 0
                for r in range(2 * n):
                    a = np.array(rows[r % n]["keypoints"], dtype=float).reshape(-1, 3)
                    kk = k if r < n else spec.flip_index[k]
                    if a[kk, 2] > 0:
                        d2 = (a[kk, 0] - dkp[k, 0]) ** 2 + (a[kk, 1] - dkp[k, 1]) ** 2
                        ks = np.exp(-d2 / (sig[k] * 2) ** 2 / (rows[r % n]["area"] + np.spacing(1)) / 2)
                    else:
                        ks = -1.0
                    if ks > best:
                        best, arg = ks, r
                best = max(best, 0.0)
                if best < 0.5:
                    flags["miss"][k] = True
                    target = 0.5
                elif arg == 0:
                    flags["good" if best > 0.85 else "jitter"][k] = True
                    target = None if best > 0.85 else 0.85
                elif arg == n:
                    flags["inversion"][k] = True
                    target = best
                else:
                    flags["swap"][k] = True
                    target = best
                if target is not None:  # §4: x shifted by the distance at ks, with σ² (quirk)
                    target = target + np.spacing(1) * (target == 0) - np.spacing(1) * (target == 1)
                    shift = np.sqrt(-np.log(target) * 2 * gt["area"] * sig[k] ** 2)
                    flags["opt"][k] = [gkp[k, 0] + shift, gkp[k, 1]]
            out[did] = flags
    return out


def test_classification_equals_naive_loop(case):
    data, cg, cd = case
    eng = Engine(data)
    for area in AREAS[:3]:
        errs = eng.errors(area)
        ev = _ref_eval(cg, cd, eng.xy0, eng.s0, area, [0.1])
        ref = _naive_classify(data, cg, ev)
        assert set(data.dt_ids[errs.analysed]) == set(ref)
        assert len(ref) > 20
        for did, flags in ref.items():
            for c in CLASSES:
                assert np.array_equal(errs.flags[c][did - 1], flags[c]), (did, c)


def _naive_soft_nms(data, xy, mo):
    var = (np.array(data.spec.sigmas) * 2) ** 2
    out = np.zeros(len(data.dt_ids))
    for row in data.didx:
        b = [{"d": d, "s": mo[d]} for d in row if d >= 0]
        while b:
            b.sort(key=lambda e: -e["s"])
            m = b.pop(0)
            out[m["d"]] = m["s"]
            mx, my = xy[m["d"], :, 0], xy[m["d"], :, 1]
            ma = (mx.max() - mx.min()) * (my.max() - my.min())
            for e in b:
                x, y = xy[e["d"], :, 0], xy[e["d"], :, 1]
                da = (x.max() - x.min()) * (y.max() - y.min())
                ee = ((x - mx) ** 2 + (y - my) ** 2) / var / ((0.5 * (ma + da)) + np.spacing(1)) / 2
                oks = np.sum(np.exp(-ee)) / ee.shape[0]
                e["s"] = e["s"] * np.exp(-(oks ** 2) / 0.5)
    return out


def _naive_max_oks(data, ev):
    """dtIousMax: best OKS of each detection with a non-ignored GT of its image."""
    out = np.zeros(len(data.dt_ids))
    for e in ev.evalImgs:
        if e is None or not e["dtIds"]:
            continue
        usable = [e["gtIds"][j] for j in range(len(e["gtIds"])) if not e["gtIgnore"][j]]
        ious = ev.ious[e["image_id"], 1]
        gts = [g["id"] for g in ev._gts[e["image_id"], 1]]
        for dind, did in enumerate(e["dtIds"]):
            out[did - 1] = max((ious[dind, gts.index(g)] for g in usable), default=0.0)
    return out


def test_soft_nms_and_max_oks_equal_naive(case):
    data, cg, cd = case
    eng = Engine(data)
    area = AREAS[0]
    mo = max_oks(data, eng.oks(eng.xy0), area)
    ev = _ref_eval(cg, cd, eng.xy0, eng.s0, area, [0.5], max_det=data.team_max_dets)
    assert np.array_equal(mo, _naive_max_oks(data, ev))
    opt = soft_nms(data, eng.xy0, mo)
    assert np.array_equal(opt, _naive_soft_nms(data, eng.xy0, mo))


def test_background_curves_equal_cocoeval_with_edited_ignores(case):
    data, cg, cd = case
    eng = Engine(data)
    area = AREAS[0]
    bg = eng.background(eng.xy0, eng.s0, area, OKS_THRS)
    ev = _ref_eval(cg, cd, eng.xy0, eng.s0, area, OKS_THRS)
    p_fp, p_fn, fp, fn = _naive_background(data, ev, len(OKS_THRS))
    for t in range(len(OKS_THRS)):
        assert set(data.dt_ids[bg["fp_set"][t]]) == fp[t]
        assert set(data.gt_ids[bg["fn_set"][t]]) == fn[t]
    assert np.array_equal(bg["fp"][0], p_fp)
    assert np.array_equal(bg["fn"][0], p_fn)
    assert np.all(p_fn[p_fn > -1] == 1.0)


def _naive_background(data, ev, n_t):
    """§5 on COCOeval's evalImgs: ignore the FPs, then also the FNs (growing with t)."""
    fp, fn = {}, {}
    for t in range(n_t):
        matched_dt = {d for e in ev.evalImgs if e for d, m in zip(e["dtIds"], e["dtMatches"][t]) if m}
        matched_gt = {g for e in ev.evalImgs if e for g, m in zip(e["gtIds"], e["gtMatches"][t]) if m}
        fp[t] = set(data.dt_ids) - matched_dt
        fn[t] = set(data.gt_ids) - matched_gt
    for t in range(n_t):
        for e in ev.evalImgs:
            if e:
                for j, d in enumerate(e["dtIds"]):
                    if d in fp[t]:
                        e["dtIgnore"][t][j] = True
        _quiet(ev.accumulate)
    p_fp = ev.eval["precision"][:, :, 0, 0, 0].copy()
    want = np.zeros_like(p_fp)
    for t in range(n_t):
        for e in ev.evalImgs:
            if e:
                for j, g in enumerate(e["gtIds"]):
                    if g in fn[t]:
                        e["gtIgnore"][j] = 1
        _quiet(ev.accumulate)
        want[t] = ev.eval["precision"][t, :, 0, 0, 0]
    return p_fp, want, fp, fn


def _naive_cumulative(data, cg, cd, areas, thrs):
    """COCOanalyze.analyze(True, True, True) + summarize, step by step on COCOeval."""
    xy0, s0 = data.dt_kpts[:, :, :2], data.dt_score
    out = {s: {} for s in ("baseline", "miss", "swap", "inversion", "jitter", "score",
                           "bckgd_false_pos", "false_neg")}
    fixed = {}
    for lab, area in areas.items():
        out["baseline"][lab] = _ref_eval(cg, cd, xy0, s0, area, thrs).eval["precision"][:, :, 0, 0, 0]
        ref = _naive_classify(data, cg, _ref_eval(cg, cd, xy0, s0, area, [0.1]))
        cur = xy0.copy()
        for err in ("miss", "swap", "inversion", "jitter"):
            for did, f in ref.items():
                cur[did - 1][f[err]] = f["opt"][f[err]]
            out[err][lab] = _ref_eval(cg, cd, cur, s0, area, thrs).eval["precision"][:, :, 0, 0, 0]
        fixed[lab] = cur.copy()
    nms_xy = fixed[list(areas)[-1]]  # the keypoints left by the last area's correction
    for lab, area in areas.items():
        ev = _ref_eval(cg, cd, fixed[lab], s0, area, [0.5], max_det=data.team_max_dets)
        opt = _naive_soft_nms(data, nms_xy, _naive_max_oks(data, ev))
        out["score"][lab] = _ref_eval(cg, cd, fixed[lab], opt, area, thrs).eval["precision"][:, :, 0, 0, 0]
        ev = _ref_eval(cg, cd, fixed[lab], opt, area, thrs)
        out["bckgd_false_pos"][lab], out["false_neg"][lab], _, _ = _naive_background(data, ev, len(thrs))
    return out


def test_cumulative_breakdown_equals_step_by_step_cocoeval(case):
    """The whole §6a pipeline, every step's PR curve, against the tool's procedure."""
    data, cg, cd = case
    areas = area_ranges("coco-analyze")
    res = cumulative(Engine(data), areas, OKS_THRS)
    ref = _naive_cumulative(data, cg, cd, areas, OKS_THRS)
    for step, per in ref.items():
        for lab, p in per.items():
            assert np.array_equal(res["precision"][step][lab], p), (step, lab)


def test_accumulate_without_ground_truth_is_minus_one():
    gt = {"images": [{"id": 1}], "annotations": [], "categories": [COCO_SPEC.coco_category()]}
    dt = [{"image_id": 1, "category_id": 1, "score": 0.5, "keypoints": [1.0, 2.0, 1.0] * 17}]
    data = load(gt, dt)
    eng = Engine(data)
    p, r = accumulate(eng.match(eng.xy0, eng.s0, (0, 1e10), OKS_THRS))
    assert np.all(p == -1) and np.all(r == -1)


def _naive_iou(b1, b2):
    iw = max(0, min(b1[0] + b1[2], b2[0] + b2[2]) - max(b1[0], b2[0]))
    ih = max(0, min(b1[1] + b1[3], b2[1] + b2[3]) - max(b1[1], b2[1]))
    union = b1[2] * b1[3] + b2[2] * b2[3] - iw * ih
    return 0 if float(union) == 0 else iw * ih / float(union)


def test_overlap_counts_equal_naive_bbox_iou(case):
    data, cg, _ = case
    ov = overlaps(data)
    for img in cg.getImgIds():
        anns = [a for a in cg.loadAnns(cg.getAnnIds(imgIds=img)) if 0 <= a["area"] < 1e10]
        for a in anns:
            n = sum(_naive_iou(a["bbox"], b["bbox"]) > 0.1 for b in anns if b is not a)
            assert ov[list(data.gt_ids).index(a["id"])] == n
    assert (ov > 0).any()
