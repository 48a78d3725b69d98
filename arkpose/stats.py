"""How sure is a Table 4 difference? A paired bootstrap over seeds and validation images.

An ablation evaluates every row, for every seed, on the same validation images. COCOeval's
per-image matching (which detection matched which person at each OKS threshold) is kept as a
:class:`Matching`; :func:`average_precision` recomputes COCOeval's AP from it for any
multiset of images (as image weights), without running the evaluation again. It equals
``COCOeval.stats[0]`` exactly for the plain image set.

:func:`ablation_bootstrap` then draws, ``n_boot`` times, seeds with replacement and images
with replacement, **the same draw for every row** (the paired design: rows share seeds and
images), and reads each row's mean AP over the drawn seeds and each component's difference
to the row above off that draw. The 95% intervals are the draws' 2.5 and 97.5 percentiles;
P(Δ > 0) is the share of draws with a positive difference. With one seed the seed-to-seed
variance is unknown: the interval from the images alone is kept as ``image_ci_*``, and the
main interval, P(Δ > 0) and the verdict say so instead of pretending to a narrow CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs
ONE_SEED = "seed variance unknown (1 seed)"


@dataclass(frozen=True)
class Matching:
    """COCOeval's matching of one detection set, area "all", top 20 detections per image.

    image_ids (I,); npig (I,) persons that count per image (not crowd, not unlabelled);
    det_image (D,) index into ``image_ids`` of each detection, det_score (D,); tp, fp (T, D)
    bool per OKS threshold (a detection matched to an ignored person is neither).
    """

    image_ids: np.ndarray
    npig: np.ndarray
    det_image: np.ndarray
    det_score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **{k: getattr(self, k) for k in self.__dataclass_fields__})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Matching:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def matching_from_cocoeval(ev, max_dets: int | None = None) -> Matching:
    """The per-image matching of an evaluated (``ev.evaluate()``) pycocotools / xtcocotools
    ``COCOeval``, single category, area range "all"."""
    p = ev.params
    max_dets = max_dets or p.maxDets[-1]
    image_ids = np.asarray(p.imgIds, dtype=np.int64)
    num_images, num_thr = len(image_ids), len(p.iouThrs)
    all_area = list(p.areaRng[0])
    npig = np.zeros(num_images, np.int64)
    det_image, scores, matched, ignored = [], [], [], []
    index = {int(i): n for n, i in enumerate(image_ids)}
    for e in ev.evalImgs:
        if e is None or list(e["aRng"]) != all_area:
            continue
        n = index[int(e["image_id"])]
        npig[n] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        d = len(e["dtScores"][:max_dets])
        det_image.append(np.full(d, n, np.int64))
        scores.append(np.asarray(e["dtScores"][:max_dets], np.float64))
        matched.append(np.asarray(e["dtMatches"], np.float64).reshape(num_thr, -1)[:, :max_dets] > 0)
        ignored.append(np.asarray(e["dtIgnore"], bool).reshape(num_thr, -1)[:, :max_dets])
    if not scores:
        empty = np.zeros((num_thr, 0), bool)
        return Matching(image_ids, npig, np.zeros(0, np.int64), np.zeros(0), empty, empty)
    score = np.concatenate(scores)
    order = np.argsort(-score, kind="mergesort")  # COCOeval's order, ties included
    dtm = np.concatenate(matched, axis=1)[:, order]
    dtig = np.concatenate(ignored, axis=1)[:, order]
    return Matching(image_ids, npig, np.concatenate(det_image)[order], score[order],
                    dtm & ~dtig, ~dtm & ~dtig)


def average_precision(m: Matching, weights: np.ndarray | None = None, *, chunk: int = 64) -> np.ndarray | float:
    """COCOeval's AP (mean precision over OKS thresholds and 101 recall points) of ``m``.

    weights: None (every image once: a float, equal to ``COCOeval.stats[0]``) or (B, I)
    image multiplicities, e.g. bootstrap counts: -> (B,). NaN where no person counts.
    """
    single = weights is None
    w = np.ones((1, len(m.image_ids))) if single else np.asarray(weights, np.float64)
    out = np.empty(len(w))
    for start in range(0, len(w), chunk):
        out[start:start + chunk] = _ap_batch(m, w[start:start + chunk])
    return float(out[0]) if single else out


def _ap_batch(m: Matching, w: np.ndarray) -> np.ndarray:
    npig = w @ m.npig
    ap = np.zeros(len(w))
    if m.tp.shape[1] == 0:
        return np.where(npig > 0, 0.0, np.nan)
    wd = w[:, m.det_image]  # (B, D)
    eps = np.spacing(1)
    for t in range(m.tp.shape[0]):
        tp = np.cumsum(wd * m.tp[t], axis=1)
        fp = np.cumsum(wd * m.fp[t], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / npig[:, None]
        precision = tp / (tp + fp + eps)
        # COCOeval's envelope: precision made non-increasing from the right.
        precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        for b in range(len(w)):
            idx = np.searchsorted(recall[b], RECALL_THRESHOLDS, side="left")
            q = np.where(idx < precision.shape[1], precision[b, np.minimum(idx, precision.shape[1] - 1)], 0.0)
            ap[b] += q.mean()
    ap /= m.tp.shape[0]
    return np.where(npig > 0, ap, np.nan)


@dataclass
class BootstrapResult:
    """``rows``: one line per row (mean AP over seeds, CI); ``deltas``: one line per row
    after the first (Δ to the row above, CI, P(Δ > 0), verdict); ``per_seed``: each
    (row, seed)'s AP. APs in [0, 1]."""

    rows: pd.DataFrame
    deltas: pd.DataFrame
    per_seed: pd.DataFrame


