"""Data: SynthPose (``arkpose.data.synth``), COCO/CrowdPose datasets, augmentation and
training samples.

``build_dataset(cfg, split)`` gives the raw :class:`~arkpose.data.coco.KeypointDataset`;
``build_train_dataset(cfg)`` wraps it with the augmentation and the targets
(:mod:`arkpose.data.datasets`). These names load on first use, so ``arkpose synth``, which
needs only numpy and PIL, starts without importing torch (~3 s here).
"""

from __future__ import annotations

import importlib

_HOMES = {
    "DatasetError": "arkpose.data.coco",
    "KeypointDataset": "arkpose.data.coco",
    "TrainDataset": "arkpose.data.datasets",
    "build_dataset": "arkpose.data.datasets",
    "build_train_dataset": "arkpose.data.datasets",
    "split_paths": "arkpose.data.datasets",
}

__all__ = list(_HOMES)  # resolved by __getattr__ below


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'arkpose.data' has no attribute {name!r}")
