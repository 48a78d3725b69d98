"""Training checkpoints: atomic save, safe (``weights_only``) load, model rebuild.

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` can read:
tensors, dicts, lists, tuples, numbers, strings, booleans and ``None`` only. Its contents are
defined in one place, :mod:`arkpose.train.state` (``_state`` builds the dict, ``_restore``
loads it, ``STATE_KEYS`` / ``OPTIONAL_KEYS`` and the module docstring list the keys).
This module adds one key when it saves:

- ``paths``: ``{"data.root": ...}``, the config's data root relative to the checkpoint's
  folder (added by :func:`save_checkpoint`), so that :func:`load_model` finds the data from
  any working directory, and after the runs and the data moved together.
"""

from __future__ import annotations

import collections
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

import arkpose
from arkpose import config as config_lib
from arkpose.model import PoseNet, build_model


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that lacks what the caller needs."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


# ---------------------------------------------------------------------------------------
# Plain values: what weights_only loading accepts


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` with every container turned into a builtin dict/list and numpy into torch.

    Raises ``TypeError`` naming the offending entry for anything else (a class instance,
    a function), so a checkpoint that ``weights_only`` loading would refuse is never written.
    ``collections.Counter`` (``MultiStepLR.milestones``) becomes a plain dict.
    """
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):  # includes Counter, OrderedDict and other subclasses
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which torch.load(weights_only=True) cannot "
        "read; store tensors, dicts, lists, numbers and strings only"
    )


# ---------------------------------------------------------------------------------------
# Random generator states


def rng_state() -> dict:
    """The python, numpy (legacy global) and torch generator states as plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
         nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------
# Save / load


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a
    rename, so an interrupted save leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = to_plain(state)
    if isinstance(plain.get("config"), dict) and plain["config"].get("data", {}).get("root"):
        root = Path(plain["config"]["data"]["root"]).resolve()
        plain["paths"] = {"data.root": os.path.relpath(root, path.parent.resolve())}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(plain, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _check_kind(path: Path) -> None:
    """Refuse, naming the file, what torch.save cannot have written: a folder, an empty
    file, or one that is neither a zip archive (torch's format) nor a pickle (its old one)."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the .pt file inside it "
                              f"(e.g. {path / 'best.pt'})")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); use another checkpoint "
                              "(best.pt or last.pt of the run)")
    if not head.startswith((b"PK", b"\x80")):
        raise CheckpointError(
            f"{path} is not a checkpoint: torch checkpoints are zip archives and this file "
            f"starts with {head!r}; pass a .pt file written by `arkpose train` (RUN/best.pt)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``);
    ``mmap`` maps the tensors instead of reading them (to look at the config only)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"checkpoint {path} does not exist. Train one with `arkpose train --preset quick "
            f"--out {path.parent}`, or check the path"
        )
    _check_kind(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for truncated / foreign files
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch colours its message
        first = text.splitlines()[0] if text else type(err).__name__
        if "weights_only" in str(err) or "Weights only" in str(err):
            hint = (
                "it holds python objects besides tensors and dicts, so it was not written by "
                "arkpose (official HRNet/DEKR checkpoints load through arkpose.compat.official)"
            )
        else:
            hint = (
                "the file is corrupt or truncated (e.g. a copy or a save that was cut off); "
                "delete it and use another checkpoint (best.pt), or start again without --resume"
            )
        raise CheckpointError(f"cannot read checkpoint {path}: {hint}. ({first})") from err
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not an arkpose checkpoint dict"
        )
    return state


def _require(state: dict, keys: tuple[str, ...], path: str | Path) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing} (keys present: {sorted(state)}); it was not "
            "written by `arkpose train`"
        )


