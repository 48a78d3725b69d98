"""Validation during training: the record ``{"val_AP": ...}`` and whether it improved."""

from __future__ import annotations

import torch

from arkpose.config import Config
from arkpose.evaluate import evaluate_model


def validate(model: torch.nn.Module, cfg: Config) -> dict:
    """Validation record ``{"val_AP": ...}``: the final-quality AP (flip test, full
    grouping) on the first ``cfg.eval.val_images`` validation images."""
    was_training = model.training
    model.eval()
    try:
        stats = evaluate_model(
            model, cfg, split="val", qualities=("final",),
            max_images=cfg.eval.val_images, progress=False,
        )
        return {"val_AP": float(stats["final"]["AP"])}
    finally:
        model.train(was_training)


def _improved(record: dict, best: dict | None) -> bool:
    if "val_AP" not in record:
        return False
    return best is None or best.get("name") != "val_AP" or record["val_AP"] > best["value"]
