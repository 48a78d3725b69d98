"""AP breakdowns: cumulative PR curves, isolated AP improvements, optimal scores, FP/FN.

The steps of coco-analyze's ``analyze`` + ``summarize`` (error_analysis.md §4-§6) over
the vectorised matcher of :mod:`arkpose.analysis.matching`.
"""

from __future__ import annotations

import numpy as np

from arkpose.analysis.data import AnalysisData
from arkpose.analysis.errors import ERROR_TYPES, LOC_OKS, KeypointErrors, classify
from arkpose.analysis.matching import (
    Match,
    accumulate,
    auc,
    evaluate,
    max_oks,
    pair_oks,
    rank_detections,
)

STEPS = ("baseline",) + ERROR_TYPES + ("score", "bckgd_false_pos", "false_neg")
ISOLATED = ERROR_TYPES + ("score", "bckgd_false_pos", "false_neg")
MAX_DETS = 20
SOFT_NMS_SIGMA2 = 0.5  # Gaussian soft-NMS hyper-parameter (Bodla et al.)


class Engine:
    """One dataset + settings; caches what several read-outs share.

    extra_ignore: (G,) GTs to ignore everywhere (coco-analyze's ``gtIgnoreIds``).
    """

    def __init__(self, data: AnalysisData, compat: str = "coco-analyze", extra_ignore=None,
                 share: Engine | None = None):
        self.data = data
        self.compat = compat
        self.extra = extra_ignore
        self.xy0 = data.dt_kpts[:, :, :2]
        self.s0 = data.dt_score
        # the original detections' pair OKS and ranking do not depend on the GT ignores
        self._oks0 = share._oks0 if share is not None else pair_oks(data, self.xy0)
        self._rank0 = share._rank0 if share is not None else rank_detections(data, self.s0)
        self._errors: dict = {}
        self._base: dict = {}
        self._opt0: dict = {}

    def oks(self, xy: np.ndarray) -> np.ndarray:
        """(P,) pair OKS for detection keypoints xy (D, K, 2); recomputes changed dts only."""
        if xy is self.xy0:
            return self._oks0
        changed = np.any(xy != self.xy0, axis=(1, 2))
        if not changed.any():
            return self._oks0
        pairs = np.nonzero(changed[self.data.pair_d])[0]
        out = self._oks0.copy()
        out[pairs] = pair_oks(self.data, xy, pairs)
        return out

    def match(self, xy, scores, rng, thrs, max_det=MAX_DETS) -> Match:
        ranked = self._rank0 if scores is self.s0 else None
        return evaluate(self.data, self.oks(xy), scores, rng, thrs, max_det, self.extra, ranked)

    def curve(self, xy, scores, rng, thrs):
        return accumulate(self.match(xy, scores, rng, thrs))

    def baseline(self, rng, thrs):
        key = (tuple(rng), tuple(thrs))
        if key not in self._base:
            self._base[key] = self.curve(self.xy0, self.s0, rng, thrs)
        return self._base[key]

    def errors(self, rng) -> KeypointErrors:
        """Keypoint classes of the detections matched at OKS 0.1 in area range ``rng``."""
        key = tuple(rng)
        if key not in self._errors:
            m = self.match(self.xy0, self.s0, rng, [LOC_OKS])
            self._errors[key] = classify(self.data, m, self.compat)
        return self._errors[key]

    def loc_match(self, rng) -> Match:
        return self.match(self.xy0, self.s0, rng, [LOC_OKS])

    def opt_scores(self, rngs, xys, nms_xy=None) -> list:
        """Optimal scores per area range: max OKS with a GT, then soft-NMS (§4).

        xys: keypoints per range used for the max OKS; nms_xy: keypoints for the
        detection-detection OKS of soft-NMS (coco-analyze: the last range's; None = own).
        """
        out = []
        for rng, xy in zip(rngs, xys):
            mo = max_oks(self.data, self.oks(xy), rng, self.extra)
            out.append(soft_nms(self.data, xy if nms_xy is None else nms_xy, mo))
        return out

    def original_opt_scores(self, rngs) -> list:
        key = tuple(map(tuple, rngs))
        if key not in self._opt0:
            self._opt0[key] = self.opt_scores(rngs, [self.xy0] * len(rngs))
        return self._opt0[key]

    def background(self, xy, scores, rng, thrs) -> dict:
        """Curves without background FPs, then also without FNs (§5), and the sets."""
        m = self.match(xy, scores, rng, thrs)
        fp_ig = m.dt_ig | ~m.dt_matched
        p_fp, r_fp = accumulate(m, dt_ig=fp_ig)
        fn = (m.gsel >= 0)[None] & ~m.gt_hit
        # coco-analyze edits the shared gtIgnore threshold by threshold (ascending), so the
        # FNs of every lower threshold stay ignored.
        fn_cum = np.logical_or.accumulate(fn, axis=0)
        p_fn, r_fn = accumulate(m, dt_ig=fp_ig, gt_ig=m.gt_ig[None] | fn_cum)
        if self.compat != "fixed":
            # quirk: _summarize_bckgd_errors stores the FN curves in ascending OKS order but
            # summarize() reads every step in descending order, so the tool reports at OKS t
            # the curve of the mirrored threshold (thrs ascending, as everywhere here).
            p_fn, r_fn = p_fn[::-1], r_fn[::-1]
        n_t = len(thrs)
        d = self.data
        fp_set = np.ones((n_t, len(d.dt_ids)), dtype=bool)
        valid = m.dsel >= 0
        for t in range(n_t):
            fp_set[t, m.dsel[valid & m.dt_matched[t]]] = False
        fn_set = np.ones((n_t, len(d.gt_ids)), dtype=bool)
        gvalid = m.gsel >= 0
        for t in range(n_t):
            fn_set[t, m.gsel[gvalid & m.gt_hit[t]]] = False
        return {"fp": (p_fp, r_fp), "fn": (p_fn, r_fn), "fp_set": fp_set, "fn_set": fn_set}


