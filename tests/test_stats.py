import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from arkpose import evaluate, stats
from arkpose.spec import get_spec


def _spec(name="coco", scale=1.0):
    spec = get_spec(name)
    return dataclasses.replace(spec, sigmas=tuple(s * scale for s in spec.sigmas))


@pytest.mark.needs_shared
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_ap_from_matching_equals_cocoeval(real_fixtures, scale):
    coco = real_fixtures / "coco"
    spec = _spec("coco", scale)
    result, matching = evaluate.evaluate_matching(coco / "test_coco.json",
                                                  coco / "example_coco_preds.json", spec)
    assert stats.average_precision(matching) == pytest.approx(result["AP"], abs=1e-12)
    ones = np.ones((1, len(matching.image_ids)))
    assert stats.average_precision(matching, ones)[0] == pytest.approx(result["AP"], abs=1e-12)


@pytest.mark.needs_shared
def test_ap_from_matching_equals_xtcocotools_crowdpose(real_fixtures):
    folder = real_fixtures / "crowdpose_eval_only"
    spec = _spec("crowdpose")
    result, matching = evaluate.evaluate_matching(folder / "example_crowdpose_val.json",
                                                  folder / "example_crowdpose_preds.json", spec)
    assert stats.average_precision(matching) == pytest.approx(result["AP"], abs=1e-12)


@pytest.mark.needs_shared
def test_image_weights_equal_duplicated_images(real_fixtures, tmp_path):
    """Weight 2 on an image = that image twice in the ground truth and the detections."""
    coco = real_fixtures / "coco"
    gt = json.loads((coco / "test_coco.json").read_text())
    dets = json.loads((coco / "example_coco_preds.json").read_text())
    spec = _spec("coco", 2.0)
    _, matching = evaluate.evaluate_matching(gt, dets, spec)
    twice = int(matching.image_ids[1])
    dropped = int(matching.image_ids[3])
    new_id = max(im["id"] for im in gt["images"]) + 1
    gt2 = copy.deepcopy(gt)
    gt2["images"] = [im for im in gt2["images"] if im["id"] != dropped]
    gt2["images"].append({**next(im for im in gt["images"] if im["id"] == twice), "id": new_id})
    next_ann = max(a["id"] for a in gt["annotations"]) + 1
    gt2["annotations"] = [a for a in gt2["annotations"] if a["image_id"] != dropped]
    for a in [a for a in gt["annotations"] if a["image_id"] == twice]:
        gt2["annotations"].append({**a, "id": next_ann, "image_id": new_id})
        next_ann += 1
    dets2 = [d for d in dets if d["image_id"] != dropped]
    dets2 += [{**d, "image_id": new_id} for d in dets if d["image_id"] == twice]
    expected = evaluate.evaluate(gt2, dets2, spec)["AP"]
    weights = np.ones((1, len(matching.image_ids)))
    weights[0, 1], weights[0, 3] = 2, 0
    assert stats.average_precision(matching, weights)[0] == pytest.approx(expected, abs=1e-12)


def test_no_detections_and_no_persons():
    empty = np.zeros((2, 0), bool)
    m = stats.Matching(np.arange(3), np.array([1, 0, 2]), np.zeros(0, int), np.zeros(0), empty, empty)
    assert stats.average_precision(m) == 0.0
    assert np.isnan(stats.average_precision(m, np.array([[0, 3, 0]]))[0])


def _accumulate_loop(m, w):
    """COCOeval's accumulate() written out, one draw and one threshold at a time: the
    reference the vectorised :func:`stats.average_precision` must equal bit for bit."""
    out = []
    for row in w:
        npig = row @ m.npig
        if npig == 0:
            out.append(np.nan)
            continue
        ap = 0.0
        for t in range(m.tp.shape[0]):
            wd = row[m.det_image]
            tp, fp = np.cumsum(wd * m.tp[t]), np.cumsum(wd * m.fp[t])
            recall, precision = tp / npig, tp / (tp + fp + np.spacing(1))
            for i in range(len(precision) - 1, 0, -1):
                precision[i - 1] = max(precision[i - 1], precision[i])
            idx = np.searchsorted(recall, stats.RECALL_THRESHOLDS, side="left")
            ap += np.mean([precision[i] if i < len(precision) else 0.0 for i in idx])
        out.append(ap / m.tp.shape[0])
    return np.array(out)


