"""arkpose.strata: stratum APs on hand-made cases (exact numbers), the split of the persons,
the cache of strata matchings, and the per-stratum Δ of two rows."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from arkpose import evaluate, stats, strata
from arkpose.spec import COCO, CROWDPOSE

# Four persons on two images: (image, bbox, true rotation). sqrt(area) = box side.
# sizes 20, 60, 50, 30 -> median 40: small A, D; large B, C. |rotation| > 45: B, D.
# C and D overlap (D inside C: IoU 900 / 2500 = 0.36); A and B do not.
PERSONS = {
    "A": (1, [10, 10, 20, 20], 10.0),
    "B": (1, [100, 100, 60, 60], 90.0),
    "C": (2, [20, 20, 50, 50], -30.0),
    "D": (2, [30, 30, 30, 30], -120.0),
}
IDS = {name: i + 1 for i, name in enumerate(PERSONS)}


def _keypoints(name: str, k: int) -> np.ndarray:
    """(k, 2) joints spread over the person's box, a different pattern per person."""
    _, (x, y, w, h), _ = PERSONS[name]
    rng = np.random.default_rng(IDS[name])
    return np.stack([x + w * rng.uniform(0.05, 0.95, k), y + h * rng.uniform(0.05, 0.95, k)], 1).round(2)


def _ground_truth(spec) -> dict:
    k = spec.num_keypoints
    anns = []
    for name, (image, box, rotation) in PERSONS.items():
        kp = np.concatenate([_keypoints(name, k), np.full((k, 1), 2.0)], 1).ravel().tolist()
        anns.append({"id": IDS[name], "image_id": image, "category_id": 1, "iscrowd": 0,
                     "bbox": box, "area": float(box[2] * box[3]), "keypoints": kp,
                     "num_keypoints": k, "synth": {"rotation_deg": rotation}})
    # A crowd region: never a person of any stratum.
    anns.append({"id": 9, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [150, 150, 40, 40],
                 "area": 1600.0, "keypoints": [0] * (3 * k), "num_keypoints": 0})
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 200, "crowdIndex": 0.1}
              for i in (1, 2)]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(spec.keypoints),
                            "skeleton": []}]}


def _det(name: str, score: float, spec) -> dict:
    kp = np.concatenate([_keypoints(name, spec.num_keypoints), np.ones((spec.num_keypoints, 1))], 1)
    return {"image_id": PERSONS[name][0], "category_id": 1, "keypoints": kp.ravel().tolist(), "score": score}


def _detections(spec) -> list[dict]:
    """By score: a background detection far from anyone (image 2), exact poses of A, B and
    C, a duplicate of A. D is missed."""
    k = spec.num_keypoints
    background = {"image_id": 2, "category_id": 1, "score": 0.95,
                  "keypoints": np.column_stack([np.full(k, 190.0), np.full(k, 5.0), np.ones(k)]).ravel().tolist()}
    return [background, _det("A", 0.9, spec), _det("B", 0.8, spec), _det("C", 0.7, spec), _det("A", 0.6, spec)]


def test_strata_split_the_persons_exactly():
    persons = strata.person_table(_ground_truth(COCO))
    assert sorted(persons["ann_id"]) == [1, 2, 3, 4]  # the crowd region is no person
    members = strata.assign_strata(persons)
    named = {s: {n for n, i in IDS.items() if i in ids} for s, ids in members.items()}
    assert named == {"upright": {"A", "C"}, "rotated": {"B", "D"}, "small": {"A", "D"},
                     "large": {"B", "C"}, "isolated": {"A", "B"}, "overlapping": {"C", "D"}}
    for first, second in strata.PAIRS:
        assert members[first] | members[second] == set(IDS.values())
        assert not members[first] & members[second]
    # Real data: no true rotation, so no rotation pair; the others still split everyone.
    members = strata.assign_strata(persons.assign(rotation_deg=np.nan))
    assert set(members) == {"small", "large", "isolated", "overlapping"}


@pytest.mark.parametrize("spec", [COCO, CROWDPOSE], ids=["pycocotools", "xtcocotools"])
def test_stratum_ap_by_hand(spec):
    """The APs worked out by hand (every OKS is 1 or about 0, so all 10 thresholds agree;
    AP = mean over the 101 recall points of the precision envelope):

    all: FP, TP A, TP B, TP C, FP (dup A); 4 persons -> precision .75 up to recall .75: 76 x .75 / 101
    upright (A, C): FP, TP A, (B ignored), TP C, FP -> precision 2/3 up to recall 1: 2/3
    rotated (B, D): FP, (A ignored), TP B, (C ignored), FP (A is taken) -> .5 up to recall .5: 51 x .5 / 101
    """
    gt, dets = _ground_truth(spec), _detections(spec)
    result, full = evaluate.evaluate_matching(gt, dets, spec)
    assert result["AP"] == pytest.approx(76 * 0.75 / 101, abs=1e-12)
    matchings, persons = strata.strata_matchings(gt, dets, spec, [1, 2])
    assert persons == {s: 2 for s in strata.STRATA}
    assert stats.average_precision(full) == pytest.approx(76 * 0.75 / 101, abs=1e-12)
    assert stats.average_precision(matchings["upright"]) == pytest.approx(2 / 3, abs=1e-12)
    assert stats.average_precision(matchings["rotated"]) == pytest.approx(51 * 0.5 / 101, abs=1e-12)
    # The same number from COCOeval itself on the hand-built file: D and B ignored as
    # unlabelled persons are.
    by_hand = strata.ignore_outside(gt, {IDS["A"], IDS["C"]})
    assert [a["num_keypoints"] == 0 for a in by_hand["annotations"]] == [False, True, False, True, True]
    assert evaluate.evaluate(by_hand, dets, spec)["AP"] == pytest.approx(2 / 3, abs=1e-12)


