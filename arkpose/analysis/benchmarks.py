"""Sensitivity benchmarks: occlusion x crowding cells and instance size (error_analysis.md §8)."""

from __future__ import annotations

import itertools

import numpy as np

from arkpose.analysis.breakdown import ISOLATED, STEPS, Engine, cumulative, isolated
from arkpose.analysis.data import AnalysisData
from arkpose.analysis.errors import CLASSES

OVERLAP_IOU = 0.1
OVERLAP_GROUPS = ((0,), (1, 2), (3, 4, 5, 6, 7, 8))
OVERLAP_LABELS = ("0", "1-2", "3-8")
SIZE_EDGES = (32 ** 2, 64 ** 2, 96 ** 2, 128 ** 2, 1e5 ** 2)
SIZE_LABELS = ("medium", "large", "xlarge", "xxlarge")


def keypoint_groups(k: int) -> list[tuple[int, ...]]:
    """Columns of the occlusion benchmark: COCO's {1-5, 6-10, 11-15, 16-17} for K=17,
    in general four bins of width ceil(K/4)-ish ending at K."""
    if k == 17:
        return [tuple(range(1, 6)), tuple(range(6, 11)), tuple(range(11, 16)), (16, 17)]
    edges = np.unique(np.round(np.linspace(0, k, 5)).astype(int))
    return [tuple(range(a + 1, b + 1)) for a, b in itertools.pairwise(edges)]


def overlaps(data: AnalysisData) -> np.ndarray:
    """(G,) number of other annotations of the same image with bbox IoU > 0.1.

    As ``utilities.compute_ious`` on the GT ``bbox`` fields, crowds and keypoint-less
    annotations included (annotations with area outside [0, 1e10) are left out).
    """
    n = len(data.gt_ids)
    out = -np.ones(n, dtype=np.int64)
    if n == 0:
        return out
    inside = (data.gt_scale >= 0) & (data.gt_scale < 1e5 ** 2)
    gidx = data.gidx
    ok = gidx >= 0
    ok &= np.where(ok, inside[np.maximum(gidx, 0)], False)
    b = data.gt_bbox[np.maximum(gidx, 0)]                     # (I, Gm, 4)
    x1, y1, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    iw = np.maximum(0, np.minimum((x1 + w)[:, :, None], (x1 + w)[:, None]) - np.maximum(x1[:, :, None], x1[:, None]))
    ih = np.maximum(0, np.minimum((y1 + h)[:, :, None], (y1 + h)[:, None]) - np.maximum(y1[:, :, None], y1[:, None]))
    inter = iw * ih
    union = (w * h)[:, :, None] + (w * h)[:, None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union == 0, 0.0, inter / np.where(union == 0, 1, union))
    m = gidx.shape[1]
    pair = ok[:, :, None] & ok[:, None, :] & ~np.eye(m, dtype=bool)[None]
    count = ((iou > OVERLAP_IOU) & pair).sum(-1)
    out[gidx[ok]] = count[ok]
    return out


