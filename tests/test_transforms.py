"""arkpose.data.transforms: flips, affine round trips, pixel-centre conventions, test resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arkpose.data.transforms import (
    AffineParams,
    augment,
    crop_matrix,
    denormalize,
    flip_matrix,
    hflip,
    invert_affine,
    normalize,
    resize_for_test,
    resize_info,
    sample_affine,
    transform_keypoints,
    transform_points,
    warp_affine,
)
from arkpose.spec import COCO


def blob_image(h: int, w: int, x: float, y: float, sigma: float = 2.5) -> np.ndarray:
    """uint8 (h, w, 3) with a Gaussian dot centred at the float point (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.round(g * 255).astype(np.uint8)[..., None], 3, 2)


def centroid(image: np.ndarray) -> np.ndarray:
    a = image[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]]
    return np.array([(a * xx).sum() / a.sum(), (a * yy).sum() / a.sum()])


def raw_sample(h=60, w=80, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    kps = np.zeros((2, 17, 3), np.float32)
    kps[..., 0] = rng.uniform(0, w - 1, (2, 17))
    kps[..., 1] = rng.uniform(0, h - 1, (2, 17))
    kps[..., 2] = rng.integers(0, 3, (2, 17))
    mask = np.ones((h, w), np.uint8)
    mask[5:20, 10:30] = 0
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "keypoints": kps,
        "bboxes": np.array([[5, 6, 30, 40], [40, 10, 20, 30]], np.float32),
        "areas": np.array([900.0, 500.0], np.float32),
        "iscrowd": np.zeros(2, np.int64),
        "num_keypoints": (kps[..., 2] > 0).sum(1),
        "ignore_mask": mask,
        "image_id": 7,
        "file_name": "x.jpg",
    }


def test_flip_then_flip_is_identity():
    s = raw_sample()
    back = hflip(hflip(s, COCO), COCO)
    for key in ("image", "ignore_mask", "keypoints", "bboxes"):
        np.testing.assert_allclose(back[key], s[key], atol=1e-5, err_msg=key)


def test_flip_mirrors_and_swaps_left_right():
    s = raw_sample(h=60, w=80)
    f = hflip(s, COCO)
    le, re = COCO.index("left_eye"), COCO.index("right_eye")
    # The flipped left eye is the mirrored original right eye: x -> W - 1 - x.
    assert f["keypoints"][0, le, 0] == pytest.approx(79 - s["keypoints"][0, re, 0])
    assert f["keypoints"][0, le, 1] == pytest.approx(s["keypoints"][0, re, 1])
    assert f["keypoints"][0, le, 2] == s["keypoints"][0, re, 2]
    assert np.array_equal(f["image"][:, 0], s["image"][:, -1])
    # A bbox's corners mirror as points: the box center goes to W - 1 - cx.
    cx = s["bboxes"][0, 0] + s["bboxes"][0, 2] / 2
    assert f["bboxes"][0, 0] + f["bboxes"][0, 2] / 2 == pytest.approx(79 - cx)
    # A dot drawn at a keypoint is at the mirrored keypoint after flipping the image.
    img = blob_image(60, 80, 20.3, 30.7)
    np.testing.assert_allclose(centroid(img[:, ::-1]), transform_points([20.3, 30.7], flip_matrix(80)), atol=0.01)


@pytest.mark.parametrize("params", [
    AffineParams(0.0, 1.0, (0.0, 0.0), False),
    AffineParams(27.0, 0.8, (0.06, -0.1), True),
    AffineParams(-140.0, 1.4, (-0.2, 0.15), False),
])
def test_affine_then_inverse_within_1e4_px(params):
    m = crop_matrix(640, 425, 512, params)
    pts = np.random.default_rng(0).uniform(-50, 700, (100, 2))
    back = transform_points(transform_points(pts, m), invert_affine(m))
    assert np.abs(back - pts).max() < 1e-4