def test_a_detection_on_an_out_of_stratum_person_is_neither_tp_nor_fp():
    gt, dets = _ground_truth(COCO), _detections(COCO)
    matchings, _ = strata.strata_matchings(gt, dets, COCO, [1, 2])
    m = matchings["rotated"]
    by_score = {round(float(s), 2): i for i, s in enumerate(m.det_score)}
    for score in (0.9, 0.7):  # the exact poses of A and C, both upright
        i = by_score[score]
        assert not m.tp[:, i].any() and not m.fp[:, i].any()
    assert m.tp[:, by_score[0.8]].all()  # B
    assert m.fp[:, by_score[0.95]].all() and m.fp[:, by_score[0.6]].all()  # background, dup of A
    assert m.npig.tolist() == [1, 1]
    # Removing the out-of-stratum persons instead of ignoring them would make the
    # detections on them false positives: a lower AP than the stratum's.
    removed = {**gt, "annotations": [a for a in gt["annotations"] if a["id"] not in (IDS["A"], IDS["C"])]}
    assert evaluate.evaluate(removed, dets, COCO)["AP"] < stats.average_precision(m)


def _eval_dir(folder, gt, dets, spec):
    folder.mkdir(parents=True)
    _, matching = evaluate.evaluate_matching(gt, dets, spec)
    matching.save(folder / evaluate.MATCHING_FILE)
    (folder / "detections.json").write_text(json.dumps(dets))
    return folder


def test_strata_matchings_are_cached_by_what_changes_them(tmp_path, monkeypatch):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_ground_truth(COCO)))
    folder = _eval_dir(tmp_path / "final", _ground_truth(COCO), _detections(COCO), COCO)
    first, persons = strata.cached_strata_matchings(folder, gt_path, COCO)
    assert persons == {s: 2 for s in strata.STRATA}
    assert sorted(p.name for p in folder.glob("matching_*.npz")) == sorted(f"matching_{s}.npz" for s in strata.STRATA)
    calls = []
    original = strata.strata_matchings
    monkeypatch.setattr(strata, "strata_matchings", lambda *a: calls.append(1) or original(*a))
    again, _ = strata.cached_strata_matchings(folder, gt_path, COCO)
    assert not calls
    np.testing.assert_array_equal(again["rotated"].tp, first["rotated"].tp)
    # New detections (D found too): recomputed, and the rotated stratum now finds D.
    (folder / "detections.json").write_text(json.dumps(_detections(COCO) + [_det("D", 0.5, COCO)]))
    changed, _ = strata.cached_strata_matchings(folder, gt_path, COCO)
    assert calls == [1]
    assert changed["rotated"].tp.sum() == first["rotated"].tp.sum() + 10
    # Other sigmas: recomputed as well.
    strata.cached_strata_matchings(folder, gt_path, dataclasses.replace(COCO, sigmas=tuple(2 * s for s in COCO.sigmas)))
    assert calls == [1, 1]


@pytest.mark.parametrize("spec", [COCO, CROWDPOSE], ids=["pycocotools", "xtcocotools"])
def test_an_evaluation_with_strata_leaves_what_the_cache_would_compute(spec, tmp_path, monkeypatch):
    """evaluate_detections(strata=True) keeps the strata matchings from its own COCOeval
    (before xtcocotools' summary moves its parameters); reading them back computes nothing
    and gives what a fresh computation gives."""
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_ground_truth(spec)))
    dets = _detections(spec) + [_det("D", 0.5, spec)]
    results = evaluate.evaluate_detections(gt_path, {"final": dets}, spec, out_dir=tmp_path / "eval",
                                           strata=True)
    assert results["final"] == evaluate.evaluate(gt_path, dets, spec)
    calls = []
    monkeypatch.setattr(strata, "strata_matchings", lambda *a: calls.append(1))
    kept, persons = strata.cached_strata_matchings(tmp_path / "eval/final", gt_path, spec)
    assert not calls and persons == {s: 2 for s in strata.STRATA}
    monkeypatch.undo()
    fresh, _ = strata.strata_matchings(gt_path, dets, spec, [im["id"] for im in _ground_truth(spec)["images"]])
    for s in strata.STRATA:
        for field in ("det_image", "det_score", "tp", "fp", "npig"):
            np.testing.assert_array_equal(getattr(kept[s], field), getattr(fresh[s], field))
    with pytest.raises(ValueError, match="file path"):
        evaluate.evaluate_detections(_ground_truth(spec), {"final": dets}, spec,
                                     out_dir=tmp_path / "x", strata=True)