def soft_nms(data: AnalysisData, xy: np.ndarray, max_oks_: np.ndarray) -> np.ndarray:
    """coco-analyze's ``_soft_nms``: (D,) optimal scores starting from ``max_oks_``.

    Per image, repeatedly take the highest remaining detection M (stable re-sort, as
    Python's list.sort) and multiply every remaining score by exp(-OKS(dt, M)^2 / 0.5),
    the dt-dt OKS over all K keypoints with the mean of both keypoint-bbox areas.
    """
    n_d = len(data.dt_ids)
    if n_d == 0:
        return np.zeros(0)
    didx = data.didx
    n_i, n_m = didx.shape
    valid = didx >= 0
    sig = np.asarray(data.spec.sigmas, dtype=np.float64)
    var = (sig * 2) ** 2
    x, y = xy[:, :, 0], xy[:, :, 1]
    area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
    sim = np.zeros((n_i, n_m, n_m))
    img, a, b = np.nonzero(valid[:, :, None] & valid[:, None, :] & (np.arange(n_m)[:, None] != np.arange(n_m))[None])
    if len(img):
        d1, d2 = didx[img, a], didx[img, b]
        e = ((x[d1] - x[d2]) ** 2 + (y[d1] - y[d2]) ** 2) / var / ((0.5 * (area[d1] + area[d2]))[:, None] + np.spacing(1)) / 2
        sim[img, a, b] = np.sum(np.exp(-e), axis=1) / e.shape[1]
    # The tool squares a numpy scalar (oks ** 2, i.e. libm pow); numpy's array ** 2 is x * x,
    # which differs in the last bit for ~0.1% of values, so square as Python floats (pow).
    sim_sq = np.zeros_like(sim)
    if len(img):
        sim_sq[img, a, b] = [v ** 2 for v in sim[img, a, b].tolist()]
    score = np.where(valid, max_oks_[np.maximum(didx, 0)], 0.0)
    remaining = valid.copy()
    pos = np.broadcast_to(np.arange(n_m), (n_i, n_m)).copy()
    rows = np.arange(n_i)
    for _ in range(n_m):
        if not remaining.any():
            break
        key = np.where(remaining, -score, np.inf)
        order = np.lexsort((pos, key), axis=-1)
        pick = order[:, 0]
        active = remaining[rows, pick]
        pos[rows[:, None], order] = np.arange(n_m)[None]
        remaining[rows, pick] = False
        factor = np.exp(-(sim_sq[rows, pick] / SOFT_NMS_SIGMA2))
        score = np.where(remaining & active[:, None], score * factor, score)
    out = np.zeros(n_d)
    out[didx[valid]] = score[valid]
    return out


