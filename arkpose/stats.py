"""How sure is a Table 4 difference? Intervals over seeds and validation images.

An ablation evaluates every row, for every seed, on the same validation images. COCOeval's
per-image matching (which detection matched which person at each OKS threshold) is kept as a
:class:`Matching`; :func:`average_precision` recomputes COCOeval's AP from it for any
multiset of images (as image weights), without running the evaluation again. It equals
``COCOeval.stats[0]`` exactly for the plain image set.

:func:`ablation_bootstrap` draws the validation images with replacement ``n_boot`` times,
**the same draws for every row and seed** (the paired design: rows share seeds and images),
and combines the image bootstrap with the spread over seeds into each row's mean AP and each
component's difference to the row above, with a 95% interval and P(Δ > 0)
(:func:`interval` says how). With one seed the seed-to-seed variance is unknown: the
interval from the images alone is kept as ``image_ci_*``, and the main interval, P(Δ > 0)
and the verdict say so instead of pretending to a narrow CI.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

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
    npig = np.zeros(num_images, np.int64)
    det_image, scores, matched, ignored = [], [], [], []
    index = {int(i): n for n, i in enumerate(image_ids)}
    # pycocotools marks an unmatched detection 0; xtcocotools -1 (its gt ids may be 0).
    unmatched_is_negative = type(ev).__module__.startswith("xtcocotools")
    # evalImgs runs over (category, area range, image): the first I entries are area "all".
    # (xtcocotools' CrowdPose ranges all share one area range and differ in crowd index.)
    for e in ev.evalImgs[:num_images]:
        if e is None:
            continue
        n = index[int(e["image_id"])]
        npig[n] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        d = len(e["dtScores"][:max_dets])
        det_image.append(np.full(d, n, np.int64))
        scores.append(np.asarray(e["dtScores"][:max_dets], np.float64))
        dtm = np.asarray(e["dtMatches"], np.float64).reshape(num_thr, -1)[:, :max_dets]
        matched.append(dtm >= 0 if unmatched_is_negative else dtm > 0)
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


def average_precision(m: Matching, weights: np.ndarray | None = None, *, chunk: int = 256) -> np.ndarray | float:
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
    """COCOeval's accumulate() for each row of ``w`` (B, I) at once.

    Only the true positives are visited: the precision envelope at a recall point is the
    largest precision at or after the first detection reaching that recall, which is a true
    positive, and a precision after a false positive never exceeds the one at the true
    positive before it. The detections counted up to each true positive (true and false
    positives; those matched to an ignored person are neither) are one sparse (hits x
    images) count matrix times the image weights, cumulated over the hits: no (detections
    x draws) array is made. Everything is laid out (draws, hits), so the cumulations run
    along contiguous memory. All counts are sums of integer weights, so precision and recall
    are the same floats COCOeval computes (tests/test_stats.py checks against its loop).
    """
    npig = w @ m.npig
    num_draws, (num_thr, num_dets) = len(w), m.tp.shape
    ap = np.zeros(num_draws)
    if num_dets == 0:
        return np.where(npig > 0, 0.0, np.nan)
    w = np.ascontiguousarray(w, dtype=np.float64)  # (B, I)
    w_t = np.ascontiguousarray(w.T)  # (I, B), for the sparse product
    draw = np.arange(num_draws)
    # Per-draw recall searches in one call: complex numbers sort lexicographically, so
    # draw + 1j * recall is ascending when each draw's recall is (no float rounding).
    with np.errstate(invalid="ignore", divide="ignore"):
        safe_npig = np.where(npig > 0, npig, np.inf)
    queries = (draw[:, None] + 1j * RECALL_THRESHOLDS[None, :]).ravel()
    for t in range(num_thr):
        hits = np.flatnonzero(m.tp[t])
        if len(hits) == 0:
            continue
        tp = np.cumsum(w[:, m.det_image[hits]], axis=1)  # (B, P)
        counted = np.flatnonzero(m.tp[t] | m.fp[t])
        segment = np.searchsorted(hits, counted, side="left")  # the first hit at or after it
        keep = segment < len(hits)
        counts = sparse.csr_matrix((np.ones(int(keep.sum())), (segment[keep], m.det_image[counted[keep]])),
                                   shape=(len(hits), w.shape[1]))
        seen = np.cumsum(np.ascontiguousarray((counts @ w_t).T), axis=1)  # (B, P)
        precision = tp / (seen + np.spacing(1))  # COCOeval's tp / (tp + fp + eps)
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        recall = tp / safe_npig[:, None]
        keys = (draw[:, None] + 1j * recall).ravel()
        first = np.searchsorted(keys, queries, side="left").reshape(num_draws, -1)
        first -= draw[:, None] * len(hits)  # first true positive reaching each recall point
        padded = np.hstack([envelope, np.zeros((num_draws, 1))])  # recall never reached: 0
        ap += np.take_along_axis(padded, first, axis=1).mean(axis=1)
    ap /= num_thr
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


def _nanvar(x: np.ndarray, axis: int | None = None):
    """Sample variance ignoring NaN (resamples where AP is undefined: a stratum with no
    person in the draw); NaN, without numpy's warning, where fewer than two are defined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanvar(x, axis=axis, ddof=1)


