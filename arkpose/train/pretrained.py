"""Starting a run from another run's backbone (``model.init_backbone``).

On a laptop CPU, Table 4's rows cannot each be trained from scratch long enough for their
differences to stand out of the seed-to-seed noise (issue 17). The paper starts every row from
the same ImageNet-pretrained HRNet; the CPU presets stand in for that with one shared run on the
training set whose backbone every row and seed starts from (``Config.pretrain_epochs``,
:func:`arkpose.ablate.pretrain_job`; docs/ablations.md, "Shared backbone"). The heads stay
freshly initialised per seed, and the whole network trains.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch

from arkpose import checkpoint as ckpt

PREFIX = "backbone."


class BackboneMismatch(ValueError):
    """The checkpoint's backbone does not fit the model's."""


def backbone_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors (parameters and BN buffers) of a checkpoint, prefix removed."""
    state = ckpt.load_checkpoint(path)
    weights = {k[len(PREFIX):]: v for k, v in state.get("model", {}).items() if k.startswith(PREFIX)}
    if not weights:
        raise BackboneMismatch(f"model.init_backbone={path}: the checkpoint holds no backbone "
                               "weights; pass a last.pt written by arkpose train")
    return weights


def backbone_sha256(path: str | Path) -> str:
    """sha256 of what :func:`load_backbone` copies from checkpoint ``path``: each backbone
    tensor's name, dtype, shape and bytes, in name order. Two runs that trained the same
    weights give the same digest even though their files differ (optimizer, random states,
    timings), so the rows started from them are reused. Cached per path, size and mtime."""
    st = os.stat(path)
    return _backbone_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _backbone_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(backbone_weights(path).items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # a 0-d tensor has no byte view
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_backbone(model: torch.nn.Module, path: str | Path) -> None:
    """Copy the backbone of checkpoint ``path`` into ``model.backbone`` (every tensor must
    match by name and shape)."""
    weights = backbone_weights(path)
    own = model.backbone.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or extra or shapes:
        what = (f"{len(missing)} missing (e.g. {missing[:2]})" if missing else
                f"{len(extra)} unexpected (e.g. {extra[:2]})" if extra else
                f"other shapes (e.g. {shapes[0]}: {tuple(weights[shapes[0]].shape)} vs "
                f"{tuple(own[shapes[0]].shape)})")
        raise BackboneMismatch(f"model.init_backbone={path}: its backbone does not fit "
                               f"model.backbone={_backbone_name(model)}: {what}; pretrain with the "
                               "same model.backbone* settings")
    model.backbone.load_state_dict(weights)


def _backbone_name(model: torch.nn.Module) -> str:
    return type(model.backbone).__name__ + f"({sum(p.numel() for p in model.backbone.parameters())} params)"
