"""arkpose.decode (the grouping): round trips through the training targets, hand-made maps, scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from arkpose import decode as G
from arkpose.config import DecodeConfig
from arkpose.spec import COCO
from arkpose.targets import make_targets

# A standing person's 17 COCO joints around (0, 0), in units of its scale.
SHAPE = np.array([
    [0, -4], [-.5, -4.5], [.5, -4.5], [-1, -4.2], [1, -4.2], [-1.5, -2.5], [1.5, -2.5],
    [-2, -.5], [2, -.5], [-2.2, 1.2], [2.2, 1.2], [-1, 1], [1, 1], [-1.1, 3.5], [1.1, 3.5],
    [-1.2, 6], [1.2, 6],
])


def make_person(cx: float, cy: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    return SHAPE * scale + [cx, cy] + rng.uniform(-1, 1, SHAPE.shape)


def annotation(kp: np.ndarray) -> dict:
    k3 = np.concatenate([kp, np.full((len(kp), 1), 2.0)], 1)
    (x0, y0), (x1, y1) = kp.min(0), kp.max(0)
    return {"keypoints": k3.ravel().tolist(), "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0, "num_keypoints": len(kp)}


def perfect_maps(persons: list[np.ndarray], size: int = 512):
    """The training targets of ``persons`` (input px) as a model's perfect output."""
    t = make_targets([annotation(p) for p in persons], size, size // 4, COCO)
    K = COCO.num_keypoints
    return t["heatmaps"][:K], t["heatmaps"][K:], t["offsets"]


def match_error(poses: torch.Tensor, truth: np.ndarray) -> float:
    """Largest joint error after matching each true person to its closest pose."""
    truth_t = torch.as_tensor(truth, dtype=torch.float32)
    worst = 0.0
    for g in truth_t:
        d = (poses[..., :2] - g).norm(dim=-1)
        worst = max(worst, float(d[d.mean(-1).argmin()].max()))
    return worst


@pytest.fixture
def three_persons():
    rng = np.random.default_rng(0)
    return [make_person(100, 120, 12, rng), make_person(300, 130, 10, rng),
            make_person(210, 330, 14, rng)]


# ---------------------------------------------------------------------------------------
# Round trip through arkpose.targets


def test_round_trip_regression_and_final(three_persons):
    heat, center, offsets = perfect_maps(three_persons)
    res = G.parse(heat, center, offsets, absolute=False)
    assert res["regression"].shape == (3, 17, 3) and res["final"].shape == (3, 17, 3)
    assert match_error(res["regression"], np.array(three_persons)) < 0.5
    assert match_error(res["final"], np.array(three_persons)) < 0.5
    # Perfect maps: every joint sits on a heat peak of ~1 and the centers peak at ~1.
    assert bool((res["final"][..., 2] > 0.8).all())
    assert torch.allclose(res["final_scores"], res["final"][..., 2].mean(-1))
    assert bool((res["center_scores"] > 0.9).all())


def test_round_trip_dense_1x_maps_equal_lazy(three_persons):
    heat, center, offsets = perfect_maps(three_persons)
    lazy = G.parse(heat, center, offsets, absolute=False)
    dense = G.parse(G.upsample_to(heat, (512, 512)), center, offsets, absolute=False)
    for key in ("regression", "final"):
        assert torch.allclose(lazy[key], dense[key], atol=1e-3), key


def test_absolute_keypoint_maps_equal_raw_offsets(three_persons):
    heat, center, offsets = perfect_maps(three_persons)
    a = G.parse(heat, center, offsets, absolute=False)
    b = G.parse(heat[None], center[None], G.absolute_keypoints(offsets)[None])
    assert torch.equal(a["final"], b["final"])


def test_score_fn_hook_ranks_final_poses_only(three_persons):
    heat, center, offsets = perfect_maps(three_persons)
    res = G.parse(heat, center, offsets, absolute=False,
                  score_fn=lambda p: p[..., 0].mean(-1))  # rank by mean x
    assert torch.allclose(res["final_scores"], res["final"][..., 0].mean(-1))
    assert torch.allclose(res["regression_scores"], res["regression"][..., 2].mean(-1))


# ---------------------------------------------------------------------------------------
# Centers, NMS, top-k


def test_center_pool_size_by_map_size():
    assert G.center_pool_size(128, 128) == 3
    assert G.center_pool_size(200, 200) == 3
    assert G.center_pool_size(256, 160) == 5
    assert G.center_pool_size(301, 301) == 7


def test_find_centers_threshold_nms_and_order():
    c = torch.zeros(1, 32, 32)
    c[0, 5, 5], c[0, 5, 6] = 0.9, 0.8  # 0.8 is suppressed by the 3x3 NMS
    c[0, 20, 10] = 0.5
    c[0, 30, 30] = 0.005  # below the 0.01 threshold
    scores, idx = G.find_centers(c)
    assert scores.tolist() == pytest.approx([0.9, 0.5])
    assert idx.tolist() == [5 * 32 + 5, 20 * 32 + 10]


def test_topk_stable_breaks_ties_by_lower_index():
    v = torch.tensor([[0.0, 1.0, 1.0, 0.5, 1.0, 0.0]])
    vals, idx = G.topk_stable(v, 4)
    assert idx.tolist() == [[1, 2, 4, 3]] and vals.tolist() == [[1.0, 1.0, 1.0, 0.5]]
    _, idx = G.topk_stable(torch.zeros(2, 10), 3)
    assert idx.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_pose_nms_keeps_higher_score_of_duplicates():
    base = torch.rand(17, 2) * 100
    near = base + 3.0  # all 17 joints within 10 px: a duplicate
    partly = base.clone()
    partly[:7] += 50  # 10 joints close: not more than 10 -> not a duplicate
    far = base + 200
    joints = torch.stack([base, near, partly, far])
    keep = G.pose_nms(joints, torch.tensor([0.5, 0.9, 0.4, 0.3]))
    assert keep.tolist() == [1, 2, 3]
    partly[:6] -= 50  # now 11 joints close: duplicate of pose 0 and of pose 1
    keep = G.pose_nms(torch.stack([base, near, partly, far]), torch.tensor([0.5, 0.9, 0.4, 0.3]))
    assert keep.tolist() == [1, 3]


def test_more_than_30_persons_gives_30_poses():
    h = w = 96
    center = torch.zeros(1, h, w)
    offsets = torch.zeros(2 * 17, h, w)
    heat = torch.zeros(17, h, w)
    n = 0
    for i in range(6):
        for j in range(6):  # 36 centers on a grid, 16 grid px apart
            y, x = 8 + 16 * i, 8 + 16 * j
            center[0, y, x] = 0.5 + 0.01 * n
            n += 1
    res = G.parse(heat, center, offsets, absolute=False)
    assert res["final"].shape == (30, 17, 3)
    assert res["center_scores"].tolist() == sorted(res["center_scores"].tolist(), reverse=True)
    assert res["center_scores"][-1] == pytest.approx(0.5 + 0.01 * 6)


def test_no_center_gives_empty_results():
    res = G.parse(torch.zeros(17, 16, 16), torch.zeros(1, 16, 16), torch.zeros(34, 16, 16))
    for key in ("regression", "final"):
        assert res[key].shape == (0, 17, 3)
        assert res[f"{key}_scores"].shape == (0,)


def test_other_scales_centers_are_decreased():
    K = 17
    c1 = torch.zeros(1, 16, 16)
    c1[0, 4, 4] = 0.8
    c2 = torch.zeros(1, 32, 32)
    c2[0, 20, 20] = 1.0  # normalised to 0.8, then x 0.001
    k1 = G.absolute_keypoints(torch.zeros(2 * K, 16, 16))
    k2 = torch.full((2 * K, 32, 32), 12.0)  # already in reference grid px
    res = G.parse(torch.zeros(K, 16, 16), [c1, c2], [k1, k2])
    assert res["center_scores"].tolist() == pytest.approx([0.8, 0.0008])
    assert torch.allclose(res["regression"][1, :, :2], torch.full((K, 2), 48.0))


def test_bad_shapes_fail_clearly():
    with pytest.raises(ValueError, match="offsets"):
        G.parse(torch.zeros(17, 16, 16), torch.zeros(1, 16, 16), torch.zeros(30, 16, 16))
    with pytest.raises(ValueError, match="one image at a time"):
        G.parse(torch.zeros(2, 17, 16, 16), torch.zeros(2, 1, 16, 16), torch.zeros(2, 34, 16, 16))
    with pytest.raises(ValueError, match="fit neither"):
        G.parse(torch.zeros(17, 20, 20), torch.zeros(1, 16, 16), torch.zeros(34, 16, 16))


# ---------------------------------------------------------------------------------------
# The lazy 1x maps


def smooth_maps(K: int = 3, h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(K, h, w, generator=g)
    return F.avg_pool2d(x[None], 3, 1, 1)[0]  # smooth, no ties


def test_lazy_values_equal_dense_upsampling():
    maps = smooth_maps()
    lazy, dense = G.Heat1x(maps, 4), G.Heat1x(G.upsample_to(maps, (96, 80)), 1)
    K, H, W = 3, 96, 80
    k = torch.arange(K)[:, None, None].expand(K, H, W)
    Y = torch.arange(H)[None, :, None].expand(K, H, W)
    X = torch.arange(W)[None, None, :].expand(K, H, W)
    assert torch.allclose(lazy.at(k, X, Y), dense.maps, atol=1e-6)
    pts = torch.rand(5, K, 2) * torch.tensor([W + 4.0, H + 4.0]) - 2
    assert torch.allclose(G.bilinear_sample(lazy, pts), G.bilinear_sample(dense, pts), atol=1e-6)


def test_lazy_windows_equal_pixelwise_values():
    maps = smooth_maps()
    lazy = G.Heat1x(maps, 4)
    k = torch.tensor([0, 1, 2, 2, 0])
    cx = torch.tensor([0, 5, 40, 77, 79])  # includes windows over every border
    cy = torch.tensor([0, 94, 50, 3, 95])
    offs = torch.arange(-6, 7)
    expect = lazy.at(k[:, None, None], cx[:, None, None] + offs[None, None, :],
                     cy[:, None, None] + offs[None, :, None])
    assert torch.allclose(lazy.windows(k, cx, cy, 6), expect, atol=1e-6)


def test_upsample_to_puts_grid_pixel_u_at_4u():
    maps = smooth_maps()
    up = G.upsample_to(maps, (96, 80))
    assert torch.allclose(up[:, ::4, ::4], maps, atol=1e-6)
    assert torch.equal(up[:, -3:, :], up[:, -4:-3, :].expand(-1, 3, -1))  # replicated border


def test_grid_candidates_equal_dense_5x5_maxima():
    for seed in range(3):
        maps = smooth_maps(seed=seed)
        dense = G.upsample_to(maps, (96, 80))
        peaks = G.local_maxima(dense, 5) > 0
        # Away from the replicated border (where the dense map repeats a node's value,
        # a tie) the 1x maxima are exactly the nodes the grid test selects.
        expect = peaks[:, :-3, :-3]
        got = torch.zeros_like(peaks)
        got[:, ::4, ::4] = G.grid_candidate_mask(maps)
        assert torch.equal(got[:, :-3, :-3], expect)


def test_absorb_fallback_reads_heat_at_x_y_not_transposed():
    K = 17
    heat = torch.zeros(K, 16, 12)
    heat[0, 10, 2] = 0.7  # (x=2, y=10) on the grid -> 1x (8, 40)
    heat[0, 2, 10] = 0.2  # the transposed position
    src = G.Heat1x(heat, 4)
    poses = torch.zeros(1, K, 3)
    poses[0, :, :2] = torch.tensor([8.0, 40.0])
    poses[0, :, 2] = 0.5
    cand_pos = torch.full((K, 1, 2), 1000.0)  # every candidate far away
    cand_val = torch.ones(K, 1)
    out = G.absorb(poses, src, cand_pos, cand_val)
    assert out[0, 0, 2] == pytest.approx(0.5 * 0.7)
    assert torch.equal(out[0, :, :2], poses[0, :, :2])


def test_absorb_moves_to_nearest_candidate_within_75px():
    K = 17
    heat = G.Heat1x(torch.zeros(K, 64, 64), 4)
    poses = torch.zeros(2, K, 3)
    poses[0, :, :2] = torch.tensor([100.0, 100.0])
    poses[1, :, :2] = torch.tensor([200.0, 100.0])
    poses[..., 2] = 0.5
    cand_pos = torch.tensor([[110.0, 100.0], [60.0, 100.0], [200.0, 180.0]]).expand(K, 3, 2)
    cand_val = torch.tensor([0.9, 0.8, 0.6]).expand(K, 3)
    out = G.absorb(poses, heat, cand_pos, cand_val)
    assert out[0, 0].tolist() == pytest.approx([110.0, 100.0, 0.45])
    # pose 1: nearest candidate (200, 180) is 80 px away -> stays, heat there is 0
    assert out[1, 0].tolist() == pytest.approx([200.0, 100.0, 0.0])


def test_candidates_below_threshold_are_zeroed_but_kept():
    heat = torch.zeros(17, 16, 16)
    heat[:, 4, 4] = 0.5
    heat[:, 12, 12] = 0.005
    pos, val = G.keypoint_candidates(G.Heat1x(heat, 4), k=2)
    assert pos[0].tolist() == [[16.0, 16.0], [48.0, 48.0]]
    assert val[0].tolist() == pytest.approx([0.5, 0.0])


# ---------------------------------------------------------------------------------------
# Refinement against scipy


def _scipy_fit(window: np.ndarray, init: tuple[float, float, float, float]):
    """The official fit: scipy curve_fit of A exp(-d^2 / 2 s^2) on the window."""
    from scipy.optimize import curve_fit

    h, w = window.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)

    def gauss(data, A, x0, y0, s):
        y, x = data
        return A * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s * s))

    popt, _ = curve_fit(gauss, (yy.ravel(), xx.ravel()), window.ravel(), p0=init, maxfev=300)
    return popt


