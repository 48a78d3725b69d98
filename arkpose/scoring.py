"""Learned pose scoring (docs/method.md §6): shape + heat-value features, the OKS-predicting net.

A candidate pose ``(K, 3)`` = (x, y, joint score) becomes a feature vector of
``spec.num_features`` numbers, in this exact order (the official 74-d layout for COCO):

1. ``Δ = p_a − p_b`` for every limb ``(a, b)`` of ``spec.limbs``, interleaved
   ``[Δx_0, Δy_0, Δx_1, Δy_1, ...]`` (2L numbers; COCO 38);
2. the limb lengths ``|Δ_l|`` (L numbers; COCO 19);
3. the K joint scores (COCO 17).

Δ and the lengths are divided by the pose's torso length, the mean length of the
``spec.torso`` limbs, clamped to at least 1 (so a collapsed pose is not blown up).
A small MLP (:class:`ScoringNet`) maps the feature to the pose's predicted OKS; a
``score_fn(poses (P, K, 3)) -> (P,)`` built by :func:`make_score_fn` ranks poses at
inference. Everything here is pure: tensors in, tensors out; the file side is
``arkpose.rescore``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from arkpose.decode import ScoreFn
from arkpose.progress import bar as progress_bar
from arkpose.spec import CROWDPOSE, KeypointSpec

SCORING_MODES = ("official", "paper")
OFFICIAL_KEYS = ("l1.weight", "l1.bias", "l2.weight", "l2.bias", "l3.weight", "l3.bias")


# ---------------------------------------------------------------------------------------
# Features


@functools.cache
def _pair_index(pairs: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached per spec field: building index tensors costs more than the gather itself.
    a, b = zip(*pairs)
    return torch.tensor(a, dtype=torch.long), torch.tensor(b, dtype=torch.long)


def _check_poses(poses: torch.Tensor, spec: KeypointSpec) -> None:
    if poses.ndim != 3 or poses.shape[1:] != (spec.num_keypoints, 3):
        raise ValueError(
            f"poses must be (P, {spec.num_keypoints}, 3) for spec {spec.name!r} "
            f"(x, y, score per joint), got {tuple(poses.shape)}"
        )


def torso_length(poses: torch.Tensor, spec: KeypointSpec) -> torch.Tensor:
    """Mean length of the ``spec.torso`` limbs, clamped ≥ 1.

    poses: (P, K, 3) -> (P,)
    """
    _check_poses(poses, spec)
    a, b = _pair_index(spec.torso)
    a, b = a.to(poses.device), b.to(poses.device)
    lengths = (poses[:, a, :2] - poses[:, b, :2]).norm(dim=-1)  # (P, T)
    return lengths.mean(dim=1).clamp(min=1.0)


def pose_features(poses: torch.Tensor, spec: KeypointSpec) -> torch.Tensor:
    """The learned-scoring feature of each pose (order in the module docstring).

    poses: (P, K, 3) (x, y, joint score), any pixel unit -> (P, spec.num_features),
    same dtype/device as ``poses`` (float32 when given an integer tensor).
    """
    _check_poses(poses, spec)
    if not poses.is_floating_point():
        poses = poses.float()
    a, b = _pair_index(spec.limbs)
    a, b = a.to(poses.device), b.to(poses.device)
    delta = poses[:, a, :2] - poses[:, b, :2]  # (P, L, 2)
    lengths = delta.norm(dim=-1)  # (P, L)
    torso = torso_length(poses, spec)[:, None]  # (P, 1)
    return torch.cat(
        [
            (delta / torso[:, :, None]).flatten(1),
            lengths / torso,
            poses[:, :, 2],
        ],
        dim=1,
    )


def naive_score(poses: torch.Tensor) -> torch.Tensor:
    """The default pose score: the mean joint score. poses: (P, K, 3) -> (P,)"""
    if poses.ndim != 3 or poses.shape[-1] != 3:
        raise ValueError(f"poses must be (P, K, 3), got {tuple(poses.shape)}")
    return poses[:, :, 2].mean(dim=1)


# ---------------------------------------------------------------------------------------
# Targets


def oks_matrix(
    poses: torch.Tensor,
    gt_keypoints: torch.Tensor,
    gt_areas: torch.Tensor,
    spec: KeypointSpec,
) -> torch.Tensor:
    """COCO OKS of every candidate against every ground-truth person.

    OKS = mean over the GT's labelled joints (v > 0) of exp(−d² / (2 · area · (2σ_k)²)),
    as pycocotools (area + machine eps). GTs without any labelled joint get OKS 0
    against every candidate (pycocotools would instead measure the distance to the box;
    those GTs are ignored in evaluation anyway, so they must not pull targets up).

    poses: (P, K, 3); gt_keypoints: (G, K, 3) (x, y, v); gt_areas: (G,) -> (P, G)
    """
    _check_poses(poses, spec)
    if gt_keypoints.ndim != 3 or gt_keypoints.shape[1:] != (spec.num_keypoints, 3):
        raise ValueError(
            f"gt_keypoints must be (G, {spec.num_keypoints}, 3), got {tuple(gt_keypoints.shape)}"
        )
    if gt_areas.shape != (len(gt_keypoints),):
        raise ValueError(
            f"gt_areas must be ({len(gt_keypoints)},) to match gt_keypoints, "
            f"got {tuple(gt_areas.shape)}"
        )
    dtype = torch.float64  # OKS of a perfect pose must be exactly 1
    poses = poses.to(dtype)
    gt = gt_keypoints.to(device=poses.device, dtype=dtype)
    areas = gt_areas.to(device=poses.device, dtype=dtype)
    sigmas = torch.tensor(spec.sigmas, dtype=dtype, device=poses.device)
    d2 = ((poses[:, None, :, :2] - gt[None, :, :, :2]) ** 2).sum(-1)  # (P, G, K)
    scale = (2 * sigmas) ** 2 * (areas[:, None] + np.spacing(1)) * 2  # (G, K)
    labelled = (gt[:, :, 2] > 0).to(dtype)  # (G, K)
    count = labelled.sum(dim=1)  # (G,)
    per_joint = torch.exp(-d2 / scale[None]) * labelled[None]
    return per_joint.sum(-1) / count.clamp(min=1)[None]


def oks_targets(
    poses: torch.Tensor,
    gt_keypoints: torch.Tensor,
    gt_areas: torch.Tensor,
    spec: KeypointSpec,
) -> torch.Tensor:
    """Each candidate's training target: its maximum OKS over the image's GTs.

    No one-to-one matching: two candidates may both take their target from the same GT.
    An image without GTs (G == 0), or whose GTs have no labelled joint, gives 0 for every
    candidate (a pose where nobody is annotated is a false positive).

    poses: (P, K, 3); gt_keypoints: (G, K, 3); gt_areas: (G,) -> (P,) float32 in [0, 1]
    """
    oks = oks_matrix(poses, gt_keypoints, gt_areas, spec)
    if oks.shape[1] == 0:
        return torch.zeros(len(poses), dtype=torch.float32, device=poses.device)
    return oks.max(dim=1).values.float()


# ---------------------------------------------------------------------------------------
# The net


class ScoringNet(nn.Module):
    """Linear(F, 256) – ReLU – Linear(256, 256) – ReLU – Linear(256, 1).

    Attribute names ``l1``/``l2``/``l3`` match the official rescoring checkpoints
    (``final_rescore_coco_kpt.pth``), so their state dicts load as they are.
    Initialisation as the official code: Kaiming-uniform weights with a = 1 (bound
    √(3 / fan_in)), zero biases.
    """

    def __init__(self, num_features: int, hidden: int = 256) -> None:
        super().__init__()
        if num_features < 1 or hidden < 1:
            raise ValueError(f"num_features and hidden must be >= 1, got {num_features}, {hidden}")
        self.l1 = nn.Linear(num_features, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 1)
        self.relu = nn.ReLU()
        self.reset_parameters()

    @property
    def num_features(self) -> int:
        return self.l1.in_features

    @property
    def hidden(self) -> int:
        return self.l1.out_features

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for layer in (self.l1, self.l2, self.l3):
            nn.init.kaiming_uniform_(layer.weight, a=1, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (P, F) -> predicted OKS (P,)"""
        x = self.relu(self.l1(features))
        x = self.relu(self.l2(x))
        return self.l3(x).squeeze(-1)