@pytest.mark.parametrize("params", [
    AffineParams(0.0, 1.0, (0.0, 0.0), False),
    AffineParams(25.0, 0.8, (0.05, -0.1), True),
    AffineParams(-70.0, 1.3, (0.0, 0.1), False),
])
def test_rendered_dot_lands_on_transformed_point(params):
    p = np.array([37.3, 52.8])
    img = blob_image(90, 120, *p)
    m = crop_matrix(120, 90, 128, params)
    out = warp_affine(img, m, (128, 128))
    np.testing.assert_allclose(centroid(out), transform_points(p, m), atol=0.05)


def test_crop_matrix_scale_and_center():
    m = crop_matrix(640, 480, 512, AffineParams(scale=1.0))
    # Crop side = short side (480) -> 512 px: factor 512/480; (w/2, h/2) -> (S/2, S/2).
    np.testing.assert_allclose(transform_points([320, 240], m), [256, 256])
    np.testing.assert_allclose(transform_points([320 + 48, 240], m), [256 + 48 * 512 / 480, 256])
    m = crop_matrix(640, 480, 512, AffineParams(rotation=90.0))
    # 90 degrees counter-clockwise on screen: a point to the right of center goes up.
    np.testing.assert_allclose(transform_points([330, 240], m), [256, 256 - 10 * 512 / 480], atol=1e-9)


def test_augment_moves_everything_together():
    s = raw_sample(h=60, w=80)
    params = AffineParams(20.0, 0.9, (0.05, 0.02), True)
    out = augment(s, COCO, params, input_size=64, output_stride=4)
    m = out["matrix"]
    assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
    assert out["ignore_mask"].shape == (16, 16) and out["ignore_mask"].dtype == np.uint8
    np.testing.assert_allclose(out["keypoints"], transform_keypoints(s["keypoints"], m, COCO, True), atol=1e-4)
    k = 64 / (60 * 0.9)
    assert out["scale"] == pytest.approx(k)
    np.testing.assert_allclose(out["areas"], s["areas"] * k**2, rtol=1e-5)
    np.testing.assert_allclose(out["bboxes"][:, 2:], s["bboxes"][:, 2:] * k, rtol=1e-5)
    c = s["bboxes"][:, :2] + s["bboxes"][:, 2:] / 2
    np.testing.assert_allclose(out["bboxes"][:, :2] + out["bboxes"][:, 2:] / 2, transform_points(c, m), atol=1e-4)
    # The ignored rectangle (rows 5..19, cols 10..29) lands where the matrix sends it, on the
    # stride-4 grid; far outside the source image the mask is 0 (official zero border).
    centre = transform_points([19.5, 12.0], m) / 4
    assert out["ignore_mask"][round(centre[1]), round(centre[0])] == 0
    inside = transform_points([60.0, 45.0], m) / 4
    assert out["ignore_mask"][round(inside[1]), round(inside[0])] == 1
    # The rest of the sample passes through.
    assert out["image_id"] == 7 and np.array_equal(out["num_keypoints"], s["num_keypoints"])


@pytest.mark.parametrize("seed", range(3))
def test_painted_joint_follows_its_label_through_flip_and_affine(seed):
    """A dot painted at the left wrist of an image must, after a flipped random affine, sit
    where the transformed *right* wrist says (the mirrored person's right wrist), and the
    targets must peak there."""
    from arkpose.targets import make_targets

    lw, rw = COCO.index("left_wrist"), COCO.index("right_wrist")
    p = np.array([52.4, 33.7])
    s = raw_sample(h=80, w=100)
    s["image"] = blob_image(80, 100, *p, sigma=3.0)
    s["keypoints"][:] = 0
    s["keypoints"][0, lw] = (*p, 2)
    s["ignore_mask"][:] = 1
    params = sample_affine(np.random.default_rng(seed), input_size=128, max_translate=5,
                           min_scale=0.9, max_scale=1.2, flip_prob=1.0)
    out = augment(s, COCO, params, input_size=128)
    assert out["keypoints"][0, lw, 2] == 0 and out["keypoints"][0, rw, 2] == 2
    np.testing.assert_allclose(centroid(out["image"]), out["keypoints"][0, rw, :2], atol=0.05)
    t = make_targets(out, 128, 32, COCO, ignore_mask=out["ignore_mask"])
    peak = np.unravel_index(t["heatmaps"][rw].argmax().item(), (32, 32))
    assert tuple(peak) == tuple(np.round(out["keypoints"][0, rw, 1::-1] / 4).astype(int))