def interval(per_seed: np.ndarray, boot: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean over seeds of a per-seed quantity, its ``level`` interval and P(value > 0).

    per_seed (S,): the value of each seed on the validation images (an AP, or a paired
    difference of two rows' APs); boot (S, B): the same on ``B`` bootstrap draws of the
    images, the same draws for every seed.

    Seeds and images are crossed (every seed sees every image), so the variance of the mean
    has three parts: seed-to-seed, image-to-image, and their interaction (this model's luck
    on that image). The seed resampling is done analytically, without the 1/S bias of a
    bootstrap over a handful of seeds: the between-seed variance of ``per_seed`` / S. The
    image bootstrap of the seed mean gives the image part. Both contain the interaction,
    which the image bootstraps of single seeds measure; it is counted once. The interval is
    Student's t with Welch-Satterthwaite degrees of freedom (S - 1 for the seed part), so
    three seeds give honest, wide intervals rather than narrow wrong ones. With one seed the
    seed part is unknown: ``low``/``high``/``p_positive`` are NaN, ``image_*`` are kept.
    """
    from scipy import stats as st  # lazy: scipy.stats costs ~1.3 s; only the intervals need it

    per_seed, boot = np.asarray(per_seed, float), np.asarray(boot, float)
    num_seeds = len(per_seed)
    mean = float(per_seed.mean())
    var_images = float(_nanvar(boot.mean(0)))  # image part + interaction / S
    z = st.norm.ppf(0.5 + level / 2)
    out = {"mean": mean, "image_low": mean - z * var_images**0.5,
           "image_high": mean + z * var_images**0.5,
           "low": np.nan, "high": np.nan, "p_positive": np.nan, "se": np.nan, "df": np.nan}
    exact = {**out, "low": mean, "high": mean, "p_positive": float(mean > 0), "se": 0.0, "df": np.inf}
    if np.ptp(per_seed) == 0 and np.ptp(boot) == 0:  # a row that reuses another's numbers
        return exact
    if num_seeds < 2:
        return out
    var_single = float(np.mean(_nanvar(boot, axis=1)))  # image part + interaction
    interaction = max(var_single - var_images, 0.0) * num_seeds / (num_seeds - 1)
    var_between = float(np.var(per_seed, ddof=1)) / num_seeds  # seed part + interaction / S
    seed_part = max(var_between - interaction / num_seeds, 0.0)
    total = seed_part + var_images
    if total <= 0:
        return exact
    df = (num_seeds - 1) * total**2 / max(var_between**2, 1e-300)
    df = float(min(max(df, num_seeds - 1), 1e6))
    se = total**0.5
    t = st.t.ppf(0.5 + level / 2, df)
    return {**out, "low": mean - t * se, "high": mean + t * se,
            "p_positive": float(st.t.cdf(mean / se, df)), "se": se, "df": df}


def ablation_bootstrap(
    matchings: Mapping[tuple[str, int], Matching],
    rows: Sequence[str],
    seeds: Sequence[int],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    rng: int | np.random.Generator = 0,
    threads: int = 1,
) -> BootstrapResult:
    """Every row's mean AP and every row-to-row difference, with :func:`interval`.

    matchings: {(row, seed): Matching} for every row and seed, all on the same images.
    ``n_boot`` image draws are shared by every row and seed (the paired design).
    ``threads``: matchings bootstrapped at once (the same numbers whatever the count).
    """
    rng = np.random.default_rng(rng)
    first = matchings[(rows[0], seeds[0])]
    for key, m in matchings.items():
        if not np.array_equal(m.image_ids, first.image_ids):
            raise ValueError(f"{key} was evaluated on other images than {(rows[0], seeds[0])}: "
                             "a paired comparison needs the same validation images everywhere")
    num_images = len(first.image_ids)
    image_w = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=n_boot)
    # A row that reuses another's evaluation (the same Matching object) is computed once.
    unique = {id(m): m for m in matchings.values()}
    with ThreadPoolExecutor(max(1, threads)) as pool:  # numpy's loops free the GIL
        aps = dict(zip(unique, pool.map(lambda m: (average_precision(m),
                                                   average_precision(m, image_w)),
                                        unique.values())))
    point = {r: np.array([aps[id(matchings[(r, s)])][0] for s in seeds]) for r in rows}
    boot = {r: np.stack([aps[id(matchings[(r, s)])][1] for s in seeds]) for r in rows}
    known = len(seeds) > 1

    row_records = []
    for r in rows:
        ci = interval(point[r], boot[r], level)
        row_records.append({"row": r, "AP": ci["mean"], "ci_low": ci["low"], "ci_high": ci["high"],
                            "seed_sd": float(np.std(point[r], ddof=1)) if known else np.nan,
                            "seeds": len(seeds)})
    delta_records = []
    for prev, r in itertools.pairwise(rows):
        ci = interval(point[r] - point[prev], boot[r] - boot[prev], level)
        delta_records.append({
            "row": r, "vs": prev, "delta": ci["mean"], "ci_low": ci["low"], "ci_high": ci["high"],
            "p_improve": ci["p_positive"], "verdict": verdict(ci["low"], ci["high"]),
            "image_ci_low": ci["image_low"], "image_ci_high": ci["image_high"],
            "df": ci["df"], "seeds": len(seeds),
        })
    per_seed = pd.DataFrame([{"row": r, "seed": s, "AP": point[r][i]}
                             for r in rows for i, s in enumerate(seeds)])
    return BootstrapResult(pd.DataFrame(row_records), pd.DataFrame(delta_records), per_seed)


def format_interval(mean: float, low: float, high: float, digits: int = 1) -> str:
    """``"22.1 [20.3, 23.8]"``; ``"22.1 [?]"`` when the interval is unknown (one seed)."""
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f} [?]"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