def verdict(low: float, high: float) -> str:
    """From the interval alone: helps / hurts / within noise (or "no change" when reused)."""
    if np.isnan(low) or np.isnan(high):
        return ONE_SEED
    if low == high == 0.0:
        return "no change"
    return "helps" if low > 0 else "hurts" if high < 0 else "within noise"


def ablation_bootstrap(
    matchings: Mapping[tuple[str, int], Matching],
    rows: Sequence[str],
    seeds: Sequence[int],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    rng: int | np.random.Generator = 0,
) -> BootstrapResult:
    """Paired bootstrap of every row's AP and every row-to-row difference (module doc).

    matchings: {(row, seed): Matching} for every row and seed, all on the same images.
    """
    rng = np.random.default_rng(rng)
    first = matchings[(rows[0], seeds[0])]
    for key, m in matchings.items():
        if not np.array_equal(m.image_ids, first.image_ids):
            raise ValueError(f"{key} was evaluated on other images than {(rows[0], seeds[0])}: "
                             "a paired comparison needs the same validation images everywhere")
    num_images, num_seeds = len(first.image_ids), len(seeds)
    image_w = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=n_boot)
    seed_w = rng.multinomial(num_seeds, np.full(num_seeds, 1.0 / num_seeds), size=n_boot)
    point = {(r, s): average_precision(matchings[(r, s)]) for r in rows for s in seeds}
    boot = {(r, s): average_precision(matchings[(r, s)], image_w) for r in rows for s in seeds}
    # Each draw's row value: the mean over its drawn seeds (with repeats), on its drawn images.
    draws = {r: sum(seed_w[:, i] * boot[(r, s)] for i, s in enumerate(seeds)) / num_seeds for r in rows}
    images_only = {r: np.mean([boot[(r, s)] for s in seeds], axis=0) for r in rows}
    tail = 100 * (1 - level) / 2
    known = num_seeds > 1

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.nanpercentile(values, [tail, 100 - tail])
        return float(low), float(high)

    row_records = []
    for r in rows:
        low, high = interval(draws[r]) if known else (np.nan, np.nan)
        row_records.append({"row": r, "AP": float(np.mean([point[(r, s)] for s in seeds])),
                            "ci_low": low, "ci_high": high,
                            "seed_sd": float(np.std([point[(r, s)] for s in seeds], ddof=1)) if known else np.nan,
                            "seeds": num_seeds})
    delta_records = []
    for prev, r in zip(rows, rows[1:]):
        diff = draws[r] - draws[prev]
        low, high = interval(diff) if known else (np.nan, np.nan)
        img_low, img_high = interval(images_only[r] - images_only[prev])
        per_seed = [point[(r, s)] - point[(prev, s)] for s in seeds]
        delta_records.append({
            "row": r, "vs": prev, "delta": float(np.mean(per_seed)), "ci_low": low, "ci_high": high,
            "p_improve": float(np.mean(diff > 0)) if known else np.nan,
            "verdict": verdict(low, high) if known else ONE_SEED,
            "image_ci_low": img_low, "image_ci_high": img_high, "seeds": num_seeds,
        })
    per_seed = pd.DataFrame([{"row": r, "seed": s, "AP": point[(r, s)]} for r in rows for s in seeds])
    return BootstrapResult(pd.DataFrame(row_records), pd.DataFrame(delta_records), per_seed)
