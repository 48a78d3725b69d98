"""arkpose.stn_geometry: the coefficients on hand-made cases, the bootstrap intervals where the
relation is known, the per-unit table over seeds, and every adaptive unit read at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from arkpose import stn, stn_geometry


def test_circular_correlation_by_hand():
    # mean directions 30 and 30; sin of the deviations (-.5, 0, .5) and (-.5, .5, 0):
    # sum of products .25, sums of squares .5 and .5 -> .25 / .5
    assert stn_geometry.circular_corr([0.0, 30, 60], [0.0, 60, 30]) == pytest.approx(0.5, abs=1e-12)
    a = np.array([-170.0, -90, -20, 0, 45, 120, 175])
    assert stn_geometry.circular_corr(a, a + 40) == pytest.approx(1.0)  # a constant offset is no loss
    assert stn_geometry.circular_corr(a, -a) == pytest.approx(-1.0)
    assert np.isnan(stn_geometry.circular_corr(a, np.zeros_like(a)))  # no spread: undefined
    b = np.random.default_rng(0).uniform(-180, 180, 7)
    assert stn_geometry.circular_corr(a, b) == pytest.approx(
        stn.circular_correlation(torch.tensor(a), torch.tensor(b)), abs=1e-12)
    # Vectorised over leading axes.
    np.testing.assert_allclose(stn_geometry.circular_corr(np.stack([a, a]), np.stack([a, -a])), [1.0, -1.0])


def test_spearman_by_hand():
    # ranks (1, 2, 3, 4) and (2, 1, 4, 3): d^2 sums to 4 -> 1 - 6 * 4 / (4 * 15) = 0.6
    assert stn_geometry.spearman([1.0, 2, 3, 4], [20.0, 10, 40, 30]) == pytest.approx(0.6, abs=1e-12)
    assert stn_geometry.spearman([1.0, 2, 3], [1.0, 8, 27]) == pytest.approx(1.0)
    assert np.isnan(stn_geometry.spearman([1.0, 2, 3], [5.0, 5, 5]))


def _persons(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-180, 180, n), np.exp(rng.uniform(np.log(20), np.log(200), n))


def _frame(learned_rot, learned_scale, true_rot, true_height, unit="regression.t1"):
    """unit_transforms-like rows: learned (S, P) per seed, truth (P,)."""
    frames = []
    for s, (rot, scale) in enumerate(zip(learned_rot, learned_scale)):
        frames.append(pd.DataFrame({"unit": unit, "dilation": 1, "seed": s, "image_id": np.arange(len(rot)) // 4,
                                    "ann_id": np.arange(len(rot)), "rotation_deg": rot, "scale": scale,
                                    "true_rotation_deg": true_rot, "true_height_px": true_height}))
    return pd.concat(frames, ignore_index=True)


def test_a_unit_that_follows_the_body_scores_near_one_with_an_interval_around_it():
    rot, height = _persons(600)
    noise = np.random.default_rng(1).normal(0, 5, (2, 600))
    # Seed 1 settled on a rotation 90 deg off: the per-seed coefficient does not mind.
    learned_rot = np.stack([rot + noise[0], rot + 90 + noise[1]])
    learned_scale = np.stack([height / 30 * np.exp(noise[0] / 50), height / 10 * np.exp(noise[1] / 50)])
    table = stn_geometry.geometry_correlations(_frame(learned_rot, learned_scale, rot, height), n_boot=300)
    row = table.iloc[0]
    assert (row["unit"], row["seeds"], row["persons"]) == ("regression.t1", 2, 600)
    assert 0.97 < row["rotation_circular_corr"] < 1.0
    assert row["rotation_ci_low"] < row["rotation_circular_corr"] < row["rotation_ci_high"] <= 1.0
    assert row["scale_spearman"] > 0.97 and row["scale_ci_low"] < row["scale_spearman"] < row["scale_ci_high"]
    # A fixed bootstrap seed: the same table again.
    again = stn_geometry.geometry_correlations(_frame(learned_rot, learned_scale, rot, height), n_boot=300)
    pd.testing.assert_frame_equal(table, again)


def test_a_unit_that_ignores_the_body_has_an_interval_around_zero():
    rot, height = _persons(600)
    other_rot, other_height = _persons(600, seed=5)
    table = stn_geometry.geometry_correlations(
        _frame(other_rot[None], other_height[None], rot, height), n_boot=300)
    row = table.iloc[0]
    assert row["rotation_ci_low"] < 0 < row["rotation_ci_high"]
    assert row["scale_ci_low"] < 0 < row["scale_ci_high"]
    assert abs(row["rotation_circular_corr"]) < 0.1 and abs(row["scale_spearman"]) < 0.1


def test_real_data_has_no_numbers_but_still_one_figure():
    rot, height = _persons(20)
    frame = _frame(rot[None], height[None], np.full(20, np.nan), np.full(20, np.nan))
    assert not stn_geometry.has_true_geometry(frame)
    with pytest.raises(ValueError, match="no true rotation"):
        stn_geometry.geometry_correlations(frame)
    fig = stn_geometry.plot_geometry(frame)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel().startswith("rotation of T")


def test_every_adaptive_unit_of_a_model_on_synthpose(synth_dir):
    from arkpose.config import ModelConfig
    from arkpose.data.coco import KeypointDataset
    from arkpose.model import build_model
    from arkpose.spec import COCO

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="nano-w16", heatmap_channels=8, regression_channels=16,
                                    heatmap_dilations=(1, 3)), 17).eval()
    # Give every T a distinct constant: unit n turns by 10 n degrees at scale 1 + n / 10.
    tconvs = [(name, m) for name, m in model.named_modules() if name.rsplit(".", 1)[-1].startswith("tconv")]
    angles = {}
    with torch.no_grad():
        for n, (name, tconv) in enumerate(tconvs):
            r, s = np.deg2rad(10 * n), 1 + n / 10
            tconv.weight.zero_()
            tconv.bias.copy_(torch.tensor([np.cos(r), -np.sin(r), np.sin(r), np.cos(r)]) * s)
            angles[name] = (-10 * n, s)  # decompose: atan2(t1 - t2, t0 + t3) = -r
    ds = KeypointDataset(synth_dir / "annotations/person_keypoints_val.json", synth_dir / "images/val", COCO)
    frame = stn.unit_transforms(model, ds, heatmap_dilations=(1, 3), max_images=3, test_size=128, progress=False)
    units = sorted(frame["unit"].unique())
    assert units == ["heatmap.0.t1", "heatmap.0.t2", "heatmap.1.t1", "heatmap.1.t2", "regression.t1", "regression.t2"]
    assert frame.groupby("unit")["dilation"].first().to_dict() == {
        "heatmap.0.t1": 1, "heatmap.0.t2": 1, "heatmap.1.t1": 3, "heatmap.1.t2": 3,
        "regression.t1": 1, "regression.t2": 1}
    assert frame.groupby("unit").size().nunique() == 1 and frame["true_height_px"].notna().all()
    found = frame.groupby("unit")[["rotation_deg", "scale"]].agg(["min", "max"])
    assert sorted(found[("scale", "min")].round(4)) == sorted(round(s, 4) for _, s in angles.values())
    assert sorted(found[("rotation_deg", "min")].round(3)) == sorted(float(a) for a, _ in angles.values())
    assert (found[("rotation_deg", "max")] - found[("rotation_deg", "min")]).abs().max() < 1e-3
