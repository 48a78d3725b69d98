"""arkpose.targets: hand-computed values, ownership, masks, and a literal per-pixel reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from arkpose.spec import COCO, KeypointSpec
from arkpose.targets import TargetError, make_targets

TINY = KeypointSpec(
    name="tiny", keypoints=("nose", "left_eye", "right_eye", "neck"),
    flip_index=(0, 2, 1, 3), limbs=((0, 1), (0, 2)), skeleton=((0, 1), (0, 2), (0, 3)),
    sigmas=(0.1, 0.1, 0.1, 0.1), torso=((0, 3),),
)


def person(points: dict[int, tuple[float, float]], bbox, area=None, k=4, **extra) -> dict:
    kps = np.zeros((k, 3))
    for j, (x, y) in points.items():
        kps[j] = (x, y, 2)
    ann = {"keypoints": kps.ravel().tolist(), "bbox": list(bbox),
           "area": float(area if area is not None else bbox[2] * bbox[3]),
           "iscrowd": 0, "num_keypoints": len(points)}
    ann.update(extra)
    return ann


# ---------------------------------------------------------------------------------------
# One keypoint at a float position, every value by hand


def test_single_keypoint_values_by_hand():
    # Input 128 -> grid 32 (stride 4). Keypoint at input (41.0, 62.6) -> grid (10.25, 15.65).
    ann = person({0: (41.0, 62.6)}, bbox=(30, 50, 60, 90), area=5000)
    t = make_targets([ann], 128, 32, TINY)
    heat = t["heatmaps"].numpy()
    assert heat.shape == (5, 32, 32)
    x, y = 10.25, 15.65
    # Peak at the nearest pixel: column 10, row 16.
    assert np.unravel_index(heat[0].argmax(), heat[0].shape) == (16, 10)
    assert heat[0, 16, 10] == pytest.approx(math.exp(-(0.25**2 + 0.35**2) / 8), abs=1e-6)
    assert heat[0, 13, 12] == pytest.approx(math.exp(-((12 - x) ** 2 + (13 - y) ** 2) / 8), abs=1e-6)
    # Window [floor(x - 3σ - 1), ceil(x + 3σ + 2)) of the float x: [3, 19) in x, [8, 24) in y.
    assert heat[0, 16, 3] > 0 and heat[0, 16, 2] == 0
    assert heat[0, 16, 18] == pytest.approx(math.exp(-((18 - x) ** 2 + (16 - y) ** 2) / 8), abs=1e-7)
    assert heat[0, 16, 19] == 0
    assert heat[0, 8, 10] > 0 and heat[0, 7, 10] == 0 and heat[0, 23, 10] > 0 and heat[0, 24, 10] == 0
    assert np.all(heat[1:4] == 0)  # unlabelled joints
    # Center = the only labelled keypoint; σ = 4, window [-3, 25) clipped to [0, 25).
    assert heat[4, 16, 10] == pytest.approx(math.exp(-(0.25**2 + 0.35**2) / 32), abs=1e-6)
    assert heat[4, 2, 0] == pytest.approx(math.exp(-((0 - x) ** 2 + (2 - y) ** 2) / 32), abs=1e-6)
    assert heat[4, 16, 24] > 0 and heat[4, 16, 25] == 0
    # Union tradeoff mask: 1 in any window, 0.1 elsewhere.
    trade = t["tradeoff_mask"].numpy()
    assert trade.shape == (1, 32, 32)
    assert trade[0, 16, 10] == 1 and trade[0, 16, 24] == 1 and trade[0, 16, 25] == pytest.approx(0.1)
    np.testing.assert_allclose(np.unique(trade), [0.1, 1.0], rtol=1e-6)
    # Offsets on range(10 - 4, 10 + 4) x range(15 - 4, 15 + 4); keypoint - position.
    off, wt = t["offsets"].numpy(), t["offset_weights"].numpy()
    assert off.shape == wt.shape == (8, 32, 32)
    assert off[0, 11, 6] == pytest.approx(10.25 - 6) and off[1, 11, 6] == pytest.approx(15.65 - 11)
    assert off[0, 18, 13] == pytest.approx(10.25 - 13) and off[1, 18, 13] == pytest.approx(15.65 - 18)
    support = np.zeros((32, 32), bool)
    support[11:19, 6:14] = True
    assert np.array_equal(wt[0] > 0, support) and np.array_equal(wt[1] > 0, support)
    assert np.all(off[:, ~support] == 0)
    assert np.allclose(wt[0:2, support], 1 / math.sqrt(60 * 90))
    assert np.all(wt[2:] == 0) and np.all(off[2:] == 0)
    assert np.all(t["ignore_mask"].numpy() == 1)
    assert all(v.dtype == torch.float32 for v in t.values())


def test_per_keypoint_tradeoff_and_background_weight():
    ann = person({0: (41.0, 62.6)}, bbox=(30, 50, 60, 90), area=5000)
    t = make_targets([ann], 128, 32, TINY, tradeoff_mask="per_keypoint", background_weight=0.25)
    trade = t["tradeoff_mask"].numpy()
    assert trade.shape == (5, 32, 32)
    assert trade[0, 16, 18] == 1 and trade[0, 16, 19] == 0.25  # own window only, [3, 19)
    assert np.all(trade[1:4] == 0.25)  # no labelled keypoint of these types
    assert trade[4, 16, 24] == 1  # center window is wider
    off = make_targets([ann], 128, 32, TINY, background_weight=1.0)["tradeoff_mask"]
    assert torch.all(off == 1)  # tradeoff off


def test_paper_offset_normaliser():
    ann = person({0: (41.0, 62.6)}, bbox=(30, 50, 60, 90), area=5000)
    wt = make_targets([ann], 128, 32, TINY, offset_normaliser="paper")["offset_weights"]
    assert wt[0, 15, 10].item() == pytest.approx(1 / math.sqrt(60**2 + 90**2))


def test_center_falls_back_to_bbox_and_mean_of_labelled():
    unlabelled = person({}, bbox=(40, 40, 40, 40), area=1600, segmentation=[])
    t = make_targets([unlabelled], 128, 32, TINY, ignore_mask=np.ones((32, 32)))
    heat = t["heatmaps"].numpy()
    # bbox center (60, 60) input -> (15, 15) grid.
    assert heat[4, 15, 15] == pytest.approx(1.0)
    assert np.all(t["offset_weights"].numpy() == 0)  # nothing labelled -> no offsets
    two = person({0: (8.0, 8.0), 3: (24.0, 16.0)}, bbox=(0, 0, 64, 64))
    heat = make_targets([two], 128, 32, TINY)["heatmaps"].numpy()
    assert heat[4, 3, 4] == pytest.approx(1.0)  # mean (16, 12) input -> (4, 3) grid


def test_small_person_gets_no_center_and_no_offsets():
    small = person({0: (20.0, 20.0), 1: (24.0, 22.0)}, bbox=(16, 16, 30, 30), area=31.9**2)
    t = make_targets([small], 128, 32, TINY)
    assert torch.all(t["heatmaps"][4] == 0)
    assert torch.all(t["offsets"] == 0) and torch.all(t["offset_weights"] == 0)
    assert t["heatmaps"][0].max().item() > 0.9  # keypoints are still drawn
    big = dict(small, area=32.0**2)
    t = make_targets([big], 128, 32, TINY)
    assert t["heatmaps"][4].max().item() > 0.9 and t["offset_weights"].sum() > 0
    # The threshold is an option (and is compared in the annotation's units).
    t = make_targets([small], 128, 32, TINY, min_center_area=100)
    assert t["heatmaps"][4].max().item() > 0.9


def test_max_over_persons_not_sum():
    a = person({0: (40.0, 40.0)}, bbox=(0, 0, 80, 80))
    b = person({0: (44.0, 40.0)}, bbox=(0, 0, 80, 80))
    h = make_targets([a, b], 128, 32, TINY)["heatmaps"].numpy()
    assert h[0].max() == pytest.approx(1.0)
    assert h[0, 10, 10] == pytest.approx(1.0) and h[0, 10, 11] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------
# Ownership of overlapping offset squares (docs/method.md §2)


def _two_persons():
    # Centers (grid): A at (12, 12), B at (14, 13): the 8x8 squares overlap on
    # columns 10..15, rows 9..15. A (bbox 40x40 = 1600) labels joints 0 and 3;
    # B (bbox 100x100 = 10000, larger) labels 0, 2 and 3.
    a = person({0: (48.0, 48.0), 3: (48.0, 48.0)}, bbox=(28, 28, 40, 40))
    b = person({0: (56.0, 52.0), 2: (56.0, 52.0), 3: (56.0, 52.0)}, bbox=(6, 2, 100, 100))
    return a, b


def _owner(off, wt, j, y, x):
    """Which keypoint (by its grid position) the offset at (y, x) of joint j points at."""
    assert wt[2 * j, y, x] > 0
    return (x + off[2 * j, y, x], y + off[2 * j + 1, y, x])


def test_overlap_small_first_keeps_pixels_until_larger_fills_an_empty_channel():
    a, b = _two_persons()
    t = make_targets([a, b], 128, 32, TINY)
    off, wt = t["offsets"].numpy(), t["offset_weights"].numpy()
    pa, pb = (12.0, 12.0), (14.0, 13.0)
    y, x = 10, 11  # inside both squares
    # Joint 0: A wrote first; B is larger and A's area is smaller -> B's write is skipped.
    assert _owner(off, wt, 0, y, x) == pytest.approx(pa)
    assert wt[0, y, x] == pytest.approx(1 / 40)
    # Joint 2: A left it empty -> B writes it and takes the pixel (stored area = B's) ...
    assert _owner(off, wt, 2, y, x) == pytest.approx(pb)
    # ... so B also overwrites joint 3, which A had filled.
    assert _owner(off, wt, 3, y, x) == pytest.approx(pb)
    assert wt[6, y, x] == pytest.approx(1 / 100)
    # Outside the overlap each person keeps its own square.
    assert _owner(off, wt, 0, 8, 8) == pytest.approx(pa)
    assert _owner(off, wt, 3, 16, 17) == pytest.approx(pb)
    # The official "holds an offset" test is "nonzero": at A's own keypoint pixel (12, 12)
    # A's offset is exactly (0, 0), so the channel counts as empty and B writes there.
    assert _owner(off, wt, 0, 12, 12) == pytest.approx(pb)


def test_overlap_large_first_is_overwritten_by_smaller():
    a, b = _two_persons()
    t = make_targets([b, a], 128, 32, TINY)
    off, wt = t["offsets"].numpy(), t["offset_weights"].numpy()
    pa, pb = (12.0, 12.0), (14.0, 13.0)
    y, x = 10, 11
    assert _owner(off, wt, 0, y, x) == pytest.approx(pa)  # stored area 10000 >= 1600
    assert _owner(off, wt, 2, y, x) == pytest.approx(pb)  # A has no joint 2
    assert _owner(off, wt, 3, y, x) == pytest.approx(pa)


# ---------------------------------------------------------------------------------------
# Ignore mask


def test_crowd_polygon_zeroes_ignore_mask_and_gets_no_person_targets():
    crowd = {"keypoints": [0] * 12, "bbox": [20, 20, 40, 40], "area": 1600.0, "iscrowd": 1,
             "num_keypoints": 0, "segmentation": [[20, 20, 60, 20, 60, 60, 20, 60]]}
    t = make_targets([crowd], 128, 32, TINY)
    ign = t["ignore_mask"].numpy()[0]
    assert ign.shape == (32, 32)
    assert np.all(ign[6:14, 6:14] == 0)  # grid 5..15 is the polygon
    assert ign[0, 0] == 1 and ign[20, 20] == 1 and ign[31, 31] == 1
    assert torch.all(t["heatmaps"] == 0) and torch.all(t["offset_weights"] == 0)


def test_crowd_rle_and_unlabelled_polygon_zero_ignore_mask():
    m = np.zeros((128, 128), np.uint8, order="F")
    m[80:120, 8:40] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    crowd = {"keypoints": [0] * 12, "bbox": [8, 80, 32, 40], "area": 1280.0, "iscrowd": 1,
             "num_keypoints": 0, "segmentation": rle}
    unlabelled = person({}, bbox=(80, 8, 32, 32), segmentation=[[80, 8, 112, 8, 112, 40, 80, 40]])
    labelled = person({0: (100.0, 100.0)}, bbox=(90, 90, 20, 20),
                      segmentation=[[90, 90, 110, 90, 110, 110, 90, 110]])
    ign = make_targets([crowd, unlabelled, labelled], 128, 32, TINY)["ignore_mask"][0].numpy()
    assert np.all(ign[21:29, 3:9] == 0)  # RLE region (input rows 80..119, cols 8..39)
    assert np.all(ign[3:9, 21:27] == 0)  # unlabelled person's polygon
    assert np.all(ign[23:27, 23:27] == 1)  # a labelled person is not ignored
    assert ign[0, 0] == 1


def test_given_ignore_mask_is_used_at_grid_or_input_size():
    ann = person({0: (41.0, 62.6)}, bbox=(30, 50, 60, 90))
    grid = np.ones((32, 32), np.uint8)
    grid[:4] = 0
    t = make_targets([ann], 128, 32, TINY, ignore_mask=grid)
    assert np.array_equal(t["ignore_mask"][0].numpy(), grid)
    full = np.kron(grid, np.ones((4, 4), np.uint8))
    t2 = make_targets([ann], 128, 32, TINY, ignore_mask=full)
    assert torch.equal(t["ignore_mask"], t2["ignore_mask"])
    # Offsets are never masked.
    assert torch.equal(t["offsets"], make_targets([ann], 128, 32, TINY)["offsets"])
    with pytest.raises(TargetError, match="ignore_mask"):
        make_targets([ann], 128, 32, TINY, ignore_mask=np.ones((50, 50)))


# ---------------------------------------------------------------------------------------
# Inputs and options


def test_array_input_matches_dict_input_and_rectangular_sizes():
    rng = np.random.default_rng(1)
    anns = [person({j: tuple(rng.uniform(0, 120, 2)) for j in range(4)},
                   bbox=tuple(rng.uniform(10, 60, 4))) for _ in range(3)]
    a = make_targets(anns, (96, 128), (24, 32), TINY)
    arrays = {"keypoints": np.array([x["keypoints"] for x in anns]).reshape(3, 4, 3),
              "bboxes": np.array([x["bbox"] for x in anns]),
              "areas": np.array([x["area"] for x in anns]), "iscrowd": np.zeros(3),
              "num_keypoints": np.full(3, 4)}
    b = make_targets(arrays, (96, 128), (24, 32), TINY)
    assert a["heatmaps"].shape == (5, 24, 32)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_no_persons_and_bad_options():
    t = make_targets([], 64, 16, COCO)
    assert t["heatmaps"].shape == (18, 16, 16) and torch.all(t["heatmaps"] == 0)
    assert t["offsets"].shape == (34, 16, 16)
    assert torch.allclose(t["tradeoff_mask"], torch.full((1, 16, 16), 0.1))
    with pytest.raises(TargetError, match="tradeoff_mask"):
        make_targets([], 64, 16, COCO, tradeoff_mask="both")
    with pytest.raises(TargetError, match="offset_normaliser"):
        make_targets([], 64, 16, COCO, offset_normaliser="z")
    with pytest.raises(TargetError, match="expected 51"):
        make_targets([{"keypoints": [0] * 42, "bbox": [0, 0, 1, 1]}], 64, 16, COCO)


# ---------------------------------------------------------------------------------------
# A literal per-pixel transcription of docs/method.md §2, on random crowded scenes


def _reference(anns, size, out, k, sigma=2.0, center_sigma=4.0, min_area=32**2):
    s = out / size
    heat = np.zeros((k + 1, out, out))
    win = np.zeros((out, out), bool)
    off = np.zeros((2 * k, out, out))
    wt = np.zeros((2 * k, out, out))
    area_map = np.zeros((out, out))

    def gauss(ch, x, y, sg):  # DEKR's HeatmapGenerator: float bounds and window
        if x < 0 or y < 0 or x >= out or y >= out:
            return
        for r in range(max(0, math.floor(y - 3 * sg - 1)), min(out, math.ceil(y + 3 * sg + 2))):
            for c in range(max(0, math.floor(x - 3 * sg - 1)), min(out, math.ceil(x + 3 * sg + 2))):
                heat[ch, r, c] = max(heat[ch, r, c], math.exp(-((c - x) ** 2 + (r - y) ** 2) / (2 * sg**2)))
                win[r, c] = True

    for ann in anns:
        kp = np.array(ann["keypoints"], float).reshape(k, 3)
        kp[:, :2] *= s
        for j in range(k):
            if kp[j, 2] > 0:
                gauss(j, kp[j, 0], kp[j, 1], sigma)
        vis = kp[:, 2] > 0
        bx, by, bw, bh = ann["bbox"]
        c = kp[vis, :2].mean(0) if vis.any() else np.array([bx + bw / 2, by + bh / 2]) * s
        if ann["area"] < min_area:
            continue
        gauss(k, c[0], c[1], center_sigma)
        cx, cy = int(c[0]), int(c[1])
        if cx < 0 or cy < 0 or cx >= out or cy >= out:
            continue
        area = bw * bh
        for j in range(k):
            x, y, v = kp[j]
            if v <= 0 or x < 0 or y < 0 or x >= out or y >= out:
                continue
            for px in range(max(cx - 4, 0), min(cx + 4, out)):
                for py in range(max(cy - 4, 0), min(cy + 4, out)):
                    held = off[2 * j, py, px] != 0 or off[2 * j + 1, py, px] != 0
                    if held and area_map[py, px] < area:
                        continue
                    off[2 * j, py, px], off[2 * j + 1, py, px] = x - px, y - py
                    wt[2 * j, py, px] = wt[2 * j + 1, py, px] = 1 / math.sqrt(area)
                    area_map[py, px] = area
    return heat, np.where(win, 1.0, 0.1)[None], off, wt


@pytest.mark.parametrize("seed", range(4))
def test_matches_literal_reference_on_crowded_scenes(seed):
    rng = np.random.default_rng(seed)
    anns = []
    for _ in range(rng.integers(1, 7)):
        c = rng.uniform(10, 118, 2)
        kp = np.column_stack([c + rng.normal(0, 14, (4, 2)), rng.integers(0, 3, 4)])
        bw, bh = rng.uniform(20, 90, 2)
        anns.append({"keypoints": kp.ravel().tolist(), "bbox": [c[0] - bw / 2, c[1] - bh / 2, bw, bh],
                     "area": float(rng.uniform(500, 4000)), "iscrowd": 0,
                     "num_keypoints": int((kp[:, 2] > 0).sum()), "segmentation": [[0, 0, 1, 0, 1, 1]]})
    t = make_targets(anns, 128, 32, TINY)
    heat, trade, off, wt = _reference(anns, 128, 32, 4)
    np.testing.assert_allclose(t["heatmaps"].numpy(), heat, atol=1e-6)
    np.testing.assert_allclose(t["tradeoff_mask"].numpy(), trade, atol=1e-7)
    np.testing.assert_allclose(t["offsets"].numpy(), off, atol=1e-5)
    np.testing.assert_allclose(t["offset_weights"].numpy(), wt, rtol=1e-6)
