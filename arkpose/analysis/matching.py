"""COCO keypoint matching and AP, vectorised over images and thresholds.

Same arithmetic as ``pycocotools.cocoeval.COCOeval`` (``computeOks``, ``evaluateImg``,
``accumulate``) and coco-analyze's patched copy of it (error_analysis.md §2): the OKS sums
follow numpy's pairwise summation so OKS values are bit-identical, the greedy matching
keeps COCO's tie rules (last best GT wins, ignored GTs sorted last and never steal a match,
crowds match many times), and ``extra_ignore`` is the patch's ``useGtIgnore``/``gtIgnoreIds``.
COCOeval itself runs one Python loop per (image, detection, GT, threshold); the analysis
needs about a hundred evaluations, so it runs them here and the tests check every
figure against pycocotools on random inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arkpose.analysis.data import AnalysisData
from arkpose.spec import KeypointSpec

EPS = np.spacing(1)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
# coco-analyze's Params.oksThrs (literal decimals, not COCOeval's linspace)
OKS_THRS = np.array([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


def pairwise_rowsum(a: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Row sums equal, bit for bit, to ``np.sum`` of each row's first ``counts`` entries.

    a: (N, K) with each row's values first and zeros after; counts: (N,). numpy sums a
    1-D float array pairwise (8 accumulators for 8 <= n <= 128), so the grouping depends
    on n; COCOeval sums only the labelled keypoints, hence the count per row.
    """
    n, k = a.shape
    if k > 128:
        raise ValueError("pairwise_rowsum supports at most 128 keypoints")
    out = np.zeros(n)
    for i in range(k):  # n < 8: plain left-to-right sum (trailing zeros change nothing)
        out = out + a[:, i]
    big = counts >= 8
    if big.any() and k >= 8:
        b = a[big]
        c = counts[big]
        full = c - c % 8
        r = b[:, :8].copy()
        for start in range(8, k - 7, 8):
            use = (start < full)[:, None]
            r = np.where(use, r + b[:, start:start + 8], r)
        res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
        for i in range(8, k):
            tail = (i >= full) & (i < c)
            res = np.where(tail, res + b[:, i], res)
        out[big] = res
    return out


def cocoeval_sigmas(spec: KeypointSpec) -> np.ndarray:
    """The sigmas as COCOeval builds them, ``np.array([.26, .25, ...]) / 10.0``.

    These differ from the literal ``.026, .025, ...`` (spec.sigmas, which coco-analyze's
    keypoint classification and soft-NMS use) in the last bit for some joints.
    """
    return np.array([float(f"{10 * s:.12g}") for s in spec.sigmas]) / 10.0


def pair_oks(data: AnalysisData, dt_xy: np.ndarray, pairs: np.ndarray | None = None,
             sigmas: np.ndarray | None = None) -> np.ndarray:
    """OKS of same-image (detection, annotation) pairs, as ``COCOeval.computeOks``.

    dt_xy: (D, K, 2) detection keypoints; pairs: indices into ``data.pair_d/pair_g``
    (default all); sigmas: default COCOeval's (:func:`cocoeval_sigmas`). Returns one OKS
    per pair. GTs without labelled keypoints use the
    distance to their bbox grown by its size on every side.
    """
    pd, pg = data.pair_d, data.pair_g
    if pairs is not None:
        pd, pg = pd[pairs], pg[pairs]
    if len(pd) == 0:
        return np.zeros(0)
    var = ((cocoeval_sigmas(data.spec) if sigmas is None else np.asarray(sigmas)) * 2) ** 2
    d = dt_xy[pd]
    g = data.gt_kpts[pg]
    vis = g[:, :, 2] > 0
    dx = d[:, :, 0] - g[:, :, 0]
    dy = d[:, :, 1] - g[:, :, 1]
    none = ~vis.any(1)
    if none.any():
        bb = data.gt_bbox[pg[none]]
        x0 = (bb[:, 0] - bb[:, 2])[:, None]
        x1 = (bb[:, 0] + bb[:, 2] * 2)[:, None]
        y0 = (bb[:, 1] - bb[:, 3])[:, None]
        y1 = (bb[:, 1] + bb[:, 3] * 2)[:, None]
        xd, yd = d[none, :, 0], d[none, :, 1]
        dx[none] = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
        dy[none] = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
        vis[none] = True
    area = data.gt_scale[pg][:, None]
    e = (dx ** 2 + dy ** 2) / var / (area + EPS) / 2
    cnt = vis.sum(1)
    # compact the labelled entries to the front, as e[vg > 0] does
    val = np.zeros_like(e)
    rows, cols = np.nonzero(vis)
    val[rows, np.cumsum(vis, axis=1)[rows, cols] - 1] = np.exp(-e[rows, cols])
    return pairwise_rowsum(val, cnt) / cnt