def test_vectorised_ap_equals_cocoeval_accumulate_bit_for_bit():
    """Random matchings with ties in recall, detections matched to ignored persons (neither
    TP nor FP), images weighted 0, 1 or 2, and draws with no person."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        images, dets, thresholds = rng.integers(1, 10), rng.integers(1, 40), rng.integers(1, 4)
        kind = rng.integers(0, 3, (thresholds, dets))  # 0 TP, 1 FP, 2 matched an ignored person
        m = stats.Matching(np.arange(images), rng.integers(0, 4, images),
                           rng.integers(0, images, dets), np.sort(rng.random(dets))[::-1],
                           kind == 0, kind == 1)
        w = rng.integers(0, 3, (int(rng.integers(1, 12)), images)).astype(float)
        np.testing.assert_array_equal(stats.average_precision(m, w, chunk=5), _accumulate_loop(m, w))


def test_threads_and_shared_matchings_give_the_same_numbers():
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0, 1, 150)
    m = {(r, s): _simulate(rng, theta, 0.2, difficulty)
         for r, theta in (("a", 0.0), ("b", 0.3)) for s in range(3)}
    m.update({("c", s): m[("b", s)] for s in range(3)})  # a row that reuses b's evaluation
    one = stats.ablation_bootstrap(m, ["a", "b", "c"], [0, 1, 2], n_boot=200, threads=1)
    two = stats.ablation_bootstrap(m, ["a", "b", "c"], [0, 1, 2], n_boot=200, threads=2)
    pd.testing.assert_frame_equal(one.deltas, two.deltas)
    assert one.deltas.iloc[1]["verdict"] == "no change"


# ---------------------------------------------------------------------------------------
# Simulated per-image results with a known effect

THRESHOLDS = np.array([0.5, 0.75])


def _simulate(rng, theta, seed_sd, difficulty):
    """One (row, seed): two persons per image whose OKS is a logistic of row quality +
    seed effect + image difficulty (shared by every row and seed) + per-person luck, and
    Poisson false positives. The score is a noisy OKS."""
    n = len(difficulty)
    quality = theta + rng.normal(0, seed_sd)
    oks = 1 / (1 + np.exp(-(quality + difficulty[:, None] + rng.normal(0, 1.0, (n, 2)))))
    fps = rng.poisson(0.7, n)
    det_image = np.concatenate([np.repeat(np.arange(n), 2), np.repeat(np.arange(n), fps)])
    score = np.concatenate([oks.ravel() + rng.normal(0, 0.15, 2 * n), rng.uniform(0, 0.8, fps.sum())])
    tp = np.concatenate([oks.ravel()[None] > THRESHOLDS[:, None],
                         np.zeros((2, fps.sum()), bool)], axis=1)
    order = np.argsort(-score, kind="mergesort")
    return stats.Matching(np.arange(n), np.full(n, 2), det_image[order], score[order],
                          tp[:, order], ~tp[:, order])


def _true_delta(theta_a, theta_b, seed_sd, rng, runs=40, images=4000):
    difficulty = rng.normal(0, 1, images)
    ap = {t: np.mean([stats.average_precision(_simulate(rng, t, seed_sd, difficulty))
                      for _ in range(runs)]) for t in (theta_a, theta_b)}
    return ap[theta_b] - ap[theta_a]


@pytest.mark.slow
@pytest.mark.parametrize("seed_sd", [0.0, 0.3])
def test_interval_coverage_is_close_to_95_percent(seed_sd):
    """200 simulated ablations of 3 seeds x 100 images: the true Δ lies in the interval
    about 95% of the time, whether seeds or images dominate the noise."""
    true = _true_delta(0.0, 0.3, seed_sd, np.random.default_rng(123))
    rng = np.random.default_rng(7)
    hits = 0
    for k in range(200):
        difficulty = rng.normal(0, 1, 100)
        runs = {(row, s): _simulate(rng, theta, seed_sd, difficulty)
                for row, theta in (("a", 0.0), ("b", 0.3)) for s in range(3)}
        delta = stats.ablation_bootstrap(runs, ["a", "b"], [0, 1, 2], n_boot=100, rng=k).deltas.iloc[0]
        hits += delta.ci_low <= true <= delta.ci_high
    assert 0.90 <= hits / 200 <= 0.99


def test_one_seed_reports_unknown_seed_variance():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 1, 60)
    runs = {("a", 0): _simulate(rng, 0.0, 0.3, difficulty), ("b", 0): _simulate(rng, 1.0, 0.3, difficulty)}
    result = stats.ablation_bootstrap(runs, ["a", "b"], [0], n_boot=100)
    delta = result.deltas.iloc[0]
    assert np.isnan(delta.ci_low) and np.isnan(delta.ci_high) and np.isnan(delta.p_improve)
    assert delta.verdict == stats.ONE_SEED
    assert delta.image_ci_low < delta.delta < delta.image_ci_high  # the images' part is kept
    assert np.isnan(result.rows.ci_low).all()


def test_paired_rows_and_verdicts():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 1, 80)
    base = {s: _simulate(rng, 0.0, 0.05, difficulty) for s in range(3)}
    better = {s: _simulate(rng, 2.0, 0.05, difficulty) for s in range(3)}
    runs = {**{("a", s): m for s, m in base.items()}, **{("b", s): m for s, m in better.items()},
            **{("a again", s): m for s, m in better.items()}}  # a row that reuses b's numbers
    result = stats.ablation_bootstrap(runs, ["a", "b", "a again"], [0, 1, 2], n_boot=200)
    helps, same = result.deltas.iloc[0], result.deltas.iloc[1]
    assert helps.verdict == "helps" and helps.ci_low > 0 and helps.p_improve > 0.99
    assert same.delta == 0 and same.verdict == "no change"
    assert list(result.per_seed.columns) == ["row", "seed", "AP"] and len(result.per_seed) == 9
    assert stats.verdict(-0.02, -0.01) == "hurts" and stats.verdict(-0.01, 0.01) == "within noise"


def test_rows_on_other_images_are_refused():
    rng = np.random.default_rng(2)
    a = _simulate(rng, 0.0, 0.0, rng.normal(0, 1, 10))
    b = dataclasses.replace(_simulate(rng, 0.0, 0.0, rng.normal(0, 1, 10)), image_ids=np.arange(1, 11))
    with pytest.raises(ValueError, match="same validation images"):
        stats.ablation_bootstrap({("a", 0): a, ("b", 0): b}, ["a", "b"], [0])


def test_matching_round_trip(tmp_path):
    m = _simulate(np.random.default_rng(3), 0.0, 0.0, np.zeros(5))
    m.save(tmp_path / "m.npz")
    back = stats.Matching.load(tmp_path / "m.npz")
    assert all(np.array_equal(getattr(m, k), getattr(back, k)) for k in m.__dataclass_fields__)


def test_a_reused_row_is_no_change_even_with_one_seed():
    m = _simulate(np.random.default_rng(4), 0.0, 0.0, np.random.default_rng(5).normal(0, 1, 30))
    result = stats.ablation_bootstrap({("a", 0): m, ("b", 0): m}, ["a", "b"], [0], n_boot=50)
    delta = result.deltas.iloc[0]
    assert delta.delta == 0 and delta.ci_low == delta.ci_high == 0 and delta.verdict == "no change"
