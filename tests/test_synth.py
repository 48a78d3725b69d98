"""SynthPose: determinism, COCO validity, label/pixel agreement, mirroring, bad arguments."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO as CocoApi
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from arkpose.cli import synth as cli
from arkpose.data import synth, synth_card
from arkpose.data import synth_render as R
from arkpose.spec import COCO

SMALL = {"train": 6, "val": 3, "progress": False, "card": False}


def _tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _person(**kw) -> R.Person:
    """A plain, upright, front-facing person with neutral angles and proportions."""
    base = {"center": (64.0, 64.0), "height_px": 100.0, "rotation_deg": 0.0, "yaw_deg": 0.0,
            "pose": "standing",
            "angles": (0.0,) * 3 + (0.0, 12.0, 5.0) * 2 + (0.0, 4.0, 2.0) * 2,
            "proportions": (1.0,) * len(R.BODY)}
    base.update(kw)
    return R.Person(**base)


def _scene(persons, size=128, **kw) -> R.Scene:
    return R.Scene(size=size, persons=persons,
                   background={"kind": "flat", "color": (128, 128, 128)}, **kw)


def _paint(scene):
    painted = R.paint_scene(scene, keep_masks=True)
    return painted, R.annotate(scene, painted, tiny_px=16.0)


# -- determinism ---------------------------------------------------------------------------


def test_generation_is_deterministic_and_independent_of_workers(tmp_path):
    a = synth.generate(tmp_path / "a", "smoke", seed=3, workers=1, **SMALL)
    b = synth.generate(tmp_path / "b", "smoke", seed=3, workers=2, **SMALL)
    ha, hb = _tree_hash(a), _tree_hash(b)
    assert len(ha) == 6 + 3 + 2 + 1  # images, two json files, manifest
    assert ha == hb
    c = synth.generate(tmp_path / "c", "smoke", seed=4, workers=1, **SMALL)
    assert _tree_hash(c) != ha  # the seed matters


def test_render_sample_is_a_pure_function_of_seed_split_index():
    cfg = synth.make_config("smoke", size=96)
    img1, anns1 = synth.render_sample(cfg, 7, "val", 5)
    synth.render_sample(cfg, 7, "val", 6)  # other work in between changes nothing
    img2, anns2 = synth.render_sample(cfg, 7, "val", 5)
    assert img1.dtype == np.uint8 and img1.shape == (96, 96, 3)
    assert np.array_equal(img1, img2) and anns1 == anns2
    img3, _ = synth.render_sample(cfg, 7, "train", 5)
    assert not np.array_equal(img1, img3)


def test_regenerating_with_same_arguments_is_a_noop(tmp_path):
    out = synth.generate(tmp_path / "d", "smoke", seed=1, **SMALL)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert synth.generate(tmp_path / "d", "smoke", seed=1, **SMALL) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamp
    with pytest.raises(synth.SynthError, match="other arguments"):
        synth.generate(tmp_path / "d", "smoke", seed=2, **SMALL)
    synth.generate(tmp_path / "d", "smoke", seed=2, overwrite=True, **SMALL)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- COCO validity -------------------------------------------------------------------------


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())


@pytest.mark.parametrize("split", ["train", "val"])
def test_ground_truth_as_predictions_scores_ap_one(synth_dir, split):
    ann_file = synth_dir / "annotations" / f"person_keypoints_{split}.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = CocoApi(str(ann_file))
        dets = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                 "score": 1.0} for a in gt.dataset["annotations"]
                if not a["iscrowd"] and a["num_keypoints"] > 0]
        assert dets, "the fixture should contain labelled persons"
        ev = COCOeval(gt, gt.loadRes(dets), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP
    assert ev.stats[5] == pytest.approx(1.0)  # AR
    data = gt.dataset
    assert data["categories"] == [COCO.coco_category()]
    assert all(isinstance(im["id"], int) for im in data["images"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    for im in data["images"]:
        assert int(Path(im["file_name"]).stem) != im["id"]  # names do not carry the ids
        assert (synth_dir / "images" / split / im["file_name"]).is_file()


def test_annotations_are_consistent_with_their_masks(synth_dir):
    data = _load(synth_dir, "train")
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    n_crowd = 0
    for a in data["annotations"]:
        h, w = sizes[a["image_id"]]
        m = mask_utils.decode(mask_utils.frPyObjects(a["segmentation"], h, w))
        assert int(m.sum()) == a["area"] > 0
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                             ys.max() - ys.min() + 1]
        kp = np.asarray(a["keypoints"], float).reshape(17, 3)
        assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
        assert (kp[kp[:, 2] == 0, :2] == 0).all()  # unlabelled: (0, 0, 0) as in COCO
        lab = kp[kp[:, 2] > 0]
        assert ((lab[:, :2] >= 0) & (lab[:, :2] <= 127)).all()
        n_crowd += a["iscrowd"]
        if a["iscrowd"] or a["synth"]["height_px"] < 16:
            assert a["num_keypoints"] == 0
    assert all(0 <= im["crowdIndex"] for im in data["images"])


def test_keypoint_dataset_reads_the_output_unchanged(synth_dir):
    from arkpose.data.coco import KeypointDataset

    data = _load(synth_dir, "val")
    ds = KeypointDataset(synth_dir / "annotations" / "person_keypoints_val.json",
                         synth_dir / "images" / "val", COCO)
    assert len(ds) == len(data["images"])
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for i in range(len(ds)):
        s = ds[i]
        anns = by_image.get(s["image_id"], [])
        assert s["image"].shape == (128, 128, 3)
        assert len(s["keypoints"]) == len(anns)
        for got, a in zip(s["keypoints"], anns):
            np.testing.assert_allclose(got.reshape(-1), a["keypoints"], atol=1e-4)
        ignored = [a for a in anns if a["iscrowd"] or a["num_keypoints"] == 0]
        if ignored:
            assert (s["ignore_mask"] == 0).sum() > 0


def test_rle_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = np.zeros((23, 31), bool)
        x0, y0 = rng.integers(0, 10, 2)
        x1, y1 = x0 + rng.integers(1, 20), y0 + rng.integers(1, 12)
        crop = rng.random((y1 - y0, x1 - x0)) < 0.5
        m[y0:y1, x0:x1] = crop
        rle = R.rle_uncompressed(crop, (x0, y0, x1, y1), m.shape)
        assert sum(rle["counts"]) == m.size
        got = mask_utils.decode(mask_utils.frPyObjects(rle, 23, 31)).astype(bool)
        assert np.array_equal(got, m)


# -- labels agree with pixels ------------------------------------------------------------


def test_labelled_keypoints_lie_on_their_persons_silhouette():
    cfg = synth.make_config("full", size=128)
    checked = 0
    for index in range(12):
        _, painted, anns = synth.render_scene(cfg, 0, "train", index, keep_masks=True)
        slots = painted.label // R.SLOT
        for a in anns:
            if a["iscrowd"] or a["num_keypoints"] == 0:
                continue
            i = a["synth"]["depth_order"]
            own = ndimage.distance_transform_edt(~painted.masks[i])
            seen = ndimage.distance_transform_edt(slots != R.FIRST_PERSON_SLOT + i)
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)
            for x, y, v in kp:
                if v == 0:
                    continue
                px, py = round(x), round(y)
                assert own[py, px] <= 2.0, (index, i)
                if v == 2:  # a visible keypoint is on the visible silhouette
                    assert seen[py, px] <= 2.0, (index, i)
                checked += 1
    assert checked > 100


def test_occlusion_flags_follow_the_nearer_persons_mask():
    back = _person(center=(52.0, 64.0))
    front = _person(center=(74.0, 66.0), yaw_deg=10.0, shirt=(200.0, 40.0, 40.0))
    painted, anns = _paint(_scene([back, front]))
    a_back, a_front = anns
    assert a_back["synth"]["depth_order"] == 0 and a_front["synth"]["depth_order"] == 1
    cover = painted.masks[1]
    kp = np.asarray(a_back["keypoints"], float).reshape(17, 3)
    hidden = shown = 0
    for k, (x, y, v) in enumerate(kp):
        assert v > 0
        covered = cover[round(y), round(x)]
        assert v == (1 if covered else 2), COCO.keypoints[k]
        hidden += covered
        shown += not covered
    assert hidden >= 3 and shown >= 3  # the construction really overlaps
    assert (np.asarray(a_front["keypoints"])[2::3] == 2).all()
    # the hidden person's visible area shrank by exactly the covered pixels
    assert a_back["area"] == int((painted.masks[0] & ~cover).sum())


def test_facing_rules_for_face_keypoints():
    cases = {"front": 0.0, "back": 180.0, "profile_right": 90.0, "profile_left": -90.0}
    got, side = {}, {}
    for name, yaw in cases.items():
        _, anns = _paint(_scene([_person(yaw_deg=yaw)]))
        kp = np.asarray(anns[0]["keypoints"]).reshape(17, 3)
        got[name] = kp[:5, 2].tolist()
        side[name] = np.sign(kp[[5, 11, 13], 0] - kp[[6, 12, 14], 0]).tolist()
    # a person facing the camera shows its left side on the image's right
    assert side["front"] == [1, 1, 1] and side["back"] == [-1, -1, -1]
    assert got["front"] == [2, 2, 2, 2, 2]
    assert got["back"] == [0, 0, 0, 2, 2]
    # facing image right shows the right side: the left eye and ear are the far ones
    assert got["profile_right"] == [2, 1, 2, 1, 2]
    assert got["profile_left"] == [2, 2, 1, 2, 1]


def test_outside_and_tiny_persons():
    off = _person(center=(64.0, 130.0))  # legs below the image
    tiny = _person(center=(20.0, 20.0), height_px=12.0)
    _, anns = _paint(_scene([tiny, off]))
    a_tiny, a_off = anns
    assert a_tiny["num_keypoints"] == 0 and a_tiny["area"] > 0
    kp = np.asarray(a_off["keypoints"], float).reshape(17, 3)
    assert (kp[13:, 2] == 0).all() and (kp[:5, 2] == 2).all()
    assert a_off["num_keypoints"] == int((kp[:, 2] > 0).sum()) < 17


def test_crowd_index_matches_the_crowdpose_definition():
    def ann(points, box):
        kp = []
        for x, y in points:
            kp += [x, y, 2]
        kp += [0, 0, 0] * (17 - len(points))
        return {"iscrowd": 0, "num_keypoints": len(points), "keypoints": kp, "bbox": box}

    a = ann([(1, 1), (2, 2), (3, 3), (4, 4)], [0, 0, 5, 5])
    b = ann([(4.5, 4.5), (20, 20)], [4, 4, 17, 17])
    # a's box holds 1 of b's joints (1/4); b's box holds 1 of a's joints (1/2)
    assert R.crowd_index([a, b]) == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert R.crowd_index([a]) == 0.0


# -- mirroring ---------------------------------------------------------------------------


def _mirror(p: R.Person, size: int) -> R.Person:
    """The mirror image of a person: x -> S-1-x, left and right limbs swapped."""
    a = p.angles
    return dataclasses.replace(
        p, center=(size - 1 - p.center[0], p.center[1]), rotation_deg=-p.rotation_deg,
        yaw_deg=-p.yaw_deg, angles=(a[0], -a[1], a[2], *a[6:9], *a[3:6], *a[12:15],
                                    *a[9:12]),
        shirt_pattern=(p.shirt_pattern[0], p.shirt_pattern[1], 180 - p.shirt_pattern[2],
                       p.shirt_pattern[3]),
        trouser_pattern=(p.trouser_pattern[0], p.trouser_pattern[1],
                         180 - p.trouser_pattern[2], p.trouser_pattern[3]))


def test_mirroring_gives_the_mirrored_annotation():
    cfg = synth.make_config("full", size=128)
    flip = np.asarray(COCO.flip_index)
    n_checked = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        persons = [R.sample_person(rng, cfg, rng.uniform(30, 98, 2), rng.uniform(40, 110))
                   for _ in range(2)]
        p0, a0 = _paint(_scene(persons))
        p1, a1 = _paint(_scene([_mirror(p, 128) for p in persons]))
        # the picture is the mirror image up to rasterisation at shape borders
        m0, m1 = p0.label > 0, p1.label[:, ::-1] > 0
        assert (m0 & m1).sum() / (m0 | m1).sum() > 0.95
        assert len(a0) == len(a1)
        for x, y in zip(a0, a1):
            k0 = np.asarray(x["keypoints"], float).reshape(17, 3)
            k1 = np.asarray(y["keypoints"], float).reshape(17, 3)[flip]
            lab = (k0[:, 2] > 0) & (k1[:, 2] > 0)
            np.testing.assert_allclose(k1[lab, 0], 127 - k0[lab, 0], atol=0.011)
            np.testing.assert_allclose(k1[lab, 1], k0[lab, 1], atol=0.011)
            # visibility may differ only where a keypoint sits on a rasterised border
            assert (k1[:, 2] != k0[:, 2]).sum() <= 1
            assert y["synth"]["rotation_deg"] == pytest.approx(-x["synth"]["rotation_deg"],
                                                               abs=1e-3)
            n_checked += int(lab.sum())
    assert n_checked > 100


# -- stored rotation and scale -------------------------------------------------------------


def _torso(kp: np.ndarray) -> tuple[float, float]:
    """(angle in degrees of hips->shoulders, clockwise from up; its length)."""
    d = kp[[5, 6], :2].mean(0) - kp[[11, 12], :2].mean(0)
    return math.degrees(math.atan2(d[0], -d[1])), float(np.hypot(*d))


@pytest.mark.parametrize("rotation", [-150.0, -30.0, 0.0, 45.0, 170.0])
@pytest.mark.parametrize("yaw", [0.0, 90.0, 180.0])
def test_stored_rotation_and_height_are_the_keypoint_geometry(rotation, yaw):
    h = 90.0
    p = _person(rotation_deg=rotation, height_px=h, yaw_deg=yaw, center=(300.0, 300.0))
    painted, _ = _paint(_scene([p], size=600))
    angle, length = _torso(painted.keypoints[0])
    assert (angle - rotation + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-6)
    assert length == pytest.approx(R.BODY["torso"] * h)


def test_generated_rotation_and_height_agree_with_keypoints():
    cfg = synth.make_config("full", size=128)
    n = 0
    for index in range(40):
        _, _, anns = synth.render_scene(cfg, 1, "train", index)
        for a in anns:
            s = a.get("synth", {})
            kp = np.asarray(a["keypoints"], float).reshape(17, 3)
            if s.get("pose") not in ("standing", "walking") or (kp[[5, 6, 11, 12], 2] == 0).any():
                continue
            angle, length = _torso(kp)
            assert abs((angle - s["rotation_deg"] + 180) % 360 - 180) < 20
            assert 0.2 < length / s["height_px"] < 0.4
            n += 1
    assert n >= 20


# -- arguments and failures ----------------------------------------------------------------


def _no_leftovers(parent: Path, name: str) -> bool:
    return not (parent / name).exists() and not [
        p for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_bad_arguments_raise_clear_errors_and_write_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(synth.SynthError, match="train count must be a non-negative"):
        synth.generate(out, "smoke", train=-1, progress=False)
    with pytest.raises(synth.SynthError, match="unknown SynthPose preset 'huge'"):
        synth.generate(out, "huge", progress=False)
    with pytest.raises(synth.SynthError, match="size must be"):
        synth.generate(out, "smoke", size=8, progress=False)
    with pytest.raises(synth.SynthError, match="unknown SynthConfig knob 'persons'"):
        synth.generate(out, "smoke", overrides={"persons": 3}, progress=False)
    with pytest.raises(synth.SynthError, match="workers"):
        synth.generate(out, "smoke", workers=0, progress=False)
    assert _no_leftovers(tmp_path, "ds")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(synth.SynthError, match="cannot write"):
        synth.generate(blocker / "ds", "smoke", progress=False, train=1, val=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("x")
    with pytest.raises(synth.SynthError, match="not empty"):
        synth.generate(tmp_path / "full", "smoke", progress=False)
    with pytest.raises(synth.SynthError, match="not empty"):  # --force never deletes it
        synth.generate(tmp_path / "full", "smoke", progress=False, overwrite=True)
    assert (tmp_path / "full" / "other.txt").read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_unwritable_output_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(synth.SynthError, match="cannot write"):
            synth.generate(ro / "ds", "smoke", train=1, val=1, progress=False)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_failure_midway_leaves_no_partial_dataset(tmp_path, monkeypatch):
    real = synth._render_range
    calls = []

    def flaky(*args):
        calls.append(args[3])
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(synth, "_render_range", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.generate(tmp_path / "ds", "smoke", train=4, val=4, progress=False, card=False)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["--out", str(out), "--preset", "smoke", "--train", "2", "--val", "1",
                     "--size", "64", "--quiet", "--no-card", "--set", "max_persons=2"]) == 0
    data = _load(out, "val")
    assert data["images"][0]["width"] == 64
    assert json.loads((out / "manifest.json").read_text())["config"]["max_persons"] == 2
    assert cli.main(["--out", str(tmp_path / "x"), "--preset", "smoke", "--train", "-5"]) == 2
    assert "--train must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path / "x"), "--preset", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    assert cli.main(["--out", str(tmp_path / "x"), "--preset", "smoke", "--set", "bogus=1"]) == 2
    assert "unknown SynthConfig knob 'bogus'" in capsys.readouterr().err
    assert _no_leftovers(tmp_path, "x")


def test_card_is_written(tmp_path):
    out = synth.generate(tmp_path / "card", "smoke", train=4, val=2, progress=False)
    text = (out / "card" / "card.md").read_text()
    assert "| train | 4 |" in text
    for name in ("histograms.png", "samples_train.png", "samples_val.png"):
        assert (out / "card" / name).stat().st_size > 1000


def test_generating_does_not_import_torch(tmp_path):
    # `arkpose synth` needs numpy and PIL only; importing torch would add ~3 s per call.
    code = (
        "import sys\n"
        "from arkpose.cli import synth\n"
        f"assert synth.main(['--out', {str(tmp_path / 'ds')!r}, '--preset', 'smoke', '--train', '2',"
        " '--val', '1', '--quiet']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "False"


def test_benchmark_shares_on_hand_made_persons():
    def person(image, box, rotation, height, keypoints=1):
        return {"image_id": image, "bbox": box, "iscrowd": 0, "num_keypoints": keypoints,
                "synth": {"rotation_deg": rotation, "height_px": height}}

    data = {"annotations": [
        person(1, [0, 0, 10, 10], 0.0, 10.0), person(1, [5, 0, 10, 10], 50.0, 20.0),  # IoU 1/3
        person(2, [0, 0, 10, 10], -46.0, 30.0), person(2, [8, 8, 10, 10], 10.0, 40.0),  # IoU 4/196
        person(3, [0, 0, 4, 4], 180.0, 50.0, keypoints=0),  # unlabelled: a partner, not counted
        person(3, [0, 0, 4, 5], 45.0, 60.0),  # IoU 0.8 with the unlabelled one
        {"image_id": 3, "bbox": [0, 0, 4, 5], "iscrowd": 1, "num_keypoints": 0},  # not a person
    ]}
    shares = synth_card.benchmark_shares(data)
    assert shares["persons"] == 5
    assert shares["rotated"] == pytest.approx(2 / 5)  # 50 and -46; 45 is not beyond 45
    assert shares["overlapping"] == pytest.approx(3 / 5)
    p10, p90 = np.percentile([10, 20, 30, 40, 60], [10, 90])
    assert shares["height_p90_p10"] == pytest.approx(p90 / p10)
    line = synth_card.format_shares("val", shares)
    assert "40% rotated" in line and "60% overlapping" in line and "below the floor" not in line


def test_the_table4_benchmark_meets_the_floors_and_the_cli_prints_them(tmp_path, capsys):
    out = tmp_path / "t4"
    assert cli.main(["--out", str(out), "--preset", "table4", "--train", "0", "--val", "300",
                     "--quiet", "--no-card"]) == 0
    printed = capsys.readouterr().out
    assert "val: " in printed and "rotated beyond +-45 deg" in printed and "below the floor" not in printed
    shares = synth_card.benchmark_shares(_load(out, "val"))
    for key, floor in synth_card.BENCHMARK_FLOORS.items():
        assert shares[key] >= floor, key
    quick = synth_card.benchmark_shares(_load(synth.generate(tmp_path / "q", "quick", train=0, val=300,
                                                              progress=False, card=False), "val"))
    assert quick["rotated"] < synth_card.BENCHMARK_FLOORS["rotated"]  # why table4 exists
