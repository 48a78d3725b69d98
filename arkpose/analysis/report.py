"""``analyze()``: every coco-analyze number for one detections file, as an AnalysisResult."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arkpose.analysis.benchmarks import occlusion_crowding, size_sensitivity
from arkpose.analysis.breakdown import ISOLATED, Engine, cumulative, isolated, scoring_errors
from arkpose.analysis.data import TOP_DETS, AnalysisData, load
from arkpose.analysis.errors import CLASSES, ERROR_TYPES
from arkpose.analysis.matching import OKS_THRS
from arkpose.spec import COCO, KeypointSpec

COMPAT_MODES = ("coco-analyze", "fixed")
BIG = 1e5 ** 2


def area_ranges(compat: str) -> dict:
    """coco-analyze's 'all' starts at 32² (§2 caveat); 'fixed' uses COCO's official [0, ∞)."""
    lo = 32 ** 2 if compat == "coco-analyze" else 0
    return {"all": (lo, BIG), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, BIG)}


def keypoint_groups(spec: KeypointSpec) -> list[tuple[str, list[int]]]:
    """A joint and its mirror form one group ('Eyes' = left_eye + right_eye), spec order."""
    groups, seen = [], set()
    for k, name in enumerate(spec.keypoints):
        if k in seen:
            continue
        members = sorted({k, spec.flip_index[k]})
        seen.update(members)
        base = name.replace("left_", "").replace("right_", "").replace("_", " ")
        label = base.title() + ("s" if len(members) > 1 else "")
        groups.append((label, members))
    return groups


@dataclass
class AnalysisResult:
    """Every number of the analysis; numpy arrays inside, :meth:`to_json` for files.

    cumulative: {"ap"|"recall": {step: {area: (T,)}}, "precision": {step: {area: (T, R)}}}
    with steps baseline, miss, swap, inversion, jitter, score, bckgd_false_pos, false_neg.
    isolated: {"ap": {step: {area: (T,)}}, "improvement": {err: {area: (T,)}},
    "mean"/"std": {err: {area: float}}} in AP units (x100 for AP points).
    keypoint_errors, scoring, background, occlusion, size: see docs/analysis.md.
    """

    name: str
    compat: str
    spec: str
    keypoints: list
    oks_thresholds: list
    areas: dict
    counts: dict
    cumulative: dict
    isolated: dict
    keypoint_errors: dict
    scoring: dict
    background: dict
    occlusion: dict | None
    size: dict | None
    notes: list = field(default_factory=list)

    def ap(self, step: str = "baseline", area: str = "all", oks: float | None = None) -> float:
        """AP of a cumulative step: mean over the thresholds, or at one ``oks``."""
        vals = np.asarray(self.cumulative["ap"][step][area], dtype=float)
        if oks is not None:
            return float(vals[_oks_index(self.oks_thresholds, oks)])
        return float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else math.nan

    def to_dict(self) -> dict:
        return _plain({k: getattr(self, k) for k in self.__dataclass_fields__})

    def to_json(self, path: str | Path | None = None, indent: int | None = 1) -> str:
        """JSON text of every number (NaN written as null); also written to ``path``."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> AnalysisResult:
        """Read back what :meth:`to_json` wrote (lists stay lists; null is None -> NaN in
        :meth:`ap` and the plots), so reports can be redrawn without recomputing."""
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            text = Path(path_or_text).read_text()
        fields = json.loads(text)
        # to_json wrote NaN as null: restore it inside the numeric sections (a whole
        # section that is null, e.g. no occlusion benchmark, stays None).
        for key in ("cumulative", "isolated", "keypoint_errors", "scoring", "background",
                    "occlusion", "size"):
            if fields.get(key) is not None:
                fields[key] = _null_to_nan(fields[key])
        return cls(**fields)

    def summary_table(self) -> str:
        """A short text table: AP per step (cumulative) and isolated improvements."""
        head = (f"{self.name}  ({self.spec}, compat={self.compat}, {self.counts['images']} images, "
                f"{self.counts['detections']} dets, {self.counts['annotations']} GT)")
        cols = "".join(f"{'AP' + str(round(t * 100)):>8}" for t in (0.5, 0.75, 0.95))
        lines = [head, f"{'step':<17}{cols}{'AP':>8}"]
        for step, per in self.cumulative["ap"].items():
            v = np.asarray(per["all"], dtype=float)
            cells = [v[_oks_index(self.oks_thresholds, t)] for t in (0.5, 0.75, 0.95)]
            cells.append(np.nanmean(v) if np.isfinite(v).any() else np.nan)
            lines.append(f"{step:<17}" + "".join(f"{c:>8.3f}" for c in cells))
        lines.append("isolated AP improvement (area all, mean ± std over OKS .50:.95):")
        for err in ISOLATED:
            m, s = self.isolated["mean"][err]["all"], self.isolated["std"][err]["all"]
            lines.append(f"  {err:<16}{m:>8.3f} ± {s:.3f}")
        ke = self.keypoint_errors
        if ke["num_keypoints"]:
            lines.append("keypoints of matched GTs (%): " + ", ".join(
                f"{c} {ke['percent'][c]:.1f}" for c in CLASSES))
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _oks_index(thrs, oks: float) -> int:
    idx = int(np.argmin(np.abs(np.asarray(thrs) - oks)))
    if abs(thrs[idx] - oks) > 1e-9:
        raise KeyError(f"OKS {oks} is not one of the thresholds {list(thrs)}")
    return idx