def cumulative(eng: Engine, areas: dict, thrs, err_types=ERROR_TYPES) -> dict:
    """``analyze(True, True, True)`` + ``summarize``: every step's curve per area range.

    Returns {"precision": {step: {area: (T, R)}}, "recall": {...}, "ap": {step: {area: (T,)}},
    "fp_set"/"fn_set": {area: (T, D)/(T, G)} after all corrections, "opt_score": {area: (D,)}}.
    """
    labels, rngs = list(areas), list(areas.values())
    prec: dict = {s: {} for s in ("baseline",) + tuple(err_types) + ("score", "bckgd_false_pos", "false_neg")}
    rec: dict = {s: {} for s in prec}
    for lab, rng in zip(labels, rngs):
        prec["baseline"][lab], rec["baseline"][lab] = eng.baseline(rng, thrs)
    fixed_xy = {}
    for lab, rng in zip(labels, rngs):
        errs = eng.errors(rng)
        cur = eng.xy0
        for err in err_types:
            cur = np.where(errs.flags[err][..., None], errs.opt_xy, cur)
            prec[err][lab], rec[err][lab] = eng.curve(cur, eng.s0, rng, thrs)
        fixed_xy[lab] = errs.corrected(eng.xy0, err_types)
    xys = [fixed_xy[lab] for lab in labels]
    # quirk: soft-NMS sees the keypoints left by the last area's correction
    nms_xy = xys[-1] if eng.compat != "fixed" else None
    opt = dict(zip(labels, eng.opt_scores(rngs, xys, nms_xy)))
    out_fp, out_fn = {}, {}
    for lab, rng in zip(labels, rngs):
        prec["score"][lab], rec["score"][lab] = eng.curve(fixed_xy[lab], opt[lab], rng, thrs)
        bg = eng.background(fixed_xy[lab], opt[lab], rng, thrs)
        prec["bckgd_false_pos"][lab], rec["bckgd_false_pos"][lab] = bg["fp"]
        prec["false_neg"][lab], rec["false_neg"][lab] = bg["fn"]
        out_fp[lab], out_fn[lab] = bg["fp_set"], bg["fn_set"]
    ap = {s: {lab: auc(p) for lab, p in per.items()} for s, per in prec.items()}
    return {"precision": prec, "recall": rec, "ap": ap, "fp_set": out_fp, "fn_set": out_fn,
            "opt_score": opt}


def isolated(eng: Engine, areas: dict, thrs) -> dict:
    """errorsAPImpact: each error fixed alone; AP and improvement per area and threshold.

    Returns {"ap"/"recall": {step: {area: (T,)}}, "improvement": {err: {area: (T,)}},
    "fp_set"/"fn_set": {area: ...} of the original detections}.
    """
    labels, rngs = list(areas), list(areas.values())
    ap: dict = {s: {} for s in ("baseline",) + ISOLATED}
    rec: dict = {s: {} for s in ap}
    fp_sets, fn_sets = {}, {}
    opt = dict(zip(labels, eng.original_opt_scores(rngs)))

    def put(step, lab, curve):
        ap[step][lab], rec[step][lab] = auc(curve[0]), curve[1]

    for lab, rng in zip(labels, rngs):
        put("baseline", lab, eng.baseline(rng, thrs))
        errs = eng.errors(rng)
        for err in ERROR_TYPES:
            put(err, lab, eng.curve(errs.corrected(eng.xy0, [err]), eng.s0, rng, thrs))
        put("score", lab, eng.curve(eng.xy0, opt[lab], rng, thrs))
        bg = eng.background(eng.xy0, eng.s0, rng, thrs)
        put("bckgd_false_pos", lab, bg["fp"])
        put("false_neg", lab, bg["fn"])
        fp_sets[lab], fn_sets[lab] = bg["fp_set"], bg["fn_set"]
    imp: dict = {}
    for err in ISOLATED:
        imp[err] = {}
        for lab in labels:
            ref = ap["bckgd_false_pos"][lab] if err == "false_neg" else ap["baseline"][lab]
            val = ap[err][lab] - ref
            # AP -1: no GT counts. Empty area -> NaN. A 'w/o FN' step that lost every GT at
            # some OKS is -1 too: the tool subtracts it as a number (-1 - AP(w/o FP)); 'fixed'
            # leaves that difference undefined.
            undefined = (ref < 0) if eng.compat != "fixed" else (ap[err][lab] < 0) | (ref < 0)
            imp[err][lab] = np.where(undefined, np.nan, val)
    return {"ap": ap, "recall": rec, "improvement": imp, "fp_set": fp_sets, "fn_set": fn_sets,
            "opt_score": opt}