def test_refinement_matches_scipy_on_sampled_windows():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    n, half = 13, 6
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    windows, inits = [], []
    for _ in range(40):
        A, s = rng.uniform(0.1, 1.0), rng.uniform(3.0, 10.0)
        mx, my = half + rng.uniform(-1.5, 1.5), half + rng.uniform(-1.5, 1.5)
        z = A * np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * s * s))
        z += 0.3 * A * np.exp(-((xx - mx - 11) ** 2 + (yy - my + 3) ** 2) / (2 * s * s))
        z += rng.normal(0, 0.01, z.shape)
        windows.append(z)
        inits.append((z[half, half], half, half, 2.0))  # the official start
    win = torch.tensor(np.array(windows))
    ones = torch.ones(len(windows), n)
    for init in (torch.tensor(inits, dtype=torch.float64), G.initial_guess(win)):
        params, ok = G.fit_gaussians(win, ones, ones, init)
        assert bool(ok.all())
        for z, p0, p in zip(windows, inits, params.numpy()):
            ref = _scipy_fit(z, p0)
            assert abs(p[1] - ref[1]) < 0.01 and abs(p[2] - ref[2]) < 0.01
            assert abs(p[0] - ref[0]) < 1e-3


def test_refinement_on_clipped_border_windows_matches_scipy():
    pytest.importorskip("scipy")
    # A peak near the map's top-left corner: the 13x13 window is clipped to 10x9.
    _K, H, W = 1, 40, 40
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    heat = 0.9 * np.exp(-((xx - 2.6) ** 2 + (yy - 3.3) ** 2) / (2 * 5.0**2))
    src = G.Heat1x(torch.tensor(heat, dtype=torch.float32)[None], 1)
    poses = torch.tensor([[[3.0, 3.0, 0.9]]])
    out = G.refine(poses, src, torch.tensor([1.0]))
    win = heat[0:10, 0:10]  # rows 3-6..3+6 and cols 3-6..3+6 clipped at 0 (as official)
    ref = _scipy_fit(win.astype(np.float32).astype(float), (heat[3, 3], 3, 3, 2.0))
    assert out[0, 0, 0].item() == pytest.approx(ref[1], abs=0.01)
    assert out[0, 0, 1].item() == pytest.approx(ref[2], abs=0.01)
    assert out[0, 0, 0].item() == pytest.approx(2.6, abs=0.01)