def _plain(obj):
    """numpy -> lists/floats, NaN/inf -> None, tuple keys -> strings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _null_to_nan(obj):
    """Inverse of :func:`_plain`'s NaN -> None, through dicts and lists."""
    if isinstance(obj, dict):
        return {k: _null_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_null_to_nan(v) for v in obj]
    return math.nan if obj is None else obj


def _nan_ap(ap: np.ndarray) -> np.ndarray:
    ap = np.asarray(ap, dtype=float)
    return np.where(ap < 0, np.nan, ap)


def _keypoint_errors(data: AnalysisData, eng: Engine, rng, notes: list) -> dict:
    """localizationErrors: class counts over detections matched at OKS .1 (area 'all')."""
    errs = eng.errors(rng)
    a = errs.analysed
    per_kpt = {c: errs.flags[c][a].sum(0) for c in CLASSES}
    totals = {c: int(per_kpt[c].sum()) for c in CLASSES}
    num_field = int(data.gt_numkpts[errs.gt[a]].sum())
    num_kpts = sum(totals.values()) + int(errs.unclassified.sum())  # labelled (v != 0)
    if num_kpts != num_field:
        notes.append(f"the matched GTs' num_keypoints fields sum to {num_field} but {num_kpts} "
                     "keypoints are labelled (v != 0); percentages use the labelled count "
                     "(coco-analyze's assert would fail here)")
    if errs.unclassified.any():
        notes.append(f"{int(errs.unclassified.sum())} labelled keypoints have ks exactly 0.85 and "
                     "fall in no class (coco-analyze would fail its assert); compat='fixed' counts them good")
    pct = {c: (100.0 * totals[c] / num_kpts if num_kpts else math.nan) for c in CLASSES}
    split = {}
    for k, name in enumerate(data.spec.keypoints):
        v = np.array([per_kpt[c][k] for c in ERROR_TYPES[::-1]], dtype=float)  # jitter, inv, swap, miss
        split[name] = {c: (float(x / v.sum()) if v.sum() else math.nan) for c, x in zip(ERROR_TYPES[::-1], v)}
    groups = {}
    for c in ERROR_TYPES:
        tot = per_kpt[c].sum()
        groups[c] = {lab: (float(per_kpt[c][idx].sum() / tot) if tot else math.nan)
                     for lab, idx in keypoint_groups(data.spec)}
    return {"num_detections": len(data.dt_ids), "num_matched": int(a.sum()),
            "num_keypoints": num_kpts, "totals": totals, "percent": pct,
            "per_keypoint": per_kpt, "per_keypoint_split": split, "groups": groups}


def _scoring(data: AnalysisData, iso: dict, areas: dict, thrs) -> dict:
    """scoringErrors: AP@.75 with original vs optimal scores (area all), re-ranked images,
    scoring-error counts."""
    t = _oks_index(thrs, 0.75)
    opt = iso["opt_score"]["all"]
    out = {"oks": 0.75, "ap_original": float(_nan_ap(iso["ap"]["baseline"]["all"])[t]),
           "ap_optimal": float(_nan_ap(iso["ap"]["score"]["all"])[t])}
    out.update(scoring_errors(data, opt, areas["all"]))
    out["opt_score"] = opt
    return out


