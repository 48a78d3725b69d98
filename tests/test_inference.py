"""arkpose.inference: flip test alignment and symmetry, back-projection, predict, datasets.

The models here are test doubles: tiny modules whose maps are known functions of the
input, or that return the training targets of known persons (a perfect model).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import arkpose
from arkpose import inference
from arkpose.config import DecodeConfig
from arkpose.data.transforms import resize_info
from arkpose.spec import COCO
from arkpose.targets import make_targets
from tests.test_grouping import annotation, make_person

NO_FLIP = DecodeConfig(flip=False)  # the test models do not recognise a mirrored input

K = COCO.num_keypoints


class SubsampleModel(nn.Module):
    """Maps read straight off the input at the grid positions (input pixel 4u), so the
    model is exactly equivariant to the flip test's shifted mirror."""

    def __init__(self, distinct_channels: bool = True):
        super().__init__()
        self.distinct = distinct_channels

    def forward(self, x):
        s = x[:, :, ::4, ::4]
        n, _, h, w = s.shape
        if self.distinct:
            heat = torch.stack([s[:, k % 3] * (1 + k) + 0.1 * k * s[:, (k + 1) % 3]
                                for k in range(K)], 1)
            off = torch.stack([s[:, (j // 2 + j) % 3] * (1 + 0.1 * j) for j in range(2 * K)], 1)
        else:
            heat = s[:, :1].expand(n, K, h, w)
            off = torch.zeros(n, 2 * K, h, w)
        return {"heatmaps": heat, "center": s[:, 1:2], "offsets": off}


def test_flip_test_is_aligned_on_the_grid():
    # With channel-independent maps, the flipped run must land exactly on the plain run.
    x = torch.rand(2, 3, 32, 48)
    model = SubsampleModel(distinct_channels=False)
    plain = inference.flip_test(model, x, COCO.flip_index, flip=False)
    both = inference.flip_test(model, x, COCO.flip_index)
    for key in ("heatmaps", "center", "keypoints"):
        assert torch.allclose(plain[key], both[key], atol=1e-6), key


def test_flip_test_on_mirror_symmetric_input_is_symmetric():
    # Input symmetric about input column W/2 - 2 (grid column (w-1)/2): x[X] = x[W-4-X].
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 48, generator=g)
    W = x.shape[-1]
    x[..., : W - 3] = (x[..., : W - 3] + torch.flip(x[..., : W - 3], [3])) / 2
    out = inference.flip_test(SubsampleModel(), x, COCO.flip_index)
    perm = list(COCO.flip_index)
    heat, center, kp = out["heatmaps"][0], out["center"][0], out["keypoints"][0]
    w = heat.shape[-1]
    assert torch.allclose(heat, torch.flip(heat[perm], [2]), atol=1e-5)
    assert torch.allclose(center, torch.flip(center, [2]), atol=1e-5)
    kp = kp.reshape(K, 2, *kp.shape[-2:])
    mirrored = torch.flip(kp[perm], [3])
    assert torch.allclose(kp[:, 0], w - 1 - mirrored[:, 0], atol=1e-4)
    assert torch.allclose(kp[:, 1], mirrored[:, 1], atol=1e-4)


def test_flip_test_needs_a_flip_index_for_unknown_layouts():
    class FiveJoints(nn.Module):
        def forward(self, x):
            n, _, H, W = x.shape
            z = torch.zeros(n, 5, H // 4, W // 4)
            return {"heatmaps": z, "center": z[:, :1], "offsets": torch.cat([z, z], 1)}

    with pytest.raises(ValueError, match="flip_index"):
        inference.flip_test(FiveJoints(), torch.zeros(1, 3, 16, 16))


class PerfectModel(nn.Module):
    """Returns the training targets of known persons, given in original pixels, for the
    test-time resize of an original image of ``size``; no flip (a mirrored input is
    not recognised)."""

    def __init__(self, persons: list[np.ndarray], size: tuple[int, int], short: int = 256):
        super().__init__()
        self.persons, self.size, self.short = persons, size, short

    def forward(self, x):
        _n, _, H, W = x.shape
        info = resize_info(*self.size, self.short)
        assert (W, H) == info.size
        anns = [annotation(info.to_resized(p)) for p in self.persons]
        t = make_targets(anns, (H, W), (H // 4, W // 4), COCO, min_center_area=0)
        return {"heatmaps": t["heatmaps"][None, :K], "center": t["heatmaps"][None, K:],
                "offsets": t["offsets"][None]}


@pytest.mark.parametrize("size", [(512, 512), (640, 425), (300, 520)])
def test_predict_back_projects_to_original_pixels(size):
    rng = np.random.default_rng(3)
    w, h = size
    persons = [make_person(w * 0.3, h * 0.4, min(w, h) / 40, rng),
               make_person(w * 0.7, h * 0.45, min(w, h) / 35, rng)]
    image = np.zeros((h, w, 3), np.uint8)
    model = PerfectModel(persons, size)
    for quality in ("regression", "final"):
        dets = arkpose.predict(model, image, COCO, NO_FLIP, quality=quality, image_id=7,
                               test_size=256)
        assert len(dets) == 2
        for d in dets:
            assert d["image_id"] == 7 and d["category_id"] == 1
            kp = np.array(d["keypoints"]).reshape(K, 3)
            err = min(np.abs(kp[:, :2] - p).max() for p in persons)
            # 0.5 px in the resized image, scaled back to the original
            assert err < 0.5 * min(w, h) / 256, (quality, err)
            x0, y0, bw, bh = d["bbox"]
            assert x0 == pytest.approx(kp[:, 0].min()) and bw == pytest.approx(np.ptp(kp[:, 0]))
            assert y0 == pytest.approx(kp[:, 1].min()) and bh == pytest.approx(np.ptp(kp[:, 1]))
            assert d["score"] == pytest.approx(kp[:, 2].mean(), abs=1e-4)
        assert dets[0]["score"] >= dets[1]["score"]


def test_predict_on_an_empty_image_gives_an_empty_list():
    class Nothing(nn.Module):
        def forward(self, x):
            n, _, H, W = x.shape
            z = torch.zeros(n, K, H // 4, W // 4)
            return {"heatmaps": z, "center": z[:, :1], "offsets": torch.cat([z, z], 1)}

    assert arkpose.predict(Nothing(), np.zeros((123, 77, 3), np.uint8), COCO) == []


def test_predict_with_many_persons_caps_at_max_people():
    rng = np.random.default_rng(5)
    persons = [make_person(40 + 70 * i, 50 + 110 * j, 5, rng) for i in range(7) for j in range(5)]
    model = PerfectModel(persons, (512, 600))
    image = np.zeros((600, 512, 3), np.uint8)
    dets = arkpose.predict(model, image, COCO, NO_FLIP, test_size=256)
    assert len(dets) == 30
    dets = arkpose.predict(model, image, COCO, DecodeConfig(flip=False, max_people=40), test_size=256)
    assert len(dets) == 35


def test_multi_scale_keeps_reference_coordinates():
    truth = make_person(256, 240, 12, np.random.default_rng(0))

    class ScaleAware(nn.Module):
        """One person; its maps are the targets for whatever input size it gets."""

        def forward(self, x):
            _n, _, H, W = x.shape
            s = H / 256  # the reference (scale 1) image is 256 x 256
            kp = (truth - 256) / 2 * s + [W / 2, H / 2]
            t = make_targets([annotation(kp)], (H, W), (H // 4, W // 4), COCO)
            return {"heatmaps": t["heatmaps"][None, :K], "center": t["heatmaps"][None, K:],
                    "offsets": t["offsets"][None]}

    model = ScaleAware()
    dets = arkpose.predict(model, np.zeros((512, 512, 3), np.uint8), COCO,
                           DecodeConfig(flip=False, scales=(0.5, 1.0, 2.0)), test_size=256)
    assert len(dets) == 1  # the other scales' duplicates are suppressed by the pose NMS
    kp = np.array(dets[0]["keypoints"]).reshape(K, 3)
    assert np.abs(kp[:, :2] - truth).max() < 2 * 0.5  # 0.5 px at the 256 reference


def test_to_coco_format():
    poses = torch.tensor([[[1.0, 2.0, 0.5], [3.0, 6.0, 0.7]]], dtype=torch.float64)
    out = inference.to_coco(poses, torch.tensor([0.6], dtype=torch.float64), image_id=3)
    assert out == [{"image_id": 3, "category_id": 1, "keypoints": [1.0, 2.0, 0.5, 3.0, 6.0, 0.7],
                    "score": pytest.approx(0.6), "bbox": [1.0, 2.0, 2.0, 4.0]}]


def test_image_inputs_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inference.load_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="uint8"):
        inference.load_image(np.zeros((4, 4, 3), np.float32))
    assert inference.load_image(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)


def test_import_arkpose_stays_light():
    import subprocess
    import sys

    code = "import arkpose, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_batch_of_equal_sized_images_gives_the_maps_of_one_at_a_time():
    from arkpose.model import build_model
    from arkpose.presets import preset

    model = build_model(preset("smoke").model, K, seed=0).eval()
    rng = np.random.default_rng(0)
    same = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    mixed = [*same[:2], rng.integers(0, 255, (128, 96, 3), dtype=np.uint8)]
    settings = DecodeConfig()
    for images, exact in ((same, False), (mixed, True)):
        batched = inference.fuse_batch(model, images, COCO.flip_index, settings, 128)
        for image, got in zip(images, batched):
            one = inference.fuse_scales(model, image, COCO.flip_index, settings, 128)
            assert got.info == one.info
            for a, b in ((got.heatmaps, one.heatmaps), (got.centers[0], one.centers[0]),
                         (got.keypoints[0], one.keypoints[0])):
                assert a.shape == b.shape
                if exact:  # sizes differ: one at a time, the same computation
                    assert torch.equal(a, b)
                else:
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _perfect_fused(persons: list[np.ndarray], size: tuple[int, int], noise: float):
    """An image's fused maps from :class:`PerfectModel`, heatmaps plus uniform noise."""
    image = np.zeros((size[1], size[0], 3), np.uint8)
    fused = inference.fuse_scales(PerfectModel(persons, size), image, COCO.flip_index,
                                  NO_FLIP, 256)
    g = torch.Generator().manual_seed(len(persons))
    fused.heatmaps = fused.heatmaps + noise * torch.rand(fused.heatmaps.shape, generator=g)
    return fused


def _sample(persons: list[np.ndarray], image_id: int) -> dict:
    kps = np.concatenate([np.array(persons), np.full((len(persons), K, 1), 2.0)], -1)
    kps[0, 3, 2] = 0  # one unlabelled joint: placed at its pose's mean
    return {"image_id": image_id, "keypoints": kps, "iscrowd": np.zeros(len(persons))}


@pytest.mark.parametrize("settings", [NO_FLIP, DecodeConfig(flip=False, refine=False)])
def test_decoding_a_batch_equals_decoding_each_image_alone(settings):
    rng = np.random.default_rng(4)
    two = [make_person(150, 200, 10, rng), make_person(350, 220, 9, rng)]
    three = [make_person(120 + 180 * i, 180, 8, rng) for i in range(3)]
    one = [make_person(200, 260, 12, rng)]
    fused = [_perfect_fused(two, (512, 512), 0.02), _perfect_fused(three, (640, 425), 0.05),
             _perfect_fused([], (300, 520), 0.0), _perfect_fused(one, (512, 512), 0.01)]
    # The last image as the multi-scale path gives it: dense 1x heatmaps.
    h, w = fused[3].heatmaps.shape[-2:]
    fused[3].heatmaps = arkpose.decode.upsample_to(fused[3].heatmaps, (4 * h, 4 * w))
    samples = [_sample(two, 0), _sample(three, 1), {"image_id": 2}, _sample(one, 3)]
    qualities = ("regression", "heatmap", "final")

    def score_fn(poses):  # a stand-in for the learned scorer: any function of the poses
        return poses[..., 2].amax(-1) - 1e-3 * poses[..., 0].std(-1)

    batch = inference.decode_fused_batch(fused, settings, qualities=qualities,
                                         samples=samples, score_fn=score_fn)
    assert [len(res["final"][0]) for res in batch] == [2, 3, 0, 1]
    assert [len(res["heatmap"][0]) for res in batch] == [2, 3, 0, 1]
    for f, sample, res in zip(fused, samples, batch):
        alone = inference.decode_fused(f, settings, qualities=qualities, sample=sample,
                                       score_fn=score_fn)
        assert res.keys() == alone.keys()
        for q in qualities:
            for got, want in zip(res[q], alone[q]):
                assert got.dtype == want.dtype and torch.equal(got, want), q
    # The scorer sees the refined poses in 1x px, as parse gives them.
    one_image = arkpose.decode.parse(fused[1].heatmaps, fused[1].centers, fused[1].keypoints,
                                     settings, score_fn=score_fn)
    assert torch.equal(batch[1]["final"][1], score_fn(one_image["final"]))
