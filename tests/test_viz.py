"""arkpose.viz: drawings land where the data says, with left/right colours; PNGs are written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from arkpose import viz
from arkpose.spec import COCO
from arkpose.targets import make_targets


def one_person(cx=64.0, cy=64.0) -> np.ndarray:
    """A plausible upright COCO pose (1, 17, 3) around (cx, cy) in a 128 image."""
    rel = [(0, -40), (-4, -44), (4, -44), (-9, -42), (9, -42), (-14, -28), (14, -28),
           (-20, -10), (20, -10), (-24, 6), (24, 6), (-9, 6), (9, 6), (-10, 26), (10, 26),
           (-11, 46), (11, 46)]
    # Image left is the person's right (facing the viewer): left joints at +x.
    kps = np.array([(cx - dx, cy + dy, 2) for dx, dy in rel], np.float32)
    return kps[None]


def test_skeleton_colours_left_and_right():
    img = np.zeros((128, 128, 3), np.uint8)
    kps = one_person()
    out = viz.draw_skeleton(img, kps, COCO, radius=2)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.shares_memory(out, img)
    lw, rw = COCO.index("left_wrist"), COCO.index("right_wrist")
    x, y = kps[0, lw, :2].astype(int)
    assert tuple(out[y, x]) == viz.LEFT
    x, y = kps[0, rw, :2].astype(int)
    assert tuple(out[y, x]) == viz.RIGHT
    # Unlabelled joints (v = 0) are not drawn.
    kps[0, lw, 2] = 0
    x, y = kps[0, lw, :2].astype(int)
    assert tuple(viz.draw_skeleton(img, kps, COCO)[y, x]) != viz.LEFT
    assert np.all(img == 0)


def test_maps_offsets_and_masks_land_on_the_target(tmp_path):
    kps = one_person()
    ann = {"keypoints": kps[0].ravel().tolist(), "bbox": [40, 20, 50, 92], "area": 3000.0,
           "iscrowd": 0, "num_keypoints": 17}
    crowd = {"keypoints": [0] * 51, "bbox": [0, 96, 32, 32], "area": 1024.0, "iscrowd": 1,
             "num_keypoints": 0, "segmentation": [[0, 96, 32, 96, 32, 128, 0, 128]]}
    t = make_targets([ann, crowd], 128, 32, COCO)
    img = np.full((128, 128, 3), 60, np.uint8)
    heat = viz.draw_heatmaps(img, t["heatmaps"][:-1])
    nose = kps[0, 0, :2].astype(int)
    # The heat overlay changes the image most at a keypoint, not at an empty corner.
    assert np.abs(heat[nose[1], nose[0]].astype(int) - 60).sum() > 100
    assert np.array_equal(heat[2, 126], img[2, 126])
    center = viz.draw_center_map(img, t["heatmaps"][-1])
    c = kps[0, :, :2].mean(0).astype(int)
    assert np.abs(center[c[1], c[0]].astype(int) - 60).sum() > 100
    off = viz.draw_offsets(img, t["offsets"], t["offset_weights"], COCO)
    assert not np.array_equal(off[nose[1], nose[0]], img[nose[1], nose[0]])  # lines end on joints
    masked = viz.draw_mask(img, t["ignore_mask"])
    assert masked[110, 10, 0] > 120 and np.array_equal(masked[10, 110], img[10, 110])
    panel = viz.draw_targets(img, t, COCO, keypoints=kps)
    assert panel.shape == (256, 256, 3)
    path = viz.save_png(panel, tmp_path / "sub" / "targets.png")
    assert np.array_equal(np.asarray(Image.open(path)), panel)


def test_grid_tiles_and_rejects_empty():
    tiles = [np.full((10, 12, 3), i * 40, np.uint8) for i in range(5)]
    g = viz.grid(tiles, columns=3, pad=2)
    assert g.shape == (2 * 12 + 2, 3 * 14 + 2, 3)
    assert np.all(g[2:12, 2 + 14:14 + 14] == 40)
    with pytest.raises(ValueError):
        viz.grid([])


def test_grid_of_images_of_different_sizes_pads_each_cell_to_the_largest():
    small, large = np.zeros((4, 6, 3), np.uint8), np.full((8, 5, 3), 9, np.uint8)
    g = viz.grid([small, large], columns=2, pad=1)
    assert g.shape == (1 + 8 + 1, 1 + 2 * (6 + 1), 3)
    assert np.all(g[1:5, 1:7] == 0) and np.all(g[5:9, 1:7] == 255)  # white below the small one
    assert np.all(g[1:9, 8:13] == 9) and np.all(g[1:9, 13] == 255)