@dataclass
class Match:
    """One area range's greedy matching at T thresholds (COCOeval ``evalImgs``).

    dsel (I, Ds): flat dt index per image in score order (top ``max_det``), -1 padding.
    gsel (I, Gm): flat gt index per image, non-ignored first, -1 padding.
    gt_ig (I, Gm): the gt ignore flags used (padding True).
    dt_gt (T, I, Ds): flat gt index each dt matched, -1 if none.
    dt_ig (T, I, Ds): dt ignore flags. gt_hit (T, I, Gm): gt matched by some dt.
    scores (D,): the scores the ranking used.
    """

    dsel: np.ndarray
    gsel: np.ndarray
    gt_ig: np.ndarray
    dt_gt: np.ndarray
    dt_ig: np.ndarray
    gt_hit: np.ndarray
    scores: np.ndarray

    @property
    def dt_matched(self) -> np.ndarray:
        return self.dt_gt >= 0


def gt_ignore_flags(data: AnalysisData, area_rng, extra_ignore=None) -> np.ndarray:
    """(G,) COCOeval's ``_ignore`` for an area range (plus ``gtIgnoreIds``)."""
    lo, hi = area_rng
    ig = data.gt_ignore | (data.gt_scale < lo) | (data.gt_scale > hi)
    if extra_ignore is not None:
        ig = ig | extra_ignore
    return ig