def test_refinement_skips_low_scores_and_border_joints():
    heat = G.Heat1x(torch.rand(17, 8, 8), 4)
    poses = torch.zeros(2, 17, 3)
    poses[0, :, :2] = 10.0
    poses[0, :, 2] = 0.05  # not above the 0.05 threshold
    poses[1, :, :2] = 0.0  # on the border
    poses[1, :, 2] = 0.9
    assert torch.equal(G.refine(poses, heat, torch.ones(2)), poses)


# ---------------------------------------------------------------------------------------
# Heatmap quality


def test_heatmap_poses_take_candidates_never_ground_truth(three_persons):
    heat, _, _ = perfect_maps(three_persons)
    src = G.Heat1x(heat, 4)
    cues = torch.zeros(3, 17, 3)
    cues[..., :2] = torch.as_tensor(np.array(three_persons), dtype=torch.float32) + 40.0  # far off
    cues[..., 2] = 2
    cues[0, 3, 2] = 0  # one unlabelled joint
    poses, scores = G.heatmap_poses(src, cues, DecodeConfig(refine=False))
    cand_pos, _ = G.keypoint_candidates(src)
    for p in range(3):
        for k in range(17):
            if k == 3 and p == 0:
                assert poses[p, k, 2] == 0
                continue
            d = (cand_pos[k] - poses[p, k, :2]).norm(dim=-1)
            assert float(d.min()) == 0.0  # a candidate position, not the cue's
    assert scores.shape == (3,)
    # With the true persons as cues the refined heatmap poses land on them.
    cues[..., :2] = torch.as_tensor(np.array(three_persons), dtype=torch.float32)
    poses, _ = G.heatmap_poses(src, cues)
    labelled = cues[..., 2] > 0
    err = (poses[..., :2] - cues[..., :2]).norm(dim=-1)[labelled]
    assert float(err.max()) < 0.5


