"""The values a run can use: every config field's range, checked before anything is created.

:func:`check` runs before a training makes its run folder (and before ``arkpose ablate``
starts a row), so ``--set optim.lr=-1`` ends in one line naming the field, not in a torch
traceback after the folder exists. Types are already checked when a value is set
(:func:`arkpose.config.set_value`); these are the ranges and choices on top.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from arkpose.config import DATASET_SPECS, QUALITIES, Config, ConfigError, apply_overrides, flatten
from arkpose.model.adaptive import CPU_SAMPLERS
from arkpose.model.hrnet import BACKBONES
from arkpose.model.net import SIZE_MULTIPLE, UNIT_INITS
from arkpose.scoring import SCORING_MODES
from arkpose.targets import OFFSET_NORMALISERS, TRADEOFF_MASKS

AMP_MODES = ("none", "bf16", "fp16")

def _positive(v: Any) -> bool:
    return v > 0 and math.isfinite(v)


def _non_negative(v: Any) -> bool:
    return v >= 0 and math.isfinite(v)


def _fraction(v: Any) -> bool:
    return 0 <= v <= 1


def _one_of(choices: tuple) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _all(test: Callable[[Any], bool], n: int | None = None,
         empty_ok: bool = False) -> Callable[[Any], bool]:
    """A tuple whose items all pass ``test``: ``n`` of them, or any number >= 1 (or 0 when
    ``empty_ok``)."""
    def check(values: tuple) -> bool:
        if not values:
            return empty_ok
        return (n is None or len(values) == n) and all(test(v) for v in values)
    return check


def _rules() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """``--set`` key -> (test, what the value must be)."""
    def choice(choices: tuple | list) -> tuple[Callable[[Any], bool], str]:
        return _one_of(tuple(choices)), f"one of {', '.join(map(str, choices))}"

    return {
        "seed": (_non_negative, ">= 0"),
        "ablation_seeds": (lambda v: v >= 1, ">= 1"),
        "pretrain_epochs": (_non_negative, ">= 0 (0 = none)"),
        "device": (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
                   "auto, cpu, cuda or cuda:N"),
        "data.dataset": choice(sorted(DATASET_SPECS)),
        "data.input_size": (lambda v: v >= SIZE_MULTIPLE and v % SIZE_MULTIPLE == 0,
                            f"a positive multiple of {SIZE_MULTIPLE}"),
        "data.max_rotation": (lambda v: 0 <= v <= 180, "in [0, 180] degrees"),
        "data.min_scale": (_positive, "> 0"),
        "data.max_scale": (_positive, "> 0"),
        "data.max_translate": (_non_negative, ">= 0"),
        "data.flip_prob": (_fraction, "in [0, 1]"),
        "data.sigma": (_positive, "> 0"),
        "data.center_sigma": (_positive, "> 0"),
        "data.min_center_area": (_non_negative, ">= 0"),
        "data.workers": (_non_negative, ">= 0"),
        "data.train_subset": (_non_negative, ">= 0 (0 = all)"),
        "data.val_subset": (_non_negative, ">= 0 (0 = all)"),
        "data.oks_sigma_scale": (_positive, "> 0"),
        "model.backbone": choice(sorted(BACKBONES)),
        "model.heatmap_channels": (lambda v: v >= 1, ">= 1"),
        "model.regression_channels": (lambda v: v >= 1, ">= 1"),
        "model.heatmap_dilations": (_all(lambda v: v >= 1), "one or more dilations >= 1"),
        "model.unit_init": choice(UNIT_INITS),
        "model.cpu_sampler": choice(CPU_SAMPLERS),
        "model.backbone_widths": (_all(lambda v: v >= 1, 4, empty_ok=True),
                                  "empty or 4 widths >= 1"),
        "model.backbone_modules": (_all(lambda v: v >= 1, 3, empty_ok=True),
                                   "empty or 3 counts >= 1"),
        "model.backbone_blocks": (_all(lambda v: v >= 1, 3, empty_ok=True),
                                  "empty or 3 counts >= 1"),
        "loss.tradeoff_bg_weight": (_non_negative, ">= 0"),
        "loss.tradeoff_mask": choice(TRADEOFF_MASKS),
        "loss.offset_normaliser": choice(OFFSET_NORMALISERS),
        "loss.offset_weight": (_non_negative, ">= 0"),
        "loss.smooth_l1_beta": (_positive, "> 0"),
        "optim.lr": (_positive, "> 0"),
        "optim.weight_decay": (_non_negative, ">= 0"),
        "optim.batch_size": (lambda v: v >= 1, ">= 1"),
        "optim.epochs": (lambda v: v >= 1, ">= 1"),
        "optim.lr_drops": (_all(lambda v: 0 < v <= 1, empty_ok=True),
                           "fractions of the epochs in (0, 1]"),
        "optim.lr_factor": (_positive, "> 0"),
        "optim.amp": choice(AMP_MODES),
        "optim.grad_clip": (_non_negative, ">= 0 (0 = off)"),
        "optim.ema": (lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
        "eval.every": (_non_negative, ">= 0 (0 = never)"),
        "eval.val_images": (_non_negative, ">= 0 (0 = all)"),
        "eval.test_size": (lambda v: v >= SIZE_MULTIPLE, f">= {SIZE_MULTIPLE}"),
        "eval.decode.scales": (_all(_positive), "one or more scales > 0"),
        "eval.decode.max_people": (lambda v: v >= 1, ">= 1"),
        "eval.decode.center_threshold": (_non_negative, ">= 0"),
        "eval.decode.scale_decrease": (_non_negative, ">= 0"),
        "eval.decode.nms_distance": (_non_negative, ">= 0"),
        "eval.decode.nms_overlap": (lambda v: v >= 0, ">= 0"),
        "eval.decode.candidates": (lambda v: v >= 1, ">= 1"),
        "eval.decode.candidate_kernel": (lambda v: v >= 1 and v % 2 == 1, "an odd number >= 1"),
        "eval.decode.keypoint_threshold": (_non_negative, ">= 0"),
        "eval.decode.max_distance": (_non_negative, ">= 0"),
        "eval.decode.refine_threshold": (_non_negative, ">= 0"),
        "eval.decode.refine_window": (lambda v: v >= 3 and v % 2 == 1, "an odd number >= 3"),
        "eval.decode.refine_sigma": (_positive, "> 0"),
        "eval.scoring_mode": choice(SCORING_MODES),
        "eval.scorer_images": (_non_negative, ">= 0 (0 = all)"),
        "eval.qualities": (_all(_one_of(QUALITIES)), f"a list of {', '.join(QUALITIES)}"),
    }


def problems(cfg: Config) -> list[str]:
    """Every field of ``cfg`` out of its range, as ``"key=value must be ..."``."""
    values = flatten(cfg)
    found = []
    for key, (test, need) in _rules().items():
        value = values[key]
        try:
            ok = bool(test(value))
        except TypeError:  # a value of another type (set from python, not --set)
            ok = False
        if not ok:
            found.append(f"{key}={value!r} must be {need}")
    if not found and cfg.data.min_scale > cfg.data.max_scale:
        found.append(f"data.min_scale={cfg.data.min_scale!r} must be <= data.max_scale="
                     f"{cfg.data.max_scale!r}")
    return found


def check(cfg: Config) -> None:
    """Raise :class:`ConfigError` naming every field out of range (one line)."""
    found = problems(cfg)
    if found:
        fix = "fix with --set KEY=VALUE" if len(found) == 1 else "fix them with --set KEY=VALUE"
        raise ConfigError(f"config: {'; '.join(found)}; {fix}")


# What may change on a trained checkpoint's config: the data and the decoding.
CHECKPOINT_FREE = ("data.", "eval.decode.")


def apply_data_overrides(cfg: Config, overrides: list[str], num_keypoints: int) -> None:
    """Apply ``--set data.*`` and ``eval.decode.*`` overrides to a checkpoint's config in
    place (``eval``, ``predict``, ``rescore``: the model and its training come from the
    checkpoint, the data and the decoding may change), then check those fields and that the
    data's layout still has the model's ``num_keypoints``. Raises :class:`ConfigError`."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not key.startswith(CHECKPOINT_FREE):
            raise ConfigError(f"--set {item}: only data.* keys (and eval.decode.*) can change "
                              "here (the model and its training come from the checkpoint; "
                              f"retrain to change {key or 'them'})")
    apply_overrides(cfg, overrides)
    found = [p for p in problems(cfg) if p.startswith(CHECKPOINT_FREE)]
    if found:
        raise ConfigError(f"config: {'; '.join(found)}; fix with --set KEY=VALUE")
    k = cfg.data.spec.num_keypoints
    if k != num_keypoints:
        raise ConfigError(f"data.dataset={cfg.data.dataset!r} has {k} keypoints but the "
                          f"checkpoint's model predicts {num_keypoints}; use a checkpoint "
                          "trained on this layout")
