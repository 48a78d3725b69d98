"""What made a number: run identities (digests) and the provenance block of every report.

A training run's identity is a digest of everything that changes its weights: the fully
resolved config (every field but those of :data:`NOT_IN_DIGEST`: ``ablation_seeds`` says how
many runs to make, not how one is made, ``tensorboard`` only adds a log, ``launch.*`` says
where it runs), the dataset (:func:`dataset_digest`) and the arkpose version. An
evaluation's identity adds every setting that changes its numbers. ``identity.json`` in a
run folder holds the digest and its inputs, so a re-run can tell in one line what changed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import arkpose
from arkpose import config as config_lib

IDENTITY_FILE = "identity.json"
# Fields (or whole sections) that say how or where to run, not what is computed.
NOT_IN_DIGEST = ("ablation_seeds", "pretrain_epochs", "tensorboard", "launch")
REPO = Path(__file__).resolve().parents[1]


def digest(obj: Any) -> str:
    """sha256 of the canonical json of ``obj`` (sorted keys), hex."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (cached per path, size and modification time)."""
    st = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def dataset_digest(cfg: config_lib.Config) -> str:
    """Digest of the dataset ``cfg`` trains and validates on: both annotation files and,
    for SynthPose, its ``manifest.json`` (generator version and arguments). Image files are
    not read: they are named by the annotations, and SynthPose renders them from the
    manifest."""
    root = Path(cfg.data.root)
    parts = {name: file_sha256(root / rel)
             for name, rel in (("train", cfg.data.train_ann), ("val", cfg.data.val_ann))}
    manifest = root / "manifest.json"
    if manifest.is_file():
        parts["manifest"] = file_sha256(manifest)
    return digest(parts)


def run_inputs(cfg: config_lib.Config) -> dict[str, Any]:
    """Everything a training run's weights depend on (module doc)."""
    flat = {k: v for k, v in config_lib.flatten(cfg).items()
            if k not in NOT_IN_DIGEST and k.split(".")[0] not in NOT_IN_DIGEST}
    if flat.get("model.init_backbone"):  # the backbone's weights, wherever the file lies
        from arkpose.train.pretrained import backbone_sha256  # lazy: torch

        flat["model.init_backbone"] = "backbone-sha256:" + backbone_sha256(flat["model.init_backbone"])
    return {"kind": "train", "arkpose": arkpose.__version__, "data": dataset_digest(cfg),
            "config": flat}


def identity(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"digest": digest(inputs), "inputs": inputs}


def read_identity(folder: Path) -> dict | None:
    path = Path(folder) / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return None
    return data if isinstance(data, dict) and "digest" in data else None


def describe_change(old: dict, new: dict, limit: int = 4) -> str:
    """``"optim.epochs 10 -> 3, seed 0 -> 1"``: what differs between two identities' inputs."""
    a = config_lib.flatten_dict(old.get("inputs", {}))
    b = config_lib.flatten_dict(new.get("inputs", {}))
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    parts = [f"{k.removeprefix('config.')} {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
             for k in changed[:limit]]
    if len(changed) > limit:
        parts.append(f"and {len(changed) - limit} more")
    return ", ".join(parts) or "inputs differ"


# ---------------------------------------------------------------------------------------
# Environment


def git_state(repo: Path = REPO) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the arkpose checkout."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                 timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def device_name(device: str = "auto") -> str:
    """The CPU model, or the GPU's name when ``device`` resolves to CUDA."""
    import torch  # lazy: torch (~1.3 s); ablate and strata use this module without a model

    from arkpose import runtime  # lazy: it imports torch

    resolved = runtime.resolve_device(device)
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(cfg: config_lib.Config) -> dict[str, Any]:
    """The provenance fields that describe this process and machine."""
    import torch  # lazy: torch (~1.3 s), as device_name

    from arkpose import runtime  # lazy: it imports torch

    return {
        "arkpose": arkpose.__version__,
        **{f"git_{k}": v for k, v in git_state().items()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(cfg.device),
        "threads": runtime.num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def markdown_block(prov: dict[str, Any]) -> str:
    """A few markdown lines that say how a table was made (for the end of a .md export)."""
    keys = ("arkpose", "git_commit", "git_dirty", "preset", "seeds", "dataset_digest",
            "oks_sigma_scale", "evaluation", "unit_init", "date", "device", "threads",
            "train_threads", "launcher")
    lines = [f"- {k}: {prov[k]}" for k in keys if k in prov]
    return "\nProvenance:\n\n" + "\n".join(lines) + "\n"
