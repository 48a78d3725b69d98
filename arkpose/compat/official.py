"""Official checkpoints (HRNet-Bottom-up-Pose-Estimation @ b7a0551) <-> arkpose PoseNet.

``load_official(state_dict_or_path, variant="w32") -> PoseNet`` and its exact inverse
``to_official(model) -> OrderedDict`` (official key names, shapes and order, tied heatmap
branch weights written under all three names; the layout of
../shared/spec/official_state_dict.md). The mapping is a renaming plus two conventions:

- offsets: the official regression layer predicts position − keypoint; arkpose predicts
  keypoint − position, so the 2K offset rows (weights and biases) of ``final_layers.1`` are
  negated. Its last output channel is the center heatmap in both.
- the ART blocks' constant ``regular_matrix`` buffer is not stored by arkpose; it is
  checked on load and written on export.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from arkpose.config import ModelConfig
from arkpose.model import PoseNet, build_model
from arkpose.model.adaptive import AdaptiveUnit, regular_grid, tie_weights

# variant -> (backbone preset, heatmap head width, number of keypoints)
VARIANTS: dict[str, tuple[str, int, int]] = {
    "w32": ("w32", 32, 17),
    "w48": ("w48", 48, 17),
    "crowdpose-w32": ("w32", 32, 14),
    "crowdpose-w48": ("w48", 48, 14),
}

_UNIT_NAMES = {  # arkpose unit submodule -> official STNBLOCK submodule
    "tconv1": "transform_matrix_conv1",
    "aconv1": "stn_conv1",
    "bn1": "bn1",
    "tconv2": "transform_matrix_conv2",
    "aconv2": "stn_conv2",
    "bn2": "bn2",
}
_UNIT_NAMES_INV = {v: k for k, v in _UNIT_NAMES.items()}
# Official file order of the head groups (the backbone comes first, rank 0).
_GROUP_RANK = {
    "transition_cls": 1,
    "transition_reg": 2,
    "multi_level_layers_4x_heatmap": 3,
    "multi_level_layers_4x_regression": 4,
    "final_layers.0": 5,
    "final_layers.1": 6,
}
MAX_LISTED = 10


class OfficialCheckpointError(ValueError):
    """An official checkpoint that does not fit the requested variant."""


def official_config(variant: str = "w32") -> tuple[ModelConfig, int]:
    """The arkpose ModelConfig and keypoint count of an official variant."""
    try:
        backbone, heat, k = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown official variant {variant!r}; variants are {sorted(VARIANTS)}") from None
    return ModelConfig(backbone=backbone, heatmap_channels=heat, regression_channels=256), k


# Head layers that map by prefix alone: (arkpose prefix, official prefix).
_HEAD_PREFIXES = (
    ("heatmap_head.transition.", "transition_cls."),
    ("regression_head.transition.", "transition_reg."),
    ("heatmap_head.classifier.", "final_layers.0."),
    ("regression_head.classifier.", "final_layers.1."),
)


def to_official_name(name: str) -> str:
    """arkpose state-dict key -> official key."""
    if name.startswith("backbone."):
        return name[len("backbone."):]
    m = re.fullmatch(r"heatmap_head\.branches\.(\d+)\.(\w+)\.(.+)", name)
    if m:
        return f"multi_level_layers_4x_heatmap.{m[1]}.0.{_UNIT_NAMES[m[2]]}.{m[3]}"
    m = re.fullmatch(r"regression_head\.unit\.(\w+)\.(.+)", name)
    if m:
        return f"multi_level_layers_4x_regression.0.0.{_UNIT_NAMES[m[1]]}.{m[2]}"
    for ours, theirs in _HEAD_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(f"no official name for arkpose key {name!r}")


def from_official_name(name: str) -> str:
    """official key -> arkpose state-dict key (``regular_matrix`` has none)."""
    m = re.fullmatch(r"multi_level_layers_4x_heatmap\.(\d+)\.0\.(\w+)\.(.+)", name)
    if m:
        return f"heatmap_head.branches.{m[1]}.{_UNIT_NAMES_INV[m[2]]}.{m[3]}"
    m = re.fullmatch(r"multi_level_layers_4x_regression\.0\.0\.(\w+)\.(.+)", name)
    if m:
        return f"regression_head.unit.{_UNIT_NAMES_INV[m[1]]}.{m[2]}"
    for ours, theirs in _HEAD_PREFIXES:
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    return "backbone." + name


def _rank(official_name: str) -> int:
    for prefix, rank in _GROUP_RANK.items():
        if official_name.startswith(prefix + "."):
            return rank
    return 0


def _flip_offset_rows(t: torch.Tensor, num_offsets: int) -> torch.Tensor:
    """Negate the first ``num_offsets`` output rows (weight or bias); a new tensor."""
    out = t.clone()
    out[:num_offsets] = -out[:num_offsets]
    return out


def _check_official_shape(model: PoseNet) -> None:
    units = [*model.heatmap_head.branches, model.regression_head.unit]
    if not all(isinstance(u, AdaptiveUnit) for u in units) or not model.guidance:
        raise ValueError(
            "only models with adaptive units and heatmap guidance (model.adaptive=true, "
            "model.guidance=true) have an official layout"
        )


def to_official(model: PoseNet) -> OrderedDict[str, torch.Tensor]:
    """The official state_dict of ``model``: names, shapes, order and conventions of the
    official code (offset rows negated, ``regular_matrix`` buffers, tied copies)."""
    _check_official_shape(model)
    num_offsets = model.regression_head.classifier.out_channels - 1
    items = []
    block_prefixes = set()
    for name, tensor in model.state_dict().items():
        off = to_official_name(name)
        tensor = tensor.detach().clone().contiguous()
        if off in ("final_layers.1.weight", "final_layers.1.bias"):
            tensor = _flip_offset_rows(tensor, num_offsets)
        block = re.match(r"(multi_level_layers_4x_\w+\.\d+\.0)\.", off)
        if block and block[1] not in block_prefixes:
            # The constant buffer opens each ART block, as in the official file.
            block_prefixes.add(block[1])
            items.append((block[1] + ".regular_matrix", regular_grid(tensor.device)))
        items.append((off, tensor))
    items.sort(key=lambda kv: _rank(kv[0]))  # stable: keeps declaration order within groups
    return OrderedDict(items)


def _unwrap(checkpoint, entry: str | None) -> Mapping:
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"official checkpoint {path} does not exist")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise OfficialCheckpointError(f"expected a state_dict (a mapping), got {type(checkpoint).__name__}")
    if entry is not None:
        if entry not in checkpoint:
            raise OfficialCheckpointError(f"checkpoint has no entry {entry!r}; it has {sorted(checkpoint)[:20]}")
        checkpoint = checkpoint[entry]
    elif "state_dict" in checkpoint or "best_state_dict" in checkpoint:
        # checkpoint.pth.tar (training resume): the model of the saved epoch.
        checkpoint = checkpoint.get("state_dict", checkpoint.get("best_state_dict"))
    keys = list(checkpoint)
    if keys and all(k.startswith("module.") for k in keys):  # DDP-wrapped
        checkpoint = OrderedDict((k[len("module."):], v) for k, v in checkpoint.items())
    return checkpoint


def _guess_variant(sd: Mapping) -> str:
    w = sd.get("transition_cls.0.weight")
    k = sd.get("final_layers.0.weight")
    if w is None or k is None:
        return "unknown (no transition_cls.0.weight / final_layers.0.weight)"
    for variant, (_, heat, nk) in VARIANTS.items():
        if tuple(w.shape[:1]) == (heat,) and k.shape[0] == nk:
            return variant
    return f"unknown (heatmap head width {w.shape[0]}, {k.shape[0]} keypoints)"


def _mismatch_report(sd: Mapping, expected: Mapping, variant: str) -> str | None:
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if not (missing or extra or shapes):
        return None
    lines = [f"checkpoint does not match the official {variant!r} layout ({len(expected)} keys expected, {len(sd)} given):"]
    for title, items in (("missing keys", missing), ("unexpected keys", extra), ("shape mismatches", shapes)):
        if items:
            lines.append(f"  {len(items)} {title}, first {min(len(items), MAX_LISTED)}:")
            lines += [f"    {x}" for x in items[:MAX_LISTED]]
    guess = _guess_variant(sd)
    if guess != variant:
        lines.append(f"  the checkpoint looks like variant {guess!r}; pass variant=... accordingly")
    return "\n".join(lines)


def load_official(checkpoint, variant: str = "w32", entry: str | None = None) -> PoseNet:
    """An arkpose PoseNet (eval mode) holding the weights of an official checkpoint.

    checkpoint: a state_dict (bare, or ``module.``-prefixed from DDP), a ``checkpoint.pth.tar``
        dict (its ``state_dict``, or ``entry="best_state_dict"``), or a path to any of these.
    variant: "w32", "w48", "crowdpose-w32" (14 joints) or "crowdpose-w48".
    Raises OfficialCheckpointError listing the first missing / unexpected / mis-shaped keys.
    """
    cfg, k = official_config(variant)
    sd = _unwrap(checkpoint, entry)
    with torch.device("meta"):  # no memory, no initialisation: every tensor comes from sd
        model = build_model(cfg, k)
    expected = to_official(model)
    report = _mismatch_report(sd, expected, variant)
    if report:
        raise OfficialCheckpointError(report)
    grid = regular_grid()
    for name in expected:
        if name.endswith(".regular_matrix") and not torch.equal(sd[name].float().cpu(), grid):
            raise OfficialCheckpointError(f"{name} is {sd[name].tolist()}, expected the regular 3x3 grid {grid.tolist()}")
    num_offsets = 2 * k
    ours = {}
    for name, tensor in sd.items():
        if name.endswith(".regular_matrix"):
            continue
        tensor = tensor.detach().to("cpu", torch.float32 if tensor.is_floating_point() else tensor.dtype)
        if name in ("final_layers.1.weight", "final_layers.1.bias"):
            tensor = _flip_offset_rows(tensor, num_offsets)
        ours[from_official_name(name)] = tensor.clone()
    _resolve_tied(model, ours)
    model.load_state_dict(ours, strict=True, assign=True)
    tie_weights(list(model.heatmap_head.branches))  # assign=True gave each name its own Parameter
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


def _resolve_tied(model: PoseNet, ours: dict) -> None:
    """Tied heatmap-branch weights: the official model writes all three names into one tensor,
    so the last branch's copy wins. Warn when the copies disagree; use that one for all."""
    branches = model.heatmap_head.branches
    last = len(branches) - 1
    for sub in branches[0].tied:
        names = [f"heatmap_head.branches.{b}.{sub}.weight" for b in range(len(branches))]
        winner = ours[names[last]]
        if not all(torch.equal(ours[n], winner) for n in names):
            warnings.warn(
                f"tied weights {to_official_name(names[0])} differ between the heatmap branches; "
                f"using branch {last}'s copy as the official model does",
                stacklevel=3,
            )
        for n in names:
            ours[n] = winner
