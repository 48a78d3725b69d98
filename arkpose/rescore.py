"""Learned pose scoring, the file side: training data from a trained model, scorer files.

``arkpose rescore`` = :func:`rescore`: load a pose checkpoint, run it over the **training**
split (final poses, flip test, no learned scoring), give each candidate its maximum OKS
over the image's ground truth (:func:`arkpose.scoring.oks_targets`), store features and
targets next to the run (``scoring_data.pt``), train :class:`arkpose.scoring.ScoringNet`
and save it (``scorer.pt``). :func:`load_score_fn` turns a scorer file (ours, or an
official ``l1/l2/l3`` state dict such as ``final_rescore_coco_kpt.pth``) into the
``score_fn(poses (P, K, 3)) -> (P,)`` hook that ``arkpose eval --scorer`` passes to the
inference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

import arkpose
from arkpose import checkpoint as ckpt
from arkpose import inference, runtime, scoring
from arkpose.checkpoint import save_checkpoint
from arkpose.config import Config
from arkpose.config_check import apply_data_overrides
from arkpose.data import build_dataset
from arkpose.progress import bar as progress_bar
from arkpose.spec import KeypointSpec

SCORER_FORMAT = "arkpose-scorer"
DATA_FORMAT = "arkpose-scoring-data"
DATA_FILE = "scoring_data.pt"
SCORER_FILE = "scorer.pt"

# predict_fn(image uint8 (H, W, 3)) -> candidate poses (P, K, 3) in original pixels.
PredictFn = Callable[[np.ndarray], torch.Tensor]


class ScorerFileError(RuntimeError):
    """A scorer or scoring-data file that cannot be read or does not fit."""


# ---------------------------------------------------------------------------------------
# Training data


def _gt_areas(sample: Mapping, spec: KeypointSpec) -> torch.Tensor:
    # CrowdPose's OKS uses the box area (xtcocotools use_area=False), COCO the segment area.
    if spec.use_area:
        return torch.as_tensor(np.asarray(sample["areas"], dtype=np.float64))
    boxes = np.asarray(sample["bboxes"], dtype=np.float64).reshape(-1, 4)
    return torch.as_tensor(boxes[:, 2] * boxes[:, 3])


def candidate_data(
    samples: Iterable[Mapping],
    predict_fn: PredictFn,
    spec: KeypointSpec,
    *,
    total: int | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and OKS targets of every candidate pose ``predict_fn`` finds in ``samples``.

    Each sample is a raw dataset dict (``image`` uint8 (H, W, 3), ``keypoints`` (G, K, 3),
    ``areas`` (G,), ``bboxes`` (G, 4), optional ``iscrowd`` (G,)). Crowd annotations are
    not persons to match (the evaluator ignores them), so they are dropped before the OKS.
    Every candidate appears once.

    -> features (N, spec.num_features) float32, targets (N,) float32
    """
    found = ((sample, predict_fn(sample["image"])) for sample in
             progress_bar(samples, total=total, desc="scoring data", unit="img", enabled=progress))
    return _features_and_targets(found, spec)


