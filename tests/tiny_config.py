"""The tiny SynthPose training config shared by the training and DDP tests (a plain module,
not a fixture: the DDP test's spawned ranks build it too)."""

from __future__ import annotations

from arkpose import config, presets


def tiny_train_config(synth_dir, *, batch_size: int = 4, epochs: int = 4) -> config.Config:
    """Smoke preset on ``synth_dir``: nano model, 64-px crops, the first 8 images, no
    validation."""
    cfg = presets.preset("smoke")
    cfg.data.root = str(synth_dir)
    cfg.data.input_size = 64
    cfg.data.max_translate = 40.0 * 64 / 512
    cfg.data.min_center_area = 8.0**2  # 32² scaled to the 64-px crop (see the CPU presets)
    cfg.data.train_subset = 8
    cfg.optim.batch_size = batch_size
    cfg.optim.epochs = epochs
    cfg.eval.every = 0
    return cfg
