"""Datasets from a :class:`arkpose.config.Config`: raw samples and training samples
(imported as ``arkpose.data``).

``build_dataset(cfg, split)`` gives the raw :class:`~arkpose.data.coco.KeypointDataset`;
``build_train_dataset(cfg)`` wraps it with the augmentation (docs/method.md §4) and the targets
(docs/method.md §2). Augmentation randomness is a pure function of ``(cfg.seed, epoch, index)``:
the training loop calls ``dataset.set_epoch(epoch)`` each epoch, so a resumed run sees
exactly the data an uninterrupted run would, whatever the worker count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from arkpose.config import Config, to_dict
from arkpose.data.coco import DatasetError, KeypointDataset
from arkpose.data.transforms import AffineParams, augment, normalize, sample_affine
from arkpose.provenance import digest
from arkpose.spec import OUTPUT_STRIDE
from arkpose.targets import make_targets

SPLITS = ("train", "val")


def split_paths(cfg: Config, split: str) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of a split, under ``cfg.data.root``; raises a
    :class:`DatasetError` saying how to get the data when they are missing."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {SPLITS}")
    d = cfg.data
    root = Path(d.root)
    ann = root / (d.train_ann if split == "train" else d.val_ann)
    images = root / (d.train_images if split == "train" else d.val_images)
    missing = [p for p in (root, ann, images) if not p.exists()]
    if missing:
        if d.dataset == "synth":
            fix = (f"generate it with `arkpose synth --out {root} --preset quick` (or the preset "
                   f"matching this config), or point data.root at an existing SynthPose folder")
        else:
            fix = (f"download the {d.dataset} dataset and set data.root (now {root}) so that "
                   f"{d.train_ann if split == 'train' else d.val_ann} and its image folder "
                   f"lie under it")
        raise DatasetError(f"{d.dataset} data not found: {missing[0]} does not exist; {fix}")
    return ann, images


def build_dataset(cfg: Config, split: str = "val", **kwargs: Any) -> KeypointDataset:
    """The raw dataset of a split (no augmentation), honouring ``train_subset`` /
    ``val_subset`` (first N images in file order). Training keeps only images with
    annotations, as the official code; extra keyword arguments go to KeypointDataset."""
    ann, images = split_paths(cfg, split)
    subset = cfg.data.train_subset if split == "train" else cfg.data.val_subset
    kwargs.setdefault("require_annotations", split == "train")
    return KeypointDataset(ann, images, cfg.data.spec, subset=subset, **kwargs)


class TrainDataset(torch.utils.data.Dataset):
    """Augmented training samples with their targets.

    ``dataset[i]`` is a dict of tensors: ``image`` float32 ``(3, S, S)`` ImageNet-normalised,
    ``heatmaps (K+1, S/4, S/4)``, ``tradeoff_mask``, ``ignore_mask (1, S/4, S/4)``,
    ``offsets (2K, S/4, S/4)``, ``offset_weights (2K, S/4, S/4)`` (see
    :func:`arkpose.targets.make_targets`) and ``image_id`` (int64 scalar). The default
    collate stacks them.

    The random draw of sample ``i`` in epoch ``e`` comes from
    ``numpy.random.default_rng([seed, e, i])``: call :meth:`set_epoch` before each epoch.

    The min-center-area test runs on the area in *input* pixels (after the augmentation's
    scale); the official code tests the original annotation area.
    """

    def __init__(self, raw: KeypointDataset, cfg: Config, *, augment_data: bool = True) -> None:
        self.raw = raw
        self.spec = raw.spec
        self.cfg = cfg
        self.seed = int(cfg.seed)
        self.epoch = 0
        self.augment_data = augment_data
        if cfg.data.input_size % OUTPUT_STRIDE:
            raise DatasetError(f"data.input_size {cfg.data.input_size} is not a multiple of "
                               f"the output stride {OUTPUT_STRIDE}")

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (deterministic per (seed, epoch, i))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.raw)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def batch_key(self) -> str:
        """A digest of everything ``dataset[i]`` depends on besides (epoch, i): two datasets
        with the same key give the same samples (arkpose.train.loader.BatchCache)."""
        return digest({**sample_settings(self.cfg), "augment": self.augment_data,
                       "images": len(self.raw)})

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        d, loss = self.cfg.data, self.cfg.loss
        sample = self.raw[index]
        if self.augment_data:
            params = sample_affine(
                self.rng(index), input_size=d.input_size, max_rotation=d.max_rotation,
                min_scale=d.min_scale, max_scale=d.max_scale, max_translate=d.max_translate,
                flip_prob=d.flip_prob,
            )
        else:
            params = AffineParams()
        out = augment(sample, self.spec, params, input_size=d.input_size)
        targets = make_targets(
            out, d.input_size, d.input_size // OUTPUT_STRIDE, self.spec,
            sigma=d.sigma, center_sigma=d.center_sigma, min_center_area=d.min_center_area,
            background_weight=loss.background_weight, tradeoff_mask=loss.tradeoff_mask,
            offset_normaliser=loss.offset_normaliser, ignore_mask=out["ignore_mask"],
        )
        return {"image": normalize(out["image"]), **targets,
                "image_id": torch.tensor(sample["image_id"], dtype=torch.int64)}


def sample_settings(cfg: Config) -> dict[str, Any]:
    """The settings a training sample depends on besides its image, epoch and index: the
    data config, the seed and the target settings (not the model's, nor the loss weights')."""
    loss = cfg.loss
    return {"data": to_dict(cfg)["data"], "seed": int(cfg.seed),
            "targets": [loss.background_weight, loss.tradeoff_mask, loss.offset_normaliser]}


def build_train_dataset(cfg: Config, split: str = "train") -> TrainDataset:
    """Training samples (augmentation + targets) for ``split`` of ``cfg.data``."""
    return TrainDataset(build_dataset(cfg, split), cfg)