# The official CrowdPose scorer's limbs (same set as arkpose's spec, another order) and its
# torso: limbs 9 and 11 of that list, the left thigh and shin (a copy slip, docs/method.md §9).
# arkpose's CROWDPOSE.limbs are the official scorer's limbs in its order; only the torso
# differs (the official one is a copy slip of COCO's indices, docs/method.md §9).
OFFICIAL_CROWDPOSE_LIMBS = CROWDPOSE.limbs
OFFICIAL_CROWDPOSE_TORSO = ((6, 8), (8, 10))


def official_feature_spec(spec: KeypointSpec) -> KeypointSpec:
    """The spec whose features an official rescoring checkpoint was trained on.

    COCO: ``spec`` itself (arkpose's COCO limbs and torso are the official ones). CrowdPose:
    the official limb order and torso. Other layouts have no official scorer: ``spec``.
    """
    if spec == CROWDPOSE:
        return dataclasses.replace(
            spec, limbs=OFFICIAL_CROWDPOSE_LIMBS, torso=OFFICIAL_CROWDPOSE_TORSO
        )
    return spec


def load_official_scorer(state_dict: Mapping[str, torch.Tensor]) -> ScoringNet:
    """A :class:`ScoringNet` from an official-format state dict (``l1/l2/l3`` weights and
    biases; a ``module.`` prefix from DataParallel is accepted). Sizes come from the shapes.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    missing = [k for k in OFFICIAL_KEYS if k not in sd]
    extra = sorted(set(sd) - set(OFFICIAL_KEYS))
    if missing or extra:
        raise KeyError(
            f"not an official rescoring state dict: missing {missing}, unexpected {extra}; "
            f"expected exactly {list(OFFICIAL_KEYS)}"
        )
    w1 = sd["l1.weight"]
    if w1.ndim != 2:
        raise ValueError(f"l1.weight must be (hidden, features), got {tuple(w1.shape)}")
    hidden, features = w1.shape
    expected = {
        "l1.weight": (hidden, features),
        "l1.bias": (hidden,),
        "l2.weight": (hidden, hidden),
        "l2.bias": (hidden,),
        "l3.weight": (1, hidden),
        "l3.bias": (1,),
    }
    wrong = {k: tuple(sd[k].shape) for k, shape in expected.items() if tuple(sd[k].shape) != shape}
    if wrong:
        raise ValueError(
            f"rescoring state dict has inconsistent shapes {wrong}; for "
            f"{features} features and hidden {hidden} expected {expected}"
        )
    net = ScoringNet(features, hidden)
    net.load_state_dict({k: sd[k] for k in OFFICIAL_KEYS})
    return net


def to_official_scorer(net: ScoringNet) -> dict[str, torch.Tensor]:
    """The official-format state dict (``l1/l2/l3``, CPU copies) of ``net``."""
    sd = net.state_dict()
    return {k: sd[k].detach().cpu().clone() for k in OFFICIAL_KEYS}


def make_score_fn(net: ScoringNet, spec: KeypointSpec, mode: str = "official") -> ScoreFn:
    """``score_fn(poses (P, K, 3)) -> (P,)`` ranking poses with ``net``.

    mode "official": predicted OKS × mean joint score (what the official code evaluated);
    mode "paper": predicted OKS alone (the paper's text). As in the official code a NaN
    prediction becomes 0 and the rest is not clipped. The net is put in eval mode; scores come back on the poses'
    device as float32.
    """
    if mode not in SCORING_MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; choose one of {SCORING_MODES}")
    if net.num_features != spec.num_features:
        raise ValueError(
            f"scoring net takes {net.num_features} features but spec {spec.name!r} gives "
            f"{spec.num_features}; use a scorer trained for this keypoint layout"
        )
    net.eval()
    param = next(net.parameters())

    def score_fn(poses: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = poses.to(device=param.device, dtype=param.dtype)
            # NaN (from NaN joints) -> 0, as the official code; the rest is not clipped.
            predicted = torch.nan_to_num(net(pose_features(x, spec)), nan=0.0)
            if mode == "official":
                predicted = predicted * naive_score(x)
            return predicted.to(device=poses.device, dtype=torch.float32)

    return score_fn


# ---------------------------------------------------------------------------------------
# Training


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank (as scipy.stats.rankdata)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Start of each run of equal values, and its length.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    average = starts + (counts + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN when one side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"spearman needs two 1-d arrays of one length, got {a.shape}, {b.shape}")
    if len(a) < 2:
        return math.nan
    ra, rb = rankdata(a) - (len(a) + 1) / 2, rankdata(b) - (len(b) + 1) / 2
    denominator = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else math.nan


def train_scorer(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 1024,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    hidden: int = 256,
    progress: bool = True,
) -> tuple[ScoringNet, dict]:
    """Fit a :class:`ScoringNet` to predict ``targets`` (OKS) from ``features`` (MSE, Adam).

    A random ``val_fraction`` of the samples (seeded) is held out; the report holds
    ``val_mse``, ``val_spearman`` (rank correlation of predicted and true OKS on the held
    out set), ``train_mse`` (mean loss of the last epoch), ``num_train``, ``num_val``,
    ``epochs``, ``lr``, ``batch_size``, ``seed``. With ``val_fraction`` 0 the validation
    numbers are NaN.

    features: (N, F); targets: (N,) -> (net on CPU in eval mode, report)
    """
    if features.ndim != 2 or targets.shape != (len(features),):
        raise ValueError(
            f"features must be (N, F) and targets (N,), got {tuple(features.shape)}, "
            f"{tuple(targets.shape)}"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(features)
    num_val = round(n * val_fraction)
    if n - num_val < 1:
        raise ValueError(f"no training samples left: {n} samples, val_fraction {val_fraction}")
    features = features.detach().float().cpu()
    targets = targets.detach().float().cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    val_idx, train_idx = order[:num_val], order[num_val:]

    net = ScoringNet(features.shape[1], hidden)
    net.reset_parameters(generator)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    train_mse = math.nan
    bar = progress_bar(range(epochs), desc="train scorer", unit="epoch", enabled=progress)
    for _ in bar:
        net.train()
        total, seen = 0.0, 0
        shuffled = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for batch in shuffled.split(batch_size):
            loss = loss_fn(net(features[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        train_mse = total / seen
        bar.set_postfix(mse=f"{train_mse:.4f}")
    net.eval()

    val_mse, val_spearman = math.nan, math.nan
    if num_val:
        with torch.inference_mode():
            predicted = net(features[val_idx])
        val_mse = float(((predicted - targets[val_idx]) ** 2).mean())
        val_spearman = spearman(predicted.numpy(), targets[val_idx].numpy())
    report = {
        "val_mse": val_mse,
        "val_spearman": val_spearman,
        "train_mse": train_mse,
        "num_train": len(train_idx),
        "num_val": num_val,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
    }
    return net, report