def _background(data: AnalysisData, iso: dict, thrs) -> dict:
    """Background FPs / FNs of the original detections, area 'all' (§5)."""
    fp, fn = iso["fp_set"]["all"], iso["fn_set"]["all"]
    bad_fp = fp.all(0) if len(fp) else np.zeros(len(data.dt_ids), bool)
    bad_fn = fn.all(0) if len(fn) else np.zeros(len(data.gt_ids), bool)
    high = np.percentile(data.dt_score, 80) if len(data.dt_score) else math.nan
    return {"fp_per_oks": fp.sum(1), "fn_per_oks": fn.sum(1),
            "bad_fp": int(bad_fp.sum()), "bad_fp_ids": data.dt_ids[bad_fp],
            "bad_fp_high_score": int((bad_fp & (data.dt_score >= high)).sum()),
            "score_p80": high, "bad_fn": int(bad_fn.sum()), "bad_fn_ids": data.gt_ids[bad_fn]}


def analyze(gt, dt, spec: KeypointSpec = COCO, compat: str = "coco-analyze", name: str = "model",
            benchmarks: bool = True, top_dets: int | None = TOP_DETS) -> AnalysisResult:
    """Ronchi & Perona error analysis of keypoint detections.

    gt: COCO keypoint json (path or dict); dt: results list (path or list). ``compat``:
    "coco-analyze" (default, the tool's numbers, quirks included) or "fixed"
    (quirks corrected, COCO's official area ranges). ``benchmarks`` adds the occlusion x
    crowding and size sensitivity studies (OKS .75).
    """
    if compat not in COMPAT_MODES:
        raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
    data = load(gt, dt, spec, top_dets)
    notes: list = []
    if len(data.gt_ids) == 0:
        notes.append("no ground-truth annotations: every AP is undefined (NaN)")
    if len(data.dt_ids) == 0:
        notes.append("no detections: AP is 0 where ground truth exists")
    areas = area_ranges(compat)
    thrs = OKS_THRS
    eng = Engine(data, compat)
    cum = cumulative(eng, areas, thrs)
    iso = isolated(eng, areas, thrs)
    cum_out = {
        "ap": {s: {a: _nan_ap(v) for a, v in per.items()} for s, per in cum["ap"].items()},
        "recall": {s: {a: _nan_ap(v) for a, v in per.items()} for s, per in cum["recall"].items()},
        "precision": cum["precision"],
    }
    imp = iso["improvement"]
    with np.errstate(all="ignore"):
        mean = {e: {a: float(np.mean(v)) for a, v in imp[e].items()} for e in ISOLATED}
        std = {e: {a: float(np.std(v)) for a, v in imp[e].items()} for e in ISOLATED}
    iso_out = {"ap": {s: {a: _nan_ap(v) for a, v in per.items()} for s, per in iso["ap"].items()},
               "recall": {s: {a: _nan_ap(v) for a, v in per.items()} for s, per in iso["recall"].items()},
               "improvement": imp, "mean": mean, "std": std}
    for lab in areas:
        if not np.isfinite(cum_out["ap"]["baseline"][lab]).any():
            notes.append(f"area '{lab}' has no ground truth to evaluate: its APs are NaN")
    for lab in areas:
        lost = np.asarray(iso["ap"]["false_neg"][lab]) < 0
        if compat != "fixed" and (lost & (np.asarray(iso["ap"]["baseline"][lab]) >= 0)).any():
            notes.append(f"area '{lab}': every GT is a false negative at some OKS, so 'w/o FN' "
                         "AP is undefined there; the isolated false_neg improvement keeps the "
                         "tool's -1 - AP(w/o FP) (its FN values are read at the mirrored OKS)")
    if len(data.dt_ids) and not any(iso["fp_set"]["all"].any(1)):
        notes.append("no background false positives: 'w/o Bkg. FP' equals the baseline")
    occ = size = None
    if benchmarks:
        occ = occlusion_crowding(data, compat, areas["all"], share=eng)
        if (occ["instances"] == 0).any():
            notes.append("some occlusion x crowding cells are empty: their numbers are NaN")
        size = size_sensitivity(data, compat, areas["all"], share=eng)
        empty = [b for b, n in size["counts"].items() if n == 0]
        if empty:
            notes.append(f"empty size buckets {empty}: their numbers are NaN")
    return AnalysisResult(
        name=name, compat=compat, spec=spec.name, keypoints=list(spec.keypoints),
        oks_thresholds=[float(t) for t in thrs], areas={k: list(v) for k, v in areas.items()},
        counts={"images": data.num_images, "annotations": len(data.gt_ids),
                "detections": len(data.dt_ids)},
        cumulative=cum_out, isolated=iso_out,
        keypoint_errors=_keypoint_errors(data, eng, areas["all"], notes),
        scoring=_scoring(data, iso, areas, thrs), background=_background(data, iso, thrs),
        occlusion=occ, size=size, notes=notes,
    )
