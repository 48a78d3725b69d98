"""arkpose.targets against the official generators' formulas (DEKR's HeatmapGenerator,
OffsetGenerator and CocoKeypoints.get_mask), by hand, at non-integer, x.5, border and
outside positions (issue 14)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from arkpose.spec import KeypointSpec
from arkpose.targets import make_targets

TWO = KeypointSpec(
    name="two", keypoints=("a", "b"), flip_index=(1, 0), limbs=((0, 1),), skeleton=((0, 1),),
    sigmas=(0.1, 0.1), torso=((0, 1),),
)


def ann(points, bbox=(0, 0, 100, 100), area=5000.0, **extra) -> dict:
    """Two-keypoint person; ``points`` maps joint -> input (x, y), the others unlabelled."""
    kps = np.zeros((2, 3))
    for j, (x, y) in points.items():
        kps[j] = (x, y, 2)
    out = {"keypoints": kps.ravel().tolist(), "bbox": list(bbox), "area": area, "iscrowd": 0,
           "num_keypoints": len(points)}
    out.update(extra)
    return out


def g(u, v, x, y, sigma=2.0):
    return math.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * sigma**2))


def test_window_of_an_x5_keypoint_uses_the_float_coordinate():
    # Input 128 -> grid 32. Joint 0 at input (42, 30) -> grid (10.5, 7.5).
    heat = make_targets([ann({0: (42.0, 30.0)})], 128, 32, TWO, min_center_area=1e9)["heatmaps"]
    h = heat[0].numpy()
    # x: [floor(10.5 - 7), ceil(10.5 + 8)) = [3, 19); y: [floor(0.5), ceil(15.5)) = [0, 16).
    # Truncating to int(10.5) = 10 first would end the window at 18 (and at 16 in y).
    assert np.array_equal(np.flatnonzero(h[7] > 0), np.arange(3, 19))
    assert np.array_equal(np.flatnonzero(h[:, 10] > 0), np.arange(0, 16))
    assert h[7, 18] == pytest.approx(g(18, 7, 10.5, 7.5), abs=1e-7)  # 0.00088
    assert h[15, 10] == pytest.approx(g(10, 15, 10.5, 7.5), abs=1e-7)
    assert h[7, 10] == pytest.approx(g(10, 7, 10.5, 7.5), abs=1e-7)
    assert h[7, 3] == pytest.approx(g(3, 7, 10.5, 7.5), abs=1e-7)


def test_near_and_outside_the_border():
    # Grid x = -0.5 (outside: the float is < 0 although int(-0.5) = 0), x = 31.9 (inside),
    # y = 32.0 (outside).
    for x, y, drawn in ((-2.0, 40.0, False), (127.6, 40.0, True), (40.0, 128.0, False)):
        heat = make_targets([ann({0: (x, y)})], 128, 32, TWO, min_center_area=1e9)["heatmaps"]
        assert bool(heat[0].max() > 0) is drawn, (x, y)
    h = make_targets([ann({0: (127.6, 40.0)})], 128, 32, TWO, min_center_area=1e9)["heatmaps"][0]
    # x = 31.9: [floor(24.9), ceil(39.9)) = [24, 40) clipped to [24, 32).
    assert np.array_equal(np.flatnonzero(h[10].numpy() > 0), np.arange(24, 32))
    assert h[10, 31].item() == pytest.approx(g(31, 10, 31.9, 10.0), abs=1e-7)
    # Joint 1 at grid 0.5 (input 2): window [floor(-6.5), ceil(8.5)) = [0, 9) after clipping.
    h = make_targets([ann({1: (2.0, 40.0)})], 128, 32, TWO, min_center_area=1e9)["heatmaps"][1]
    assert np.array_equal(np.flatnonzero(h[10].numpy() > 0), np.arange(0, 9))
    assert h[10, 8].item() == pytest.approx(g(8, 10, 0.5, 10.0), abs=1e-7)


def test_center_window_and_offsets_at_a_center_left_of_the_map():
    # Joints at grid (-1.5, 10) and (0.5, 10): center (-0.5, 10). The center heatmap tests the
    # float (-0.5 < 0: no peak); the offset generator tests int(-0.5) = 0 (in the map), so
    # offsets fill range(0 - 4, 0 + 4) x range(10 - 4, 10 + 4) clipped: x 0..3, y 6..13, for
    # the joint inside the map only.
    t = make_targets([ann({0: (-6.0, 40.0), 1: (2.0, 40.0)})], 128, 32, TWO)
    assert np.all(t["heatmaps"][2].numpy() == 0)
    off, wt = t["offsets"].numpy(), t["offset_weights"].numpy()
    support = np.zeros((32, 32), bool)
    support[6:14, 0:4] = True
    assert np.array_equal(wt[2] > 0, support) and np.all(wt[0:2] == 0)
    assert off[2, 6, 3] == pytest.approx(0.5 - 3) and off[3, 13, 0] == pytest.approx(10 - 13)
    # A center at grid x = 32.2 (int 32, outside): neither peak nor offsets.
    t = make_targets([ann({0: (124.8, 40.0), 1: (132.8, 40.0)})], 128, 32, TWO)
    assert np.all(t["heatmaps"][2].numpy() == 0) and np.all(t["offset_weights"].numpy() == 0)


def test_center_sigma_4_window_at_a_fractional_center():
    # Center = joint mean = grid (12.25, 20.75); σ 4: x [floor(12.25 - 13), ceil(12.25 + 14))
    # = [-1, 27) -> [0, 27); y [floor(7.75), ceil(34.75)) = [7, 35) -> [7, 32).
    t = make_targets([ann({0: (45.0, 83.0), 1: (53.0, 83.0)})], 128, 32, TWO)
    c = t["heatmaps"][2].numpy()
    assert np.array_equal(np.flatnonzero(c[20] > 0), np.arange(0, 27))
    assert np.array_equal(np.flatnonzero(c[:, 12] > 0), np.arange(7, 32))
    assert c[20, 26] == pytest.approx(g(26, 20, 12.25, 20.75, 4.0), abs=1e-7)
    # The union tradeoff mask is 1 exactly on the joint and center windows.
    trade = t["tradeoff_mask"].numpy()[0]
    assert trade[20, 26] == 1 and trade[20, 27] == pytest.approx(0.1)
    assert trade[6, 12] == pytest.approx(0.1) and trade[7, 12] == 1


def test_unlabelled_polygon_is_rasterised_at_input_resolution_then_sampled():
    # Square polygon over input 17..31: pycocotools fills input columns/rows 17..30; the map
    # samples input pixel 4u, so grid u = 5, 6, 7 (20, 24, 28). Scaling the polygon to the grid
    # first (4.25..7.75) would also mask u = 4.
    unlabelled = ann({}, bbox=(17, 17, 14, 14), segmentation=[[17, 17, 31, 17, 31, 31, 17, 31]])
    ign = make_targets([unlabelled], 128, 32, TWO)["ignore_mask"][0].numpy()
    expected = np.ones((32, 32), np.float32)
    expected[5:8, 5:8] = 0
    assert np.array_equal(ign, expected)


@pytest.mark.parametrize("seed", range(3))
def test_ignore_mask_is_the_official_full_resolution_mask_sampled(seed):
    """CocoKeypoints.get_mask: frPyObjects + decode at image resolution, summed, < 0.5; the
    identity warp to the 32-px map reads mask[4v, 4u]."""
    rng = np.random.default_rng(seed)
    anns = []
    for _ in range(4):
        c = rng.uniform(10, 118, 2)
        poly = (c + rng.uniform(-20, 20, (int(rng.integers(3, 7)), 2))).ravel().tolist()
        anns.append(ann({}, bbox=(c[0] - 5, c[1] - 5, 10, 10), segmentation=[poly],
                        iscrowd=int(rng.integers(0, 2))))
    full = np.zeros((128, 128))
    for a in anns:
        for rle in mask_utils.frPyObjects(a["segmentation"], 128, 128):
            full += mask_utils.decode(rle)
    official = (full < 0.5).astype(np.float32)[::4, ::4]
    ign = make_targets(anns, 128, 32, TWO)["ignore_mask"][0].numpy()
    assert np.array_equal(ign, official)
