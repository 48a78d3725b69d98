import math
import warnings

import numpy as np
import pytest
import torch

from arkpose import stn
from arkpose.model.adaptive import sampling_positions


def _t_from_image_rotation(deg: float, scale: float) -> torch.Tensor:
    """T on (dy, dx) for an image-space rotation by `deg` (clockwise on screen) and a scale."""
    r = math.radians(deg)
    m = torch.tensor([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]]) * scale  # (x, y)
    # (dy, dx) order swaps both rows and columns.
    return torch.tensor([m[1, 1], m[1, 0], m[0, 1], m[0, 0]])


@pytest.mark.parametrize("deg, scale", [(0, 1), (30, 2), (-90, 0.5), (150, 1.5), (180, 1)])
def test_decompose_recovers_rotation_and_scale(deg, scale):
    out = stn.decompose(_t_from_image_rotation(deg, scale)[None])
    assert float(out["rotation_deg"]) == pytest.approx(deg if deg != -180 else 180, abs=1e-4)
    assert float(out["scale"]) == pytest.approx(scale, rel=1e-5)
    assert float(out["anisotropy"]) == pytest.approx(1.0, abs=1e-3)
    assert not bool(out["reflection"])


def test_decompose_identity_zero_and_anisotropic():
    out = stn.decompose(torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [2.0, 0, 0, 0.5]]))
    assert out["rotation_deg"][0] == 0 and out["scale"][0] == 1
    assert out["scale"][1] == 0  # T = 0: the unit begins as a 1x1 conv
    assert float(out["anisotropy"][2]) == pytest.approx(4.0)
    assert bool(stn.decompose(torch.tensor([[1.0, 0, 0, -1]]))["reflection"][0])


def test_rotated_taps_turn_clockwise_on_screen():
    # A 90° clockwise turn maps the tap to the right of the center (dx=+1) to below it.
    t = _t_from_image_rotation(90, 1.0).view(4, 1, 1).expand(4, 5, 5).contiguous()
    taps = stn.taps_at(t, torch.tensor([[2.0, 2.0]]))[0]  # (9, 2) x, y
    right_tap = taps[5]  # row-major tap (dy=0, dx=+1)
    assert right_tap.tolist() == pytest.approx([2.0, 3.0], abs=1e-5)
    ys, xs = sampling_positions(t[None])
    assert taps[0].tolist() == pytest.approx([float(xs[0, 2, 2, 0]), float(ys[0, 2, 2, 0])])


def test_values_at_is_bilinear_and_clamped():
    maps = torch.arange(12.0).view(1, 3, 4)  # value = 4y + x
    pts = torch.tensor([[1.5, 0.5], [0.0, 0.0], [3.0, 2.0], [10.0, -3.0]])
    assert stn.values_at(maps, pts)[:, 0].tolist() == pytest.approx([3.5, 0.0, 11.0, 3.0])


def test_circular_correlation():
    a = torch.tensor([-170.0, -90, -20, 0, 45, 120, 175])
    assert stn.circular_correlation(a, a) == pytest.approx(1.0)
    assert stn.circular_correlation(a, -a) == pytest.approx(-1.0)


def test_probe_reads_the_regression_unit_of_a_model():
    from arkpose.config import ModelConfig
    from arkpose.model import build_model

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(backbone="nano-w16", heatmap_channels=8, regression_channels=16), 17
    ).eval()
    # Give the regression unit's first transform a known constant T: a 90° turn, scale 2.
    tconv = dict(model.named_modules())["regression_head.unit.tconv1"]
    with torch.no_grad():
        tconv.weight.zero_()
        tconv.bias.copy_(_t_from_image_rotation(90, 2.0))
    image = np.zeros((96, 128, 3), np.uint8)
    centers = torch.tensor([[40.0, 50.0], [100.0, 20.0]])
    out = stn.probe(model, image, centers, test_size=64)
    assert out["rotation_deg"].tolist() == pytest.approx([90.0, 90.0], abs=1e-3)
    assert out["scale"].tolist() == pytest.approx([2.0, 2.0], rel=1e-4)
    # Taps span 2 grid pixels per unit offset: 8 resized px, i.e. 8 * 96/64 = 12 original px.
    spread = out["taps"][:, :, 0].amax(1) - out["taps"][:, :, 0].amin(1)
    assert spread.tolist() == pytest.approx([24.0, 24.0], abs=1e-3)
    with pytest.raises(KeyError, match="no adaptive unit 'regression.t9'"):
        stn.probe(model, image, centers, unit="regression.t9", test_size=64)


def test_person_transforms_table_on_synthpose(synth_dir, tmp_path):
    from arkpose import viz
    from arkpose.config import ModelConfig
    from arkpose.data.coco import KeypointDataset
    from arkpose.model import build_model
    from arkpose.spec import COCO

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(backbone="nano-w16", heatmap_channels=8, regression_channels=16), 17
    ).eval()
    ds = KeypointDataset(
        synth_dir / "annotations/person_keypoints_val.json", synth_dir / "images/val", COCO
    )
    table = stn.person_transforms(model, ds, max_images=4, test_size=128, progress=False)
    labelled = sum(
        1 for i in range(4) for a in ds.annotations(i)
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) >= 1
    )
    assert len(table) == labelled > 0
    # Untrained: the tconvs start at zero, so every T is 0 (scale 0), as initialised.
    assert (table["scale"] == 0).all()
    assert table["true_height_px"].notna().all() and table["facing"].notna().all()
    # The drawing marks the taps.
    image = np.zeros((64, 64, 3), np.uint8)
    taps = torch.tensor([[[x, y] for y in (20.0, 30, 40) for x in (20.0, 30, 40)]])
    drawn = viz.draw_sampling_positions(image, taps, torch.tensor([[30.0, 30.0]]))
    assert drawn[40, 40].any() and drawn[30, 30].any() and not drawn[5, 5].any()


def test_images_in_one_forward_pass_read_the_transforms_of_one_at_a_time():
    from arkpose.config import ModelConfig
    from arkpose.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="nano-w16", heatmap_channels=8, regression_channels=16),
                        17).eval()
    with torch.no_grad():  # the tconvs start at zero: give T something to vary with
        for name, param in model.named_parameters():
            if "tconv" in name:
                param.normal_(0, 0.1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    images.append(rng.integers(0, 255, (128, 96, 3), dtype=np.uint8))  # another shape: alone
    with torch.no_grad():
        together = stn._transforms_many(model, images, 64)
        alone = [stn._transforms(model, image, 64) for image in images]
    for (maps, info), (maps1, info1) in zip(together, alone):
        assert info == info1 and sorted(maps) == sorted(maps1) and maps
        for unit in maps:
            assert maps[unit].abs().max() > 0
            torch.testing.assert_close(maps[unit], maps1[unit], rtol=1e-4, atol=1e-5)


def test_person_transforms_need_no_gradient(synth_dir):
    from arkpose.config import ModelConfig
    from arkpose.data.coco import KeypointDataset
    from arkpose.model import build_model
    from arkpose.spec import COCO

    model = build_model(ModelConfig(backbone="nano-w16", heatmap_channels=8, regression_channels=16), 17)
    ds = KeypointDataset(synth_dir / "annotations/person_keypoints_val.json", synth_dir / "images/val", COCO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Converting a tensor with requires_grad=True"
        table = stn.person_transforms(model.eval(), ds, max_images=2, test_size=64, progress=False)
    assert len(table) > 0
