"""Learned pose scoring: features, OKS targets, the net, its official format, its effect on AP."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from arkpose import presets, scoring
from arkpose.spec import COCO, CROWDPOSE, KeypointSpec

# A tiny 3-joint layout whose features are easy to work out by hand.
TINY = KeypointSpec(
    name="tiny",
    keypoints=("a", "b", "c"),
    flip_index=(0, 1, 2),
    limbs=((0, 1), (1, 2)),
    skeleton=((0, 1), (1, 2)),
    sigmas=(0.1, 0.1, 0.1),
    torso=((0, 1),),
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matrices: a second intra-op thread only spins on a busy 2-core machine (10x slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_features_by_hand():
    # a=(0,0) b=(3,4) c=(3,10): torso |a-b| = 5; limb Δs (-3,-4), (0,-6); lengths 5, 6.
    pose = torch.tensor([[[0.0, 0.0, 0.9], [3.0, 4.0, 0.5], [3.0, 10.0, 0.2]]])
    expected = torch.tensor([[-0.6, -0.8, 0.0, -1.2, 1.0, 1.2, 0.9, 0.5, 0.2]])
    assert torch.allclose(scoring.pose_features(pose, TINY), expected)
    # Shrunk 10x the torso is 0.5 < 1: clamped to 1, so Δ and lengths stay in pixels.
    small = pose.clone()
    small[..., :2] /= 10
    expected_small = torch.tensor([[-0.3, -0.4, 0.0, -0.6, 0.5, 0.6, 0.9, 0.5, 0.2]])
    assert torch.allclose(scoring.pose_features(small, TINY), expected_small)
    assert scoring.torso_length(small, TINY).item() == 1.0


def test_coco_feature_layout_matches_official():
    torch.manual_seed(0)
    poses = torch.rand(5, 17, 3) * torch.tensor([300.0, 200.0, 1.0])
    poses[0, :, :2] *= 0.001  # a collapsed pose: torso clamped to 1
    f = scoring.pose_features(poses, COCO)
    assert f.shape == (5, 74)
    torso = ((poses[:, 5, :2] - poses[:, 11, :2]).norm(dim=1)
             + (poses[:, 6, :2] - poses[:, 12, :2]).norm(dim=1)) / 2
    torso = torso.clamp(min=1)
    # Interleaved Δ: limb 0 = (0, 1), limb 18 = (14, 16).
    assert torch.allclose(f[:, 0:2], (poses[:, 0, :2] - poses[:, 1, :2]) / torso[:, None])
    assert torch.allclose(f[:, 36:38], (poses[:, 14, :2] - poses[:, 16, :2]) / torso[:, None])
    # Lengths follow at 38..56; limbs 9 and 11 are the torso limbs (5,11) and (6,12).
    assert torch.allclose(f[1:, 38 + 9] + f[1:, 38 + 11], torch.full((4,), 2.0))
    assert torch.allclose(f[:, 38:57], f[:, 0:38].reshape(5, 19, 2).norm(dim=-1))
    assert torch.equal(f[:, 57:], poses[:, :, 2])


def test_feature_dimension_follows_spec():
    assert scoring.pose_features(torch.rand(4, 17, 3), COCO).shape == (4, 74)
    assert scoring.pose_features(torch.rand(4, 14, 3), CROWDPOSE).shape == (4, 59)
    assert scoring.pose_features(torch.rand(0, 14, 3), CROWDPOSE).shape == (0, 59)
    assert scoring.pose_features(torch.rand(2, 3, 3), TINY).shape == (2, TINY.num_features)
    with pytest.raises(ValueError, match=r"\(P, 14, 3\)"):
        scoring.pose_features(torch.rand(4, 17, 3), CROWDPOSE)


def test_naive_score():
    poses = torch.zeros(2, 3, 3)
    poses[0, :, 2] = torch.tensor([0.3, 0.6, 0.9])
    assert torch.allclose(scoring.naive_score(poses), torch.tensor([0.6, 0.0]))


# ---------------------------------------------------------------------------------------
# OKS targets


def test_oks_targets_by_hand():
    gt = torch.tensor([[[10.0, 10.0, 2.0], [20.0, 10.0, 1.0], [0.0, 0.0, 0.0]]])
    area = torch.tensor([100.0])
    perfect = gt.clone()
    perfect[0, 2] = torch.tensor([500.0, 500.0, 1.0])  # unlabelled joint: does not count
    assert scoring.oks_targets(perfect, gt, area, TINY).item() == pytest.approx(1.0, abs=1e-6)
    # Joint b off by 3 px: OKS = (1 + exp(-9 / (2 * 100 * 0.2**2))) / 2.
    moved = perfect.clone()
    moved[0, 1, 1] += 3
    expected = (1 + math.exp(-9 / (2 * 100 * 0.04))) / 2
    assert scoring.oks_targets(moved, gt, area, TINY).item() == pytest.approx(expected, rel=1e-5)


def test_oks_targets_max_over_gts_without_matching():
    gt = torch.tensor([[[0.0, 0.0, 2], [10, 0, 2], [20, 0, 2]],
                       [[100.0, 0, 2], [110, 0, 2], [120, 0, 2]]])
    areas = torch.tensor([400.0, 400.0])
    # Two candidates on GT 1 (one exact, one 2 px off), one between both GTs.
    poses = torch.cat([gt[1:], gt[1:] + torch.tensor([2.0, 0, 0]), gt[:1] + torch.tensor([50.0, 0, 0])])
    oks = scoring.oks_matrix(poses, gt, areas, TINY)
    targets = scoring.oks_targets(poses, gt, areas, TINY)
    assert targets[0].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(targets.double(), oks.max(dim=1).values, atol=1e-6)
    assert 0 < targets[1] < 1 and targets[2] < 1e-3  # both near-duplicates keep GT 1's OKS


def test_oks_targets_empty_and_keypointless_gts():
    poses = torch.rand(4, 3, 3) * 50
    assert torch.equal(scoring.oks_targets(poses, torch.zeros(0, 3, 3), torch.zeros(0), TINY),
                       torch.zeros(4))
    # A GT without labelled joints (e.g. a crowd box) gives 0, never 1.
    keypointless = torch.zeros(1, 3, 3)
    keypointless[0, :, :2] = poses[0, :, :2]
    assert torch.equal(scoring.oks_targets(poses, keypointless, torch.tensor([900.0]), TINY),
                       torch.zeros(4))
    with pytest.raises(ValueError, match="gt_areas"):
        scoring.oks_targets(poses, keypointless, torch.zeros(2), TINY)


def test_oks_matches_pycocotools():
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(3)
    gt = np.concatenate([rng.uniform(0, 200, (2, 17, 2)), rng.integers(0, 3, (2, 17, 1))], -1)
    gt[:, 0, 2] = 2
    dt = np.concatenate([gt[[0, 1, 0], :, :2] + rng.normal(0, 4, (3, 17, 2)),
                         np.ones((3, 17, 1))], -1)
    areas = np.array([3000.0, 9000.0])
    ev = COCOeval(iouType="keypoints")
    ev._gts = {(1, 1): [{"keypoints": g.ravel().tolist(), "area": a, "bbox": [0, 0, 10, 10]}
                        for g, a in zip(gt, areas)]}
    ev._dts = {(1, 1): [{"keypoints": d.ravel().tolist(), "score": 1.0} for d in dt]}
    reference = ev.computeOks(1, 1)  # (D, G)
    ours = scoring.oks_matrix(torch.tensor(dt), torch.tensor(gt), torch.tensor(areas), COCO)
    assert np.allclose(ours.numpy(), reference, atol=1e-9)


# ---------------------------------------------------------------------------------------
# The net and its official format


def test_official_scorer_round_trip():
    net = scoring.ScoringNet(74)
    sd = scoring.to_official_scorer(net)
    assert list(sd) == list(scoring.OFFICIAL_KEYS)
    assert sd["l1.weight"].shape == (256, 74) and sd["l3.weight"].shape == (1, 256)
    loaded = scoring.load_official_scorer({"module." + k: v for k, v in sd.items()})
    x = torch.randn(7, 74)
    assert torch.equal(loaded(x), net(x))
    crowd = scoring.load_official_scorer(scoring.to_official_scorer(scoring.ScoringNet(59)))
    assert crowd.num_features == 59 and crowd.hidden == 256
    assert net(x).shape == (7,)


def test_official_scorer_errors():
    sd = scoring.to_official_scorer(scoring.ScoringNet(74))
    with pytest.raises(KeyError, match=r"missing \['l3.bias'\]"):
        scoring.load_official_scorer({k: v for k, v in sd.items() if k != "l3.bias"})
    with pytest.raises(ValueError, match="l2.weight"):
        scoring.load_official_scorer({**sd, "l2.weight": torch.zeros(256, 74)})


def test_official_feature_spec():
    assert scoring.official_feature_spec(COCO) is COCO
    official = scoring.official_feature_spec(CROWDPOSE)
    # Same limbs in the same order; only the torso differs (the official copy slip).
    assert official.limbs == CROWDPOSE.limbs and official.torso != CROWDPOSE.torso
    # Its torso is limbs 9 and 11 of its own list (the official code's indices).
    assert official.torso == (official.limbs[9], official.limbs[11])
    poses = torch.rand(4, 14, 3, generator=torch.Generator().manual_seed(0)) * 100
    assert (scoring.torso_length(poses, official) > 1).all()
    f = scoring.pose_features(poses, official)
    assert torch.allclose(f[:, 30 + 9] + f[:, 30 + 11], torch.full((4,), 2.0), atol=1e-5)


def test_official_initialisation():
    net = scoring.ScoringNet(74)
    bound = math.sqrt(3 / 74)  # kaiming_uniform_(a=1): gain 1
    assert net.l1.weight.abs().max() <= bound and net.l1.weight.abs().max() > 0.9 * bound
    assert all(layer.bias.abs().sum() == 0 for layer in (net.l1, net.l2, net.l3))


def test_score_fn_modes():
    torch.manual_seed(0)
    net = scoring.ScoringNet(74)
    poses = torch.rand(6, 17, 3) * torch.tensor([200.0, 200.0, 1.0])
    paper = scoring.make_score_fn(net, COCO, "paper")(poses)
    official = scoring.make_score_fn(net, COCO, "official")(poses)
    assert paper.shape == (6,) and paper.dtype == torch.float32
    assert torch.allclose(paper, net(scoring.pose_features(poses, COCO)).detach())
    assert torch.allclose(official, paper * scoring.naive_score(poses))
    assert scoring.make_score_fn(net, COCO)(torch.zeros(0, 17, 3)).shape == (0,)
    broken = poses.clone()
    broken[0, 3, 0] = float("nan")
    assert scoring.make_score_fn(net, COCO, "paper")(broken)[0] == 0
    with pytest.raises(ValueError, match="scoring mode"):
        scoring.make_score_fn(net, COCO, "oks")
    with pytest.raises(ValueError, match="59"):
        scoring.make_score_fn(net, CROWDPOSE)


def test_spearman():
    assert scoring.spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 25, 100.0])) == 1.0
    assert scoring.spearman(np.array([1, 2, 3.0]), np.array([3, 2, 1.0])) == -1.0
    # Ties take the average rank: ranks (1.5, 1.5, 3) vs (1, 2, 3) -> r = sqrt(3) / 2.
    assert scoring.spearman(np.array([5, 5, 7.0]), np.array([1, 2, 3.0])) == pytest.approx(
        math.sqrt(3) / 2)
    assert math.isnan(scoring.spearman(np.ones(4), np.arange(4.0)))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 6, 200).astype(float), rng.normal(size=200)
    assert scoring.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)


def test_train_scorer_is_seeded_and_validates():
    torch.manual_seed(0)
    x, y = torch.randn(300, 5), torch.rand(300)
    net_a, rep_a = scoring.train_scorer(x, y, epochs=2, batch_size=64, progress=False, hidden=16)
    net_b, rep_b = scoring.train_scorer(x, y, epochs=2, batch_size=64, progress=False, hidden=16)
    assert rep_a == rep_b and rep_a["num_val"] == 30 and rep_a["num_train"] == 270
    assert torch.equal(net_a.l1.weight, net_b.l1.weight)
    with pytest.raises(ValueError, match="targets"):
        scoring.train_scorer(x, y[:10], progress=False)


# ---------------------------------------------------------------------------------------
# A scorer trained on synthetic candidates


# A frontal standing person in torso units (x right, y down), COCO joint order.
TEMPLATE = np.array([
    [0, -1.5], [0.1, -1.6], [-0.1, -1.6], [0.2, -1.55], [-0.2, -1.55],
    [0.4, -1.0], [-0.4, -1.0], [0.5, -0.5], [-0.5, -0.5], [0.55, 0.0], [-0.55, 0.0],
    [0.25, 0.0], [-0.25, 0.0], [0.25, 0.6], [-0.25, 0.6], [0.25, 1.2], [-0.25, 1.2],
])
ARMS = [(7, 8), (9, 10)]
LEGS = [(13, 14), (15, 16)]


def _person(rng, centre):
    """A GT pose (17, 3): template scaled 40-120 px, rotated ±15°, 2% natural variation."""
    scale = rng.uniform(40, 120)
    angle = np.deg2rad(rng.uniform(-15, 15))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    xy = (TEMPLATE + rng.normal(0, 0.02, TEMPLATE.shape)) @ rot.T * scale + centre
    return np.concatenate([xy, np.full((17, 1), 2.0)], 1), scale


def _corrupt(rng, pose, scale, kind):
    out = pose.copy()
    out[:, 2] = rng.uniform(0.3, 1.0, 17)  # joint scores carry no information here
    if kind == "exact":
        return out
    if kind.startswith("jitter"):
        out[:, :2] += rng.normal(0, float(kind[6:]) * scale, (17, 2))
    else:
        for a, b in ARMS if kind == "swap_arms" else LEGS:
            out[[a, b], :2] = out[[b, a], :2]
        out[:, :2] += rng.normal(0, 0.02 * scale, (17, 2))
    return out


TRAIN_KINDS = ["exact", "jitter0.03", "jitter0.08", "jitter0.15", "jitter0.3",
               "swap_arms", "swap_legs"]
BAD_KINDS = ["jitter0.2", "swap_arms", "swap_legs"]


@pytest.fixture(scope="module")
def trained_scorer():
    rng = np.random.default_rng(0)
    candidates, targets = [], []
    for _ in range(500):
        gt, scale = _person(rng, rng.uniform(100, 400, 2))
        cand = np.stack([_corrupt(rng, gt, scale, k) for k in TRAIN_KINDS])
        cand_t = torch.tensor(cand, dtype=torch.float32)
        area = torch.tensor([scale**2 * 1.1 * 2.8 * 0.6])
        candidates.append(cand_t)
        targets.append(scoring.oks_targets(cand_t, torch.tensor(gt[None]), area, COCO))
    features = scoring.pose_features(torch.cat(candidates), COCO)
    net, report = scoring.train_scorer(features, torch.cat(targets), epochs=20, batch_size=128,
                                       hidden=128, progress=False)
    return net, report


def test_trained_scorer_ranks_ground_truth_first(trained_scorer):
    net, report = trained_scorer
    assert report["val_spearman"] > 0.8 and report["val_mse"] < 0.02
    score = scoring.make_score_fn(net, COCO, "paper")
    rng = np.random.default_rng(1)
    wins, total = 0, 0
    for _ in range(40):
        gt, scale = _person(rng, rng.uniform(100, 400, 2))
        cand = np.stack([_corrupt(rng, gt, scale, k) for k in ["exact"] + BAD_KINDS])
        s = score(torch.tensor(cand, dtype=torch.float32))
        wins += int((s[0] > s[1:]).sum())
        total += len(BAD_KINDS)
    assert wins / total >= 0.95, f"ground truth ranked first in {wins}/{total} comparisons"


def _coco_eval_ap(gt_dict, detections):
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = CocoApi()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(detections), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


def test_learned_scoring_raises_ap_over_shuffled_naive_scores(trained_scorer):
    net, _ = trained_scorer
    rng = np.random.default_rng(2)
    images, annotations, poses, image_of = [], [], [], []
    for image_id in range(1, 13):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for centre in ([160, 240], [480, 240]):
            gt, scale = _person(rng, np.array(centre, dtype=float))
            xs, ys = gt[:, 0], gt[:, 1]
            bbox = [xs.min(), ys.min(), np.ptp(xs), np.ptp(ys)]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "keypoints": gt.ravel().tolist(), "num_keypoints": 17, "iscrowd": 0,
                "area": float(bbox[2] * bbox[3]), "bbox": [float(v) for v in bbox],
            })
            for kind in ["jitter0.01"] + BAD_KINDS:
                poses.append(_corrupt(rng, gt, scale, kind))
                image_of.append(image_id)
    poses_t = torch.tensor(np.stack(poses), dtype=torch.float32)
    # Shuffle the heat values so the corrupted copies get the higher naive scores.
    good = torch.arange(len(poses)) % 4 == 0
    poses_t[good, :, 2] *= 0.5
    poses_t[~good, :, 2] = 0.5 + 0.5 * poses_t[~good, :, 2]
    gt_dict = {"images": images, "annotations": annotations,
               "categories": [COCO.coco_category()]}

    def ap(scores):
        dets = [{"image_id": i, "category_id": 1, "score": float(s),
                 "keypoints": p.ravel().tolist()}
                for i, p, s in zip(image_of, poses_t.numpy(), scores)]
        return _coco_eval_ap(gt_dict, dets)

    naive = scoring.naive_score(poses_t)
    assert naive[good].mean() < naive[~good].mean()
    ap_naive = ap(naive)
    ap_paper = ap(scoring.make_score_fn(net, COCO, "paper")(poses_t))
    ap_official = ap(scoring.make_score_fn(net, COCO, "official")(poses_t))
    assert ap_paper > ap_naive + 0.1, (ap_naive, ap_paper)
    assert ap_official > ap_naive, (ap_naive, ap_official)


# ---------------------------------------------------------------------------------------
# The file side (arkpose.rescore)


def _sample(gt, areas, iscrowd=None):
    sample = {"image": np.zeros((8, 8, 3), np.uint8), "keypoints": gt, "areas": areas,
              "bboxes": np.tile([0.0, 0.0, 10.0, 10.0], (len(gt), 1))}
    if iscrowd is not None:
        sample["iscrowd"] = np.asarray(iscrowd)
    return sample


def test_candidate_data_one_row_per_candidate():
    from arkpose import rescore

    gt = np.array([[[0.0, 0, 2], [10, 0, 2], [20, 0, 2]], [[50.0, 0, 2], [60, 0, 2], [70, 0, 2]]])
    samples = [
        _sample(gt, np.array([400.0, 400.0]), iscrowd=[0, 1]),  # GT 1 is a crowd region
        _sample(gt[:0], np.zeros(0)),  # nobody annotated
        _sample(gt[:1], np.array([400.0])),  # the model finds nobody here
    ]
    found = [torch.tensor(gt[[0, 1]], dtype=torch.float32), torch.tensor(gt[:1]), torch.zeros(0, 3, 3)]
    calls = iter(found)
    features, targets = rescore.candidate_data(samples, lambda image: next(calls), TINY,
                                               progress=False)
    assert features.shape == (3, TINY.num_features) and targets.dtype == torch.float32
    assert torch.allclose(features, scoring.pose_features(torch.cat(found[:2]).float(), TINY))
    # Candidate on the crowd region scores 0 (crowds are not persons), the lone GT 1.
    assert torch.allclose(targets, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


def test_crowdpose_targets_use_box_area():
    from arkpose import rescore

    gt = np.zeros((1, 14, 3))
    gt[0, :, 0] = np.arange(14) * 5.0
    gt[0, :, 2] = 2
    moved = torch.tensor(gt, dtype=torch.float32)
    moved[0, 0, 0] += 4
    sample = _sample(gt, np.array([1.0]))  # segment area 1 would make the OKS ~0
    _, targets = rescore.candidate_data([sample], lambda image: moved, CROWDPOSE, progress=False)
    expected = scoring.oks_targets(moved, torch.tensor(gt), torch.tensor([100.0]), CROWDPOSE)
    assert torch.allclose(targets, expected) and targets.item() > 0.9


def test_scorer_file_round_trip(tmp_path):
    from arkpose import rescore

    torch.manual_seed(0)
    net = scoring.ScoringNet(74)
    path = rescore.save_scorer(tmp_path / "run" / "scorer.pt", net, COCO, {"val_mse": 0.01})
    loaded, info = rescore.load_scorer(path)
    assert info == {"format": "arkpose", "spec": "coco", "report": {"val_mse": 0.01}}
    assert not loaded.training and torch.equal(loaded.l2.weight, net.l2.weight)
    raw = torch.load(path, weights_only=True)
    assert list(raw["state_dict"]) == list(scoring.OFFICIAL_KEYS)
    poses = torch.rand(5, 17, 3) * 100
    expected = scoring.make_score_fn(net, COCO, "paper")(poses)
    assert torch.allclose(rescore.load_score_fn(path, COCO, "paper")(poses), expected)
    with pytest.raises(rescore.ScorerFileError, match="trained for spec 'coco'"):
        rescore.load_score_fn(path, CROWDPOSE)
    assert not list(tmp_path.glob("run/.*"))  # no temporary file left behind


def test_official_scorer_file_loads(tmp_path):
    from arkpose import rescore

    official = scoring.to_official_scorer(scoring.ScoringNet(59))
    torch.save(official, tmp_path / "final_rescore_crowd_pose_kpt.pth")
    net, info = rescore.load_scorer(tmp_path / "final_rescore_crowd_pose_kpt.pth")
    assert info["format"] == "official" and net.num_features == 59
    score_fn = rescore.load_score_fn(tmp_path / "final_rescore_crowd_pose_kpt.pth", CROWDPOSE,
                                     "paper")
    poses = torch.rand(3, 14, 3) * 100
    official_spec = scoring.official_feature_spec(CROWDPOSE)
    assert torch.allclose(score_fn(poses), net(scoring.pose_features(poses, official_spec)))
    with pytest.raises(rescore.ScorerFileError, match="takes 59 features"):
        rescore.load_score_fn(tmp_path / "final_rescore_crowd_pose_kpt.pth", COCO)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(rescore.ScorerFileError, match="neither an arkpose scorer"):
        rescore.load_scorer(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a tensor file")
    with pytest.raises(rescore.ScorerFileError, match="cannot read scorer"):
        rescore.load_scorer(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match="arkpose rescore"):
        rescore.load_scorer(tmp_path / "missing.pt")


def test_scoring_data_round_trip(tmp_path):
    from arkpose import rescore

    features, targets = torch.rand(6, 74), torch.rand(6)
    rescore.save_scoring_data(tmp_path / "d.pt", features, targets, COCO, {"max_images": 3})
    f, t, info = rescore.load_scoring_data(tmp_path / "d.pt")
    assert torch.equal(f, features) and torch.equal(t, targets)
    assert info["spec"] == "coco" and info["meta"] == {"max_images": 3}
    with pytest.raises(ValueError, match="59 features"):
        rescore.save_scoring_data(tmp_path / "e.pt", features, targets, CROWDPOSE)


def _random_smoke_model(cfg):
    """An untrained nano model with random conv weights and positive center/heat biases, so
    that it finds (meaningless) poses: enough to drive the pipeline end to end."""
    from arkpose.model import build_model
    from arkpose.model.heads import HeatmapHead, RegressionHead

    torch.manual_seed(0)
    model = build_model(cfg.model, 17)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.data.normal_(0, 0.1, generator=generator)
        if isinstance(module, HeatmapHead):
            module.classifier.bias.data += 0.3
        if isinstance(module, RegressionHead):
            module.classifier.bias.data[-1] += 0.5  # the center channel
    return model.eval()


@pytest.mark.slow
def test_rescore_end_to_end(synth_dir, tmp_path, monkeypatch, capsys):
    from arkpose import config, inference, rescore
    from arkpose.checkpoint import save_checkpoint
    from arkpose.cli import rescore as cli
    from arkpose.data import build_dataset

    cfg = presets.preset("smoke")
    cfg.data.root, cfg.data.synth_preset = str(synth_dir), ""
    model = _random_smoke_model(cfg)
    ckpt = tmp_path / "run" / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": config.to_dict(cfg)})

    monkeypatch.setenv("ARKPOSE_THREADS", "1")  # the CLI applies it; see one_thread()
    rc = cli.main(["--checkpoint", str(ckpt), "--max-images", "2", "--epochs", "2",
                   "--batch-size", "64", "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "Spearman" in printed and "validation MSE" in printed
    scorer = tmp_path / "run" / "scorer.pt"
    features, targets, info = rescore.load_scoring_data(tmp_path / "run" / "scoring_data.pt")
    assert info["meta"]["max_images"] == 2 and info["spec"] == "coco"
    # The stored candidates are the model's final flip-test poses on the first training images.
    raw = build_dataset(cfg, "train")
    flip = dataclasses.replace(cfg.eval.decode, flip=True)
    poses = torch.cat([inference.infer_image(model, raw[i]["image"], COCO, flip,
                                             test_size=cfg.eval.test_size)["final"][0]
                       for i in range(2)])
    assert len(poses) > 0 and features.shape == (len(poses), 74)
    assert torch.allclose(features, scoring.pose_features(poses, COCO), atol=1e-4)
    assert ((targets >= 0) & (targets <= 1)).all()

    # Same checkpoint, data and image count: the stored data are reused.
    def no_generation(*args, **kwargs):
        raise AssertionError("scoring data regenerated")

    monkeypatch.setattr(rescore, "generate_scoring_data", no_generation)
    _, report = rescore.rescore(ckpt, out=scorer, max_images=2, epochs=1, progress=False)
    assert report["num_candidates"] == len(targets)

    # The scorer plugs into inference as the pose-scoring hook.
    score_fn = rescore.load_score_fn(scorer, COCO, "official")
    dets = inference.predict(model, raw[0]["image"], COCO, score_fn=score_fn,
                             test_size=cfg.eval.test_size)
    scores = [d["score"] for d in dets]
    assert dets and scores == sorted(scores, reverse=True)

    assert cli.main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_rescoring_final_detections_equals_decoding_with_the_scorer(synth_dir):
    """What an ablation's +scoring row does instead of running the model again: the same
    poses, and the scores the decoding would give (the features ignore the pixel unit)."""
    from arkpose import inference, rescore
    from arkpose.data import build_dataset

    cfg = presets.preset("smoke")
    cfg.data.root, cfg.data.synth_preset = str(synth_dir), ""
    model = _random_smoke_model(cfg)
    net = scoring.ScoringNet(COCO.num_features)
    torch.nn.init.normal_(net.l3.weight, 0, 1.0, generator=torch.Generator().manual_seed(1))
    score_fn = scoring.make_score_fn(net.eval(), COCO, "official")
    dataset = build_dataset(cfg, "val")
    options = {"test_size": cfg.eval.test_size, "max_images": 3, "progress": False}
    plain, _ = inference.predict_dataset(model, dataset, COCO, cfg.eval.decode, **options)
    decoded, _ = inference.predict_dataset(model, dataset, COCO, cfg.eval.decode,
                                           score_fn=score_fn, **options)
    rescored = rescore.rescore_detections(plain["final"], score_fn, COCO)
    assert len(rescored) == len(decoded["final"]) > 0
    assert [d["keypoints"] for d in rescored] == [d["keypoints"] for d in decoded["final"]]
    np.testing.assert_allclose([d["score"] for d in rescored], [d["score"] for d in decoded["final"]],
                               rtol=1e-5, atol=1e-7)
    assert [d["score"] for d in rescored] != [d["score"] for d in plain["final"]]
    assert rescore.rescore_detections([], score_fn, COCO) == []