def occlusion_crowding(data: AnalysisData, compat: str, area_all, oks: float = 0.75,
                       share: Engine | None = None) -> dict:
    """The 3 x 4 benchmark at one OKS threshold, area 'all'.

    For each cell every GT outside the cell is ignored and the full cumulative breakdown
    runs. Returns counts, keypoint class counts and % per cell, and the breakdown APs.
    Empty cells give NaN (coco-analyze prints AP -1 and NaN %).
    """
    k = data.spec.num_keypoints
    cols = keypoint_groups(k)
    n_r, n_c = len(OVERLAP_GROUPS), len(cols)
    ov = overlaps(data)
    instances = np.zeros((n_r, n_c), dtype=np.int64)
    counts = {c: np.zeros((n_r, n_c), dtype=np.int64) for c in CLASSES}
    ap: dict = {s: np.full((n_r, n_c), np.nan) for s in STEPS}
    recall: dict = {s: np.full((n_r, n_c), np.nan) for s in STEPS}
    for i, og in enumerate(OVERLAP_GROUPS):
        for j, kg in enumerate(cols):
            cell = np.isin(ov, og) & np.isin(data.gt_numkpts, kg)
            instances[i, j] = cell.sum()
            if not cell.any():
                # no GT to evaluate: every AP is undefined and no detection matches the cell
                continue
            eng = Engine(data, compat, extra_ignore=~cell, share=share)
            res = cumulative(eng, {"all": area_all}, [oks])
            for s in STEPS:
                v = float(res["ap"][s]["all"][0])
                ap[s][i, j] = v if v >= 0 else np.nan
                v = float(res["recall"][s]["all"][0])
                recall[s][i, j] = v if v >= 0 else np.nan
            # keypoint classes of the detections matched (OKS .1) to the cell's GTs
            errs = eng.errors(area_all)
            m = eng.loc_match(area_all)
            hit = m.dt_gt[0] >= 0
            d_of = {}
            for d, g in zip(m.dsel[hit], m.dt_gt[0][hit]):
                if cell[g] and g not in d_of:
                    d_of[g] = d
            sel = np.fromiter(d_of.values(), dtype=np.int64, count=len(d_of))
            sel = sel[errs.analysed[sel]] if len(sel) else sel
            for c in CLASSES:
                counts[c][i, j] = errs.flags[c][sel].sum()
    total = sum(counts.values())
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = {c: 100.0 * counts[c] / total for c in CLASSES}
    return {
        "rows": list(OVERLAP_LABELS), "cols": [f"{g[0]}-{g[-1]}" for g in cols],
        "overlap_groups": [list(g) for g in OVERLAP_GROUPS], "keypoint_groups": [list(g) for g in cols],
        "instances": instances, "keypoints": total, "counts": counts, "percent": pct, "ap": ap,
        "recall": recall,
        "oks": oks,
    }


def size_sensitivity(data: AnalysisData, compat: str, area_all, oks: float = 0.75,
                     share: Engine | None = None) -> dict:
    """AP and isolated AP improvements at one OKS threshold per size bucket.

    Buckets on GT area (32², 64²], (64², 96²], (96², 128²], (128², 1e10] (evaluated with
    COCOeval's closed ranges), plus 'all'. Sensitivity = max - min over the buckets,
    impact = max - all. Empty buckets give NaN.
    """
    e = SIZE_EDGES
    areas = {lab: (e[i], e[i + 1]) for i, lab in enumerate(SIZE_LABELS)}
    areas["all"] = tuple(area_all)
    scale = data.gt_scale
    counts = {lab: int(((scale > e[i]) & (scale <= e[i + 1])).sum()) for i, lab in enumerate(SIZE_LABELS)}
    res = isolated(Engine(data, compat, share=share), areas, [oks])
    base = {lab: float(res["ap"]["baseline"][lab][0]) for lab in areas}
    base = {lab: (v if v >= 0 else np.nan) for lab, v in base.items()}
    imp = {err: {lab: float(res["improvement"][err][lab][0]) for lab in areas} for err in ISOLATED}

    def first(v):
        v = float(v[0])
        return v if v >= 0 else np.nan

    # AP / max recall after fixing each error alone (sizeSensitivity's std_out)
    fixed_ap = {s: {lab: first(res["ap"][s][lab]) for lab in areas} for s in res["ap"]}
    fixed_rec = {s: {lab: first(res["recall"][s][lab]) for lab in areas} for s in res["recall"]}

    def spread(vals: dict):
        b = np.array([vals[lab] for lab in SIZE_LABELS], dtype=float)
        if np.all(np.isnan(b)):
            return np.nan, np.nan
        return float(np.nanmax(b) - np.nanmin(b)), float(np.nanmax(b) - vals["all"])

    sens = {"ap": spread(base)}
    for err in ISOLATED:
        sens[err] = spread(imp[err])
    return {"buckets": list(SIZE_LABELS), "ranges": {k: list(v) for k, v in areas.items()},
            "counts": counts, "ap": base, "improvement": imp, "ap_fixed": fixed_ap,
            "recall_fixed": fixed_rec,
            "sensitivity": {k: v[0] for k, v in sens.items()},
            "impact": {k: v[1] for k, v in sens.items()}, "oks": oks}