def checkpoint_config(state: dict, path: str | Path = "checkpoint") -> config_lib.Config:
    """The :class:`~arkpose.config.Config` stored in a loaded checkpoint."""
    _require(state, ("config",), path)
    return config_lib.from_dict(state["config"])


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[PoseNet, config_lib.Config]:
    """Rebuild the model described by a checkpoint's config and load its weights.

    Returns ``(model, cfg)``; the model is in eval mode on ``device``. ``cfg.data.spec`` is
    its keypoint layout, the ``spec`` the inference entry points (arkpose.inference) take.
    """
    state = load_checkpoint(path)
    _require(state, ("model", "config"), path)
    cfg = checkpoint_config(state, path)
    model = build_model(cfg.model, cfg.data.spec.num_keypoints)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit the model its config describes "
            f"(backbone {cfg.model.backbone}): {weights_mismatch(model.state_dict(), state['model'])}; "
            f"it may come from another arkpose version (checkpoint {state.get('version')}, "
            f"installed {arkpose.__version__})"
        ) from err
    model.to(device).eval()  # build_model already made it channels-last when configured
    cfg.data.root = data_root(state, path)
    return model, cfg


def data_root(state: dict, path: str | Path) -> str:
    """The absolute data root of a loaded checkpoint: the ``paths`` entry resolved against
    the checkpoint's folder; for a checkpoint without it (older arkpose), the config's root
    under the nearest folder above the checkpoint that holds it (a relative root was relative
    to where training ran, usually the project root), then the working directory. Falls back
    to the stored value when none exists, so the error names what the run was trained on."""
    stored = state["config"]["data"]["root"]
    folder = Path(path).resolve().parent
    relative = state.get("paths", {}).get("data.root")
    candidates = [folder / relative] if relative else []
    if Path(stored).is_absolute():
        candidates.append(Path(stored))
    else:
        candidates += [parent / stored for parent in (folder, *folder.parents)] + [Path(stored)]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    return stored


def weights_mismatch(expected: dict, stored: dict) -> str:
    """One line: how the ``stored`` state dict differs from the ``expected`` one (counts of
    tensors of another shape, missing and unexpected, with an example of the first kind)."""
    shape = [k for k in expected if k in stored and tuple(expected[k].shape) != tuple(stored[k].shape)]
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    parts = []
    if shape:
        k = shape[0]
        parts.append(f"{len(shape)} tensor(s) of another shape (e.g. {k}: checkpoint "
                     f"{list(stored[k].shape)}, model {list(expected[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return ", ".join(parts) or "no difference in names or shapes"


# Model fields that do not change the weights a run has learned: resuming may change them.
NOT_MODEL_SHAPE = ("model.channels_last", "model.unit_init")


def model_changes(saved: config_lib.Config, cfg: config_lib.Config) -> list[str]:
    """``"key before -> now"`` for each model field (and keypoint count) ``cfg`` changes."""
    before, now = config_lib.flatten(saved), config_lib.flatten(cfg)
    changes = [f"{k} {before.get(k)!r} -> {now[k]!r}" for k in now
               if k.startswith("model.") and k not in NOT_MODEL_SHAPE and before.get(k) != now[k]]
    k0, k1 = saved.data.spec.num_keypoints, cfg.data.spec.num_keypoints
    if k0 != k1:
        changes.append(f"data.dataset {saved.data.dataset!r} -> {cfg.data.dataset!r} "
                       f"({k0} -> {k1} keypoints)")
    return changes


def check_resumable(path: str | Path, cfg: config_lib.Config) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a readable checkpoint whose model
    ``cfg`` describes too, naming the config fields that differ. Cheap: the tensors are
    memory-mapped, not read."""
    state = load_checkpoint(path, mmap=True)
    changes = model_changes(checkpoint_config(state, path), cfg)
    if changes:
        raise CheckpointError(
            f"cannot resume {path}: the config changes the run's model ({'; '.join(changes)}); "
            "drop those --preset/--set changes (--resume --out RUN alone reuses RUN's config) "
            "or start a new run with another --out")


# MultiStepLR keeps its milestones in a Counter; checkpoints hold a plain dict.
def scheduler_state_from_plain(state: dict) -> dict:
    """Undo :func:`to_plain` for a ``MultiStepLR`` state dict (dict -> Counter)."""
    state = dict(state)
    if isinstance(state.get("milestones"), dict):
        state["milestones"] = collections.Counter(state["milestones"])
    return state


def copy_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Copy a checkpoint file atomically (``best.pt`` from ``last.pt``)."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