def _features_and_targets(found: Iterable[tuple[Mapping, torch.Tensor]],
                          spec: KeypointSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`candidate_data` of ``(sample, its candidate poses (P, K, 3))`` pairs."""
    features, targets = [], []
    for sample, poses in found:
        poses = torch.as_tensor(poses, dtype=torch.float32)
        if len(poses) == 0:
            continue
        gt = torch.as_tensor(np.asarray(sample["keypoints"], dtype=np.float64))
        gt = gt.reshape(-1, spec.num_keypoints, 3)
        areas = _gt_areas(sample, spec)
        if "iscrowd" in sample:
            keep = torch.as_tensor(np.asarray(sample["iscrowd"])).reshape(-1) == 0
            gt, areas = gt[keep], areas[keep]
        features.append(scoring.pose_features(poses, spec))
        targets.append(scoring.oks_targets(poses, gt, areas, spec))
    if not features:
        return torch.zeros(0, spec.num_features), torch.zeros(0)
    return torch.cat(features).float(), torch.cat(targets).float()


def generate_scoring_data(
    model: torch.nn.Module,
    cfg: Config,
    *,
    split: str = "train",
    max_images: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the trained pose ``model`` over ``split`` of ``cfg.data`` and return the learned
    scoring's training data (see :func:`candidate_data`): the final poses with the flip test
    and no learned scoring, 16 images per network call where their sizes agree
    (:func:`arkpose.inference.decode_dataset`). ``max_images`` > 0 uses the first N images.
    -> features (N, F), targets (N,)
    """
    dataset = build_dataset(cfg, split)
    settings = dataclasses.replace(cfg.eval.decode, flip=True)
    with torch.inference_mode():
        decoded = inference.decode_dataset(model, dataset, cfg.data.spec, settings,
                                           test_size=cfg.eval.test_size, max_images=max_images,
                                           progress=progress, desc="scoring data")
        return _features_and_targets(((sample, res["final"][0]) for sample, res in decoded),
                                     cfg.data.spec)


def _torch_load(path: Path, what: str):
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; create it with `arkpose rescore`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files and foreign pickles raise several types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ScorerFileError(
            f"cannot read {what} {path}: not a tensor file written by arkpose or the official "
            f"code, or truncated ({first})"
        ) from err


def save_scoring_data(
    path: str | Path,
    features: torch.Tensor,
    targets: torch.Tensor,
    spec: KeypointSpec,
    meta: Mapping | None = None,
) -> Path:
    """Write features (N, F) and targets (N,) to ``path`` (atomically)."""
    path = Path(path)
    if features.shape != (len(targets), spec.num_features):
        raise ValueError(
            f"features {tuple(features.shape)} do not fit {len(targets)} targets and "
            f"{spec.num_features} features of spec {spec.name!r}"
        )
    save_checkpoint(
        path,
        {
            "format": DATA_FORMAT,
            "spec": spec.name,
            "features": features.float().cpu(),
            "targets": targets.float().cpu(),
            "meta": dict(meta or {}),
            "version": arkpose.__version__,
        },
    )
    return path


def load_scoring_data(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """-> features (N, F), targets (N,), the file's dict without the tensors (spec, meta)."""
    path = Path(path)
    data = _torch_load(path, "scoring data")
    if not isinstance(data, dict) or data.get("format") != DATA_FORMAT:
        raise ScorerFileError(f"{path} is not an arkpose scoring-data file ({DATA_FORMAT})")
    info = {k: v for k, v in data.items() if k not in ("features", "targets")}
    return data["features"], data["targets"], info


# ---------------------------------------------------------------------------------------
# Scorer files


def save_scorer(path: str | Path, net: scoring.ScoringNet, spec: KeypointSpec, report: Mapping) -> Path:
    """Write a trained scorer: its ``l1/l2/l3`` weights (official layout), the spec name,
    the feature count and the training report. Loadable with ``weights_only=True``."""
    path = Path(path)
    if net.num_features != spec.num_features:
        raise ValueError(
            f"scorer takes {net.num_features} features, spec {spec.name!r} gives {spec.num_features}"
        )
    save_checkpoint(
        path,
        {
            "format": SCORER_FORMAT,
            "spec": spec.name,
            "num_features": net.num_features,
            "hidden": net.hidden,
            "state_dict": scoring.to_official_scorer(net),
            "report": {k: (float(v) if isinstance(v, float) else v) for k, v in report.items()},
            "version": arkpose.__version__,
        },
    )
    return path


def load_scorer(path: str | Path) -> tuple[scoring.ScoringNet, dict]:
    """A scorer file -> (net in eval mode, info). ``info`` has ``format`` ("arkpose" or
    "official"), ``spec`` (name, or None for official files) and ``report`` (or {})."""
    path = Path(path)
    data = _torch_load(path, "scorer")
    if not isinstance(data, Mapping):
        raise ScorerFileError(f"scorer {path} holds a {type(data).__name__}, not a state dict")
    if data.get("format") == SCORER_FORMAT:
        net = scoring.load_official_scorer(data["state_dict"])
        info = {"format": "arkpose", "spec": data["spec"], "report": dict(data["report"])}
    else:
        # The official rescoring files are the bare state dict of PredictOKSNet.
        try:
            net = scoring.load_official_scorer(data)
        except (KeyError, ValueError) as err:
            raise ScorerFileError(
                f"{path} is neither an arkpose scorer (`arkpose rescore`) nor an official "
                f"rescoring state dict: {err}"
            ) from err
        info = {"format": "official", "spec": None, "report": {}}
    return net.eval(), info


def load_score_fn(
    path: str | Path, spec: KeypointSpec, mode: str = "official", device: str | torch.device = "cpu"
) -> scoring.ScoreFn:
    """``score_fn(poses (P, K, 3)) -> (P,)`` from a scorer file, for ``spec``'s poses.

    mode "official": predicted OKS × mean joint score; "paper": predicted OKS alone.
    Official checkpoints get the features they were trained on
    (:func:`arkpose.scoring.official_feature_spec`). Fails clearly when the scorer was trained for another keypoint layout.
    """
    net, info = load_scorer(path)
    if info["spec"] is not None and info["spec"] != spec.name:
        raise ScorerFileError(
            f"scorer {path} was trained for spec {info['spec']!r}, but the poses use "
            f"{spec.name!r}; train one for this dataset with `arkpose rescore`"
        )
    if net.num_features != spec.num_features:
        raise ScorerFileError(
            f"scorer {path} takes {net.num_features} features, spec {spec.name!r} gives "
            f"{spec.num_features} (COCO 74, CrowdPose 59)"
        )
    if info["format"] == "official":
        # Official nets read the official feature layout (CrowdPose: its limb order and torso).
        spec = scoring.official_feature_spec(spec)
    return scoring.make_score_fn(net.to(device), spec, mode)


def rescore_detections(detections: list[dict], score_fn: scoring.ScoreFn,
                       spec: KeypointSpec) -> list[dict]:
    """The same COCO results with ``score_fn``'s pose scores.

    Learned scoring only ranks the final poses, and its features do not depend on the pixel
    unit (:func:`arkpose.scoring.pose_features`: limb vectors over the torso length, joint
    scores), so scoring a model's final detections equals decoding the images again with
    ``score_fn``, up to float rounding, without running the model.
    """
    if not detections:
        return []
    poses = torch.tensor([d["keypoints"] for d in detections], dtype=torch.float32)
    scores = score_fn(poses.reshape(len(detections), spec.num_keypoints, 3)).reshape(-1)
    return [{**d, "score": float(v)} for d, v in zip(detections, scores.tolist())]


# ---------------------------------------------------------------------------------------
# The whole command


def rescore(
    checkpoint: str | Path,
    *,
    data: str | Path | None = None,
    out: str | Path | None = None,
    max_images: int = 0,
    epochs: int = 20,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    regenerate: bool = False,
    progress: bool = True,
    overrides: list[str] = (),
) -> tuple[Path, dict]:
    """Generate the training data with ``checkpoint`` and train a scorer.

    ``data`` replaces the checkpoint config's ``data.root`` and ``overrides`` (``data.*``
    keys, :func:`arkpose.config_check.apply_data_overrides`) its other data fields. ``out``
    defaults to ``scorer.pt`` next to the checkpoint, and the data file ``scoring_data.pt`` goes next to
    ``out``. A data file made from the same checkpoint, data and image count is reused
    unless ``regenerate``. -> (scorer path, training report)
    """
    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else checkpoint.parent / SCORER_FILE
    data_path = out.parent / DATA_FILE
    model, cfg = ckpt.load_model(checkpoint, runtime.resolve_device(device))
    if data is not None:
        cfg.data.root = str(data)
        cfg.data.synth_preset = ""
    apply_data_overrides(cfg, list(overrides), cfg.data.spec.num_keypoints)
    spec = cfg.data.spec
    meta = {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_mtime": checkpoint.stat().st_mtime,
        "data_root": str(Path(cfg.data.root).resolve()),
        "split": "train",
        "max_images": max_images,
    }
    if overrides:  # other annotation files or layout: other scoring data
        meta["data_overrides"] = list(overrides)
    features = targets = None
    if data_path.is_file() and not regenerate:
        f, t, info = load_scoring_data(data_path)
        if info.get("meta") == meta and info.get("spec") == spec.name:
            features, targets = f, t
    if features is None:
        features, targets = generate_scoring_data(
            model, cfg, split="train", max_images=max_images, progress=progress
        )
        save_scoring_data(data_path, features, targets, spec, meta)
    if len(targets) < 2:
        raise ScorerFileError(
            f"only {len(targets)} candidate poses from {cfg.data.root}: the model finds almost "
            "no persons in the training images; train it longer or use more images"
        )
    net, report = scoring.train_scorer(
        features, targets, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        progress=progress,
    )
    report = {**report, "num_candidates": len(targets), "mean_target": float(targets.mean()),
              "data_file": str(data_path)}
    save_scorer(out, net, spec, report)
    return out, report