def rank_detections(data: AnalysisData, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, detections by descending score (stable): dsel (I, Dm), rank (D,)."""
    didx = data.didx
    key = np.where(didx >= 0, -scores[np.maximum(didx, 0)] if len(scores) else 0.0, np.inf)
    dord = np.argsort(key, axis=1, kind="stable")
    dsel = np.take_along_axis(didx, dord, 1)
    rank = np.zeros(len(scores), dtype=np.int64)
    rows, cols = np.nonzero(dsel >= 0)
    rank[dsel[rows, cols]] = cols
    return dsel, rank


def evaluate(data: AnalysisData, oks: np.ndarray, scores: np.ndarray, area_rng, thrs,
             max_det: int = 20, extra_ignore=None, ranked=None) -> Match:
    """COCOeval.evaluate for one area range.

    oks: (P,) pair OKS from :func:`pair_oks`; ranked: :func:`rank_detections` of
    ``scores`` when already known.
    """
    thrs = np.atleast_1d(np.asarray(thrs, dtype=np.float64))
    n_t, n_i = len(thrs), data.num_images
    dsel, rank = ranked if ranked is not None else rank_detections(data, scores)
    dsel = dsel[:, :max_det]
    gidx = data.gidx
    ig = gt_ignore_flags(data, area_rng, extra_ignore)
    gvalid = gidx >= 0
    gkey = np.where(gvalid, ig[np.maximum(gidx, 0)].astype(np.int64) if len(ig) else 0, 2)
    gord = np.argsort(gkey, axis=1, kind="stable")
    gsel = np.take_along_axis(gidx, gord, 1)
    gvalid = gsel >= 0
    g_ig = np.where(gvalid, ig[np.maximum(gsel, 0)] if len(ig) else True, True)
    g_crowd = np.where(gvalid, data.gt_crowd[np.maximum(gsel, 0)] > 0 if len(ig) else False, False)
    n_ds, n_g = dsel.shape[1], gsel.shape[1]
    dt_gt = -np.ones((n_t, n_i, n_ds), dtype=np.int64)
    dt_ig = np.zeros((n_t, n_i, n_ds), dtype=bool)
    gt_hit = np.zeros((n_t, n_i, n_g), dtype=bool)
    if n_ds and n_g and len(oks):
        gpos = np.zeros(len(ig), dtype=np.int64)
        r_, c_ = np.nonzero(gvalid)
        gpos[gsel[r_, c_]] = c_
        drank = rank[data.pair_d]
        keep = drank < max_det
        o_all = np.full((n_i, n_ds, n_g), np.nan)
        o_all[data.dt_img[data.pair_d[keep]], drank[keep], gpos[data.pair_g[keep]]] = oks[keep]
        thr = np.minimum(thrs, 1 - 1e-10)[:, None, None]
        for r in range(n_ds):
            rows = np.nonzero((dsel[:, r] >= 0) & gvalid[:, 0])[0]
            if len(rows) == 0:
                continue
            o = o_all[rows, r, :][None]                       # (1, n, Gm)
            avail = gvalid[rows][None] & (~gt_hit[:, rows] | g_crowd[rows][None])
            ok = avail & (o >= thr)                            # NaN never passes
            pick = -np.ones((n_t, len(rows)), dtype=np.int64)
            for seg in (~g_ig[rows][None], g_ig[rows][None]):  # non-ignored first
                cand = ok & seg
                if not cand.any():
                    continue
                v = np.where(cand, o, -np.inf)
                best = v.max(-1, keepdims=True)
                last = n_g - 1 - np.argmax((cand & (v == best))[..., ::-1], axis=-1)
                pick = np.where((pick < 0) & cand.any(-1), last, pick)
            t_i, r_i = np.nonzero(pick >= 0)
            col = pick[t_i, r_i]
            img = rows[r_i]
            dt_gt[t_i, img, r] = gsel[img, col]
            dt_ig[t_i, img, r] = g_ig[img, col]
            gt_hit[t_i, img, col] = True
    # unmatched detections outside the area range are ignored
    lo, hi = area_rng
    area = np.where(dsel >= 0, data.dt_area[np.maximum(dsel, 0)] if len(scores) else 0, 0)
    out = (area < lo) | (area > hi)
    dt_ig = dt_ig | ((dt_gt < 0) & out[None])
    return Match(dsel, gsel, g_ig, dt_gt, dt_ig, gt_hit, scores)


def accumulate(m: Match, dt_ig=None, gt_ig=None):
    """COCOeval.accumulate for one area and maxDets: precision (T, R), recall (T,).

    dt_ig: (T, I, Ds) ignore flags to use instead of ``m.dt_ig``; gt_ig: (T, I, Gm) per
    threshold GT ignore (coco-analyze's background-error removal edits these in place).
    -1 where no GT counts, as COCOeval.
    """
    dt_ig = m.dt_ig if dt_ig is None else dt_ig
    n_t = dt_ig.shape[0]
    valid = m.dsel >= 0
    scores = m.scores[m.dsel[valid]] if valid.any() else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    dtm = m.dt_matched[:, valid][:, order]
    dig = dt_ig[:, valid][:, order]
    gvalid = (m.gsel >= 0)[None]
    gig = np.broadcast_to(m.gt_ig[None], (n_t,) + m.gt_ig.shape) if gt_ig is None else gt_ig
    npig = np.count_nonzero(gvalid & ~gig, axis=(1, 2))
    precision = -np.ones((n_t, len(REC_THRS)))
    recall = -np.ones(n_t)
    tps = np.cumsum(dtm & ~dig, axis=1).astype(np.float64)
    fps = np.cumsum(~dtm & ~dig, axis=1).astype(np.float64)
    nd = tps.shape[1]
    for t in range(n_t):
        if npig[t] == 0:
            continue
        tp, fp = tps[t], fps[t]
        rc = tp / npig[t]
        pr = tp / (fp + tp + EPS)
        recall[t] = rc[-1] if nd else 0
        if nd:
            pr = np.maximum.accumulate(pr[::-1])[::-1]
        inds = np.searchsorted(rc, REC_THRS, side="left")
        q = np.zeros(len(REC_THRS))
        inside = inds < nd
        q[inside] = pr[inds[inside]]
        precision[t] = q
    return precision, recall


def auc(precision: np.ndarray) -> np.ndarray:
    """coco-analyze's ``auc``: mean of the valid precisions per row, -1 when none."""
    out = -np.ones(precision.shape[0])
    for t, p in enumerate(precision):
        ok = p[p > -1]
        if len(ok):
            out[t] = np.mean(ok)
    return out


def max_oks(data: AnalysisData, oks: np.ndarray, area_rng, extra_ignore=None) -> np.ndarray:
    """(D,) each detection's best OKS with a non-ignored GT of its image (0 if none).

    The patched ``evaluateImg(check_scores=True)``'s ``dtIousMax`` (no one-to-one match).
    """
    out = np.full(len(data.dt_ids), -np.inf)
    if len(oks):
        ig = gt_ignore_flags(data, area_rng, extra_ignore)
        np.maximum.at(out, data.pair_d, np.where(ig[data.pair_g], -np.inf, oks))
    return np.where(np.isfinite(out), out, 0.0)