def test_refinement_matches_scipy_on_upsampled_heatmap_windows(three_persons):
    """Windows as the pipeline sees them: lazily upsampled (bilinear) Gaussian peaks."""
    pytest.importorskip("scipy")
    heat, _, _ = perfect_maps(three_persons)
    src = G.Heat1x(heat + 0.002 * torch.rand(heat.shape, generator=torch.Generator().manual_seed(0)), 4)
    truth = torch.as_tensor(np.array(three_persons), dtype=torch.float32)
    k = torch.arange(17).repeat(3)
    cx = (truth[..., 0].flatten() + 0.5).floor().long()
    cy = (truth[..., 1].flatten() + 0.5).floor().long()
    wins = src.windows(k, cx, cy, 6)
    ones = torch.ones(len(k), 13)
    params, ok = G.fit_gaussians(wins, ones, ones, G.initial_guess(wins))
    assert bool(ok.all())
    for z, p in zip(wins.double().numpy(), params.numpy()):
        ref = _scipy_fit(z, (z[6, 6], 6.0, 6.0, 2.0))
        assert abs(p[1] - ref[1]) < 0.01 and abs(p[2] - ref[2]) < 0.01


def test_refining_many_jobs_at_once_equals_refining_each_alone(three_persons):
    # Clean, noisy and cut-off peaks: the fits take 3, 14 and 9 steps, so the windows of
    # one job keep iterating after those of another have converged.
    g = torch.Generator().manual_seed(2)
    heat, _, _ = perfect_maps(three_persons)
    clean = G.Heat1x(heat, 4)
    noisy = G.Heat1x(heat + 0.3 * torch.rand(heat.shape, generator=g), 4)
    cut = heat * (heat > 0.6)  # no tails: the official start, s = 2 (initial_guess)
    dense = G.Heat1x(G.upsample_to(cut[:, :64, :96], (256, 384)), 1)
    truth = torch.as_tensor(np.array(three_persons), dtype=torch.float32)
    shift = torch.randn(truth.shape, generator=g)
    poses = torch.cat([truth + shift, torch.rand(3, 17, 1, generator=g)], -1)
    low = poses.clone()
    low[..., 2] = 0.01  # nothing above the threshold: nothing to fit
    jobs = [
        (poses, noisy, torch.rand(3, generator=g)),
        (poses.new_zeros(0, 17, 3), clean, poses.new_zeros(0)),
        (low, clean, torch.ones(3)),
        (poses[:2].double(), dense, torch.tensor([0.5, 1.0])),
        (poses[1:], clean, torch.ones(2)),
    ]
    together = G.refine_many(jobs)
    assert len(together) == len(jobs)
    for (p, h, s), got in zip(jobs, together):
        alone = G.refine(p, h, s)
        assert got.dtype == p.dtype and torch.equal(got, alone)
    assert not torch.equal(together[0], poses) and torch.equal(together[2], low)
    assert G.refine_many([]) == []