def scoring_errors(data: AnalysisData, opt_score: np.ndarray, rng, min_oks: float = 0.5) -> dict:
    """scoringErrors.py's counts: images whose ranking changes, and "scoring errors".

    Per image, non-ignored GTs sorted by their best OKS take, greedily, the max-OKS unused
    detection with OKS >= .5; when >= 2 were available and the max-score one is not the
    max-OKS one, that is a scoring error. Quirk kept: the first GT with no available
    detection ends the image. Counted for the original and the optimal scores.
    """
    lo, hi = rng
    ig = data.gt_ignore | (data.gt_scale < lo) | (data.gt_scale > hi)
    counts = {"score": 0, "opt_score": 0}
    reranked = with_dts = 0
    # utilities.compute_oks uses COCOeval's sigmas (np.array([.26, ...]) / 10), as computeOks
    oks_all = pair_oks(data, data.dt_kpts[:, :, :2])
    gcount = (data.gidx >= 0).sum(1)
    per_dt = gcount[data.dt_img] if len(data.dt_img) else np.zeros(0, dtype=np.int64)
    pair_start = np.concatenate([[0], np.cumsum(per_dt)[:-1]]).astype(np.int64)
    gslot = np.zeros(len(data.gt_ids), dtype=np.int64)
    r_, c_ = np.nonzero(data.gidx >= 0)
    gslot[data.gidx[r_, c_]] = c_
    for row in range(data.num_images):
        d = data.didx[row][data.didx[row] >= 0]
        d = d[np.argsort(data.dt_ids[d], kind="stable")]
        if len(d) == 0:
            continue
        with_dts += 1
        order = {"score": np.argsort(-data.dt_score[d], kind="mergesort"),
                 "opt_score": np.argsort(-opt_score[d], kind="mergesort")}
        reranked += int(not np.array_equal(order["score"], order["opt_score"]))
        g = data.gidx[row][data.gidx[row] >= 0]
        g = g[~ig[g]]
        if len(g) == 0:
            continue
        mat = oks_all[pair_start[d][:, None] + gslot[g][None, :]]
        mat = mat[:, np.argsort(-mat.max(0), kind="mergesort")]
        for kind, values in (("score", data.dt_score), ("opt_score", opt_score)):
            ind = order[kind]
            used: set = set()
            for j in range(mat.shape[1]):
                oks = mat[ind, j]
                avail = [i for i in np.nonzero(oks >= min_oks)[0] if d[ind[i]] not in used]
                if not avail:
                    break
                best_oks = avail[int(np.argmax([oks[i] for i in avail]))]
                used.add(d[ind[best_oks]])
                if len(avail) > 1:
                    best_score = avail[int(np.argmax([values[d[ind[i]]] for i in avail]))]
                    counts[kind] += int(best_score != best_oks)
    return {"images_reranked": reranked, "images_with_detections": with_dts,
            "scoring_errors_original": counts["score"], "scoring_errors_optimal": counts["opt_score"]}