def test_a_component_that_finds_a_rotated_person_helps_the_rotated_stratum_only(tmp_path):
    """Row "b" adds an exact detection of D (rotated, small, overlapping) to row "a"'s."""
    gt = _ground_truth(COCO)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    dets = {"a": _detections(COCO), "b": _detections(COCO) + [_det("D", 0.5, COCO)]}
    eval_dirs = {(r, s, "final"): _eval_dir(tmp_path / r / str(s), gt, dets[r], COCO)
                 for r in ("a", "b") for s in (0, 1)}
    table = strata.strata_deltas(eval_dirs, ["a", "b"], [0, 1], ["final"], gt_path, COCO, n_boot=50)
    assert list(table["stratum"]) == list(strata.STRATA)
    by = table.set_index("stratum")
    for s in ("upright", "large", "isolated"):  # D is ignored there: its detection changes nothing
        assert by.loc[s, "delta"] == 0.0 and by.loc[s, "verdict"] == "no change"
    for s in ("rotated", "small", "overlapping"):  # two images: an honest, wide interval
        assert by.loc[s, "ci_low"] < by.loc[s, "delta"] < by.loc[s, "ci_high"]
        assert by.loc[s, "delta"] > 0 and by.loc[s, "verdict"] != "no change"
    # rotated: row a as worked out above (51 x .5 / 101), row b finds D last: .5 up to recall 1
    assert by.loc["rotated", "delta"] == pytest.approx(0.5 - 51 * 0.5 / 101, abs=1e-12)
    assert (by["persons"] == 2).all() and (by["component"] == "b").all()
    shown = strata.strata_display(table)
    assert list(shown.columns) == [f"{s} (2)" for s in strata.STRATA]
    assert shown.loc[("b", "final"), "upright (2)"] == "0.0 [0.0, 0.0]"
    fig = strata.strata_plot(table, title="t")
    assert len(fig.axes) == 3
    empty = pd.DataFrame(columns=strata.COLUMNS)
    assert len(strata.strata_plot(empty).axes) == 1 and strata.strata_display(empty).empty


@pytest.mark.parametrize("spec", [COCO, CROWDPOSE], ids=["pycocotools", "xtcocotools"])
def test_one_oks_pass_per_ignore_set_equals_evaluating_a_relabelled_file(spec):
    """evaluate.matchings_ignoring (the strata's fast path) against COCOeval run on a copy of
    the ground truth with the persons outside the set unlabelled (strata.ignore_outside), on
    40 random images of overlapping persons and noisy, duplicated and background
    detections."""
    rng = np.random.default_rng(7)
    k = spec.num_keypoints
    images, anns, dets = [], [], []
    for image in range(1, 41):
        images.append({"id": image, "file_name": f"{image}.png", "width": 200, "height": 200,
                       "crowdIndex": 0.2})
        for _ in range(rng.integers(0, 5)):
            x, y, side = rng.uniform(0, 120), rng.uniform(0, 120), rng.uniform(15, 80)
            xy = np.stack([x + side * rng.uniform(0, 1, k), y + side * rng.uniform(0, 1, k)], 1)
            vis = np.where(rng.uniform(size=k) < 0.15, 0.0, 2.0)
            anns.append({"id": len(anns) + 1, "image_id": image, "category_id": 1, "iscrowd": 0,
                         "bbox": [x, y, side, side], "area": side * side,
                         "keypoints": np.column_stack([xy * (vis > 0)[:, None], vis]).ravel().tolist(),
                         "num_keypoints": int((vis > 0).sum())})
            for _ in range(rng.integers(0, 3)):  # misses, hits and duplicates
                noisy = xy + rng.normal(0, rng.uniform(0.5, 6), xy.shape)
                dets.append({"image_id": image, "category_id": 1, "score": float(rng.uniform()),
                             "keypoints": np.column_stack([noisy, np.ones(k)]).ravel().tolist()})
        if rng.uniform() < 0.3:  # background
            dets.append({"image_id": image, "category_id": 1, "score": float(rng.uniform()),
                         "keypoints": np.column_stack([rng.uniform(0, 200, (k, 2)), np.ones(k)]).ravel().tolist()})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "keypoints": list(spec.keypoints), "skeleton": []}]}
    ids = [a["id"] for a in anns]
    sets = {"none": set(), "half": set(ids[::2]), "random": {i for i in ids if rng.uniform() < 0.7}}
    fast = evaluate.matchings_ignoring(gt, dets, spec, sets)
    for name, ignored in sets.items():
        _, slow = evaluate.evaluate_matching(strata.ignore_outside(gt, set(ids) - ignored), dets, spec)
        for field in dataclasses.fields(stats.Matching):
            assert np.array_equal(getattr(fast[name], field.name), getattr(slow, field.name)), (name, field.name)
    assert stats.average_precision(fast["half"]) != stats.average_precision(fast["none"])