def test_sample_affine_ranges_and_reproducibility():
    draws = [sample_affine(np.random.default_rng([3, i]), input_size=128, max_translate=10)
             for i in range(300)]
    rot = np.array([d.rotation for d in draws])
    sc = np.array([d.scale for d in draws])
    sh = np.array([d.shift for d in draws])
    assert rot.min() >= -30 and rot.max() <= 30 and rot.min() < -25 and rot.max() > 25
    assert sc.min() >= 0.75 and sc.max() <= 1.5
    t = 10 * 2.56 / 128  # ±20% of the crop
    assert np.abs(sh).max() <= t and np.abs(sh).max() > 0.9 * t
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6
    assert sample_affine(np.random.default_rng([3, 5]), input_size=128) == \
        sample_affine(np.random.default_rng([3, 5]), input_size=128)


def test_normalize_round_trip():
    img = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    x = normalize(img)
    assert x.shape == (3, 8, 6) and x.dtype == torch.float32
    assert x[0].mean().item() == pytest.approx(((img[..., 0] / 255 - 0.485) / 0.229).mean(), abs=1e-5)
    assert np.array_equal(denormalize(x), img)


# ---------------------------------------------------------------------------------------
# Test-time resize (docs/method.md §5.1) and back-projection (§5.9)


def test_resize_sizes_follow_the_official_rule():
    info = resize_info(640, 425)
    assert info.size == (832, 512)  # 425 -> 512; 640 * 512 / 425 = 771.0 -> 832
    assert info.center == (320.0, 213.0)  # int(w/2 + 0.5), int(h/2 + 0.5)
    assert info.factor == pytest.approx(425 / 512)
    portrait = resize_info(333, 500)
    # Official int((x + 63) // 64 * 64) on a float: 500 * 512 / 333 = 768.77 -> 768 (not 832).
    assert portrait.size == (512, 768)
    assert portrait.center == (167.0, 250.0)
    assert portrait.scale == pytest.approx((333 / 200, 768 / 512 * 333 / 200))
    assert resize_info(333, 499).size == (512, 768)  # 767.2 -> 768: a true round-up
    assert resize_info(512, 512).size == (512, 512)
    # Multi-scale rounds at the smallest scale and multiplies (official get_multi_scale_size).
    # base 256; long side round_up(256 / 425 * 640 = 385.5) = 448, times scale / min_scale.
    assert resize_info(640, 425, scale=1.0, min_scale=0.5).size == (896, 512)
    assert resize_info(640, 425, scale=2.0, min_scale=0.5).size == (1792, 1024)
    assert resize_info(640, 425, scale=0.5, min_scale=0.5).size == (448, 256)


def test_back_projection_formula_and_round_trip():
    info = resize_info(640, 425)
    k = info.scale[0] * 200 / info.size[0]
    pts = np.random.default_rng(0).uniform(0, 800, (50, 2))
    expected = np.column_stack([info.center[0] + (pts[:, 0] - info.size[0] / 2) * k,
                                info.center[1] + (pts[:, 1] - info.size[1] / 2) * k])
    np.testing.assert_allclose(info.to_original(pts), expected, atol=1e-9)
    assert np.abs(info.to_original(info.to_resized(pts)) - pts).max() < 1e-4
    t = torch.tensor(pts, dtype=torch.float64)
    assert torch.allclose(info.to_original(t), torch.from_numpy(expected))
    assert torch.allclose(info.to_resized(info.to_original(t)), t)


@pytest.mark.parametrize("h,w", [(90, 120), (121, 67)])
def test_resized_dot_back_projects_to_its_original_position(h, w):
    p = np.array([w * 0.37, h * 0.61])
    img = blob_image(h, w, *p, sigma=3.0)
    resized, info = resize_for_test(img, short_side=64, multiple=32)
    assert resized.shape[:2] == (info.size[1], info.size[0])
    assert min(info.size) == 64 and max(info.size) % 32 == 0
    found = centroid(resized)
    np.testing.assert_allclose(found, info.to_resized(p), atol=0.05)
    np.testing.assert_allclose(info.to_original(found), p, atol=0.05)
