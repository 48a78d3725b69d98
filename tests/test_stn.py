import math

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
