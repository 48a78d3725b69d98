"""Training curves: recorded while training, mirrored to TensorBoard, drawn for reports.

Each epoch's line of ``metrics.jsonl`` carries ``loss_curve``: ``[[global step, mean total
loss], ...]``, at most :data:`POINTS_PER_EPOCH` points, each the mean over an equal run of
steps (rank 0's batches under DDP). Per-step floats would cost a GPU sync each; one point per
run of steps costs one per run. Validation AP stays one number per validated epoch
(``val_AP``). With ``tensorboard: true`` in the config the same numbers also go to
``<run>/tensorboard/`` event files for watching a run live (the ``tensorboard`` extra).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from arkpose.config import Config, ConfigError

if TYPE_CHECKING:  # tensorboard is optional
    from torch.utils.tensorboard import SummaryWriter

POINTS_PER_EPOCH = 50
TENSORBOARD_DIR = "tensorboard"
EPOCH_SCALARS = ("loss", "heatmap", "offset", "lr", "images_per_s", "data_wait", "val_AP")


class LossCurve:
    """Means of the total loss over runs of ``ceil(steps_per_epoch / POINTS_PER_EPOCH)``
    steps; the sum stays on ``device`` between points."""

    def __init__(self, epoch: int, steps_per_epoch: int, device: torch.device):
        self.epoch, self.steps_per_epoch = epoch, steps_per_epoch
        self.every = max(1, math.ceil(steps_per_epoch / POINTS_PER_EPOCH))
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.images = 0
        self.points: list[list[float]] = []

    def add(self, loss: torch.Tensor, images: int, step: int) -> list[float] | None:
        """Add one step's mean ``loss`` over ``images``; ``step`` counts from 1 within the
        epoch. Returns the new ``[global step, mean loss]`` point when a run of steps ends."""
        self.total += loss.detach().double() * images
        self.images += images
        if step % self.every and step != self.steps_per_epoch:
            return None
        point = [self.epoch * self.steps_per_epoch + step, float(self.total / self.images)]
        self.points.append(point)
        self.total.zero_()
        self.images = 0
        return point


def _summary_writer():
    """torch's ``SummaryWriter`` class; a one-line ConfigError when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional (the tensorboard extra)
    except ImportError as err:
        raise ConfigError(
            "tensorboard=true needs the tensorboard package: pip install -e '.[tensorboard]' "
            "(or drop --set tensorboard=true; metrics.jsonl has the same numbers)") from err
    return SummaryWriter


def check_tensorboard(cfg: Config) -> None:
    """Raise the missing-package error before a run folder is created."""
    if cfg.tensorboard:
        _summary_writer()


def open_tensorboard(cfg: Config, out_dir: Path) -> SummaryWriter | None:
    """A ``SummaryWriter`` into ``out_dir/tensorboard`` when ``cfg.tensorboard``, else None."""
    return _summary_writer()(str(Path(out_dir) / TENSORBOARD_DIR)) if cfg.tensorboard else None


def write_epoch_scalars(board: SummaryWriter, record: dict[str, Any], global_step: int) -> None:
    """One epoch's record (``metrics.jsonl``) as scalars ``epoch/<name>`` at ``global_step``."""
    for name in EPOCH_SCALARS:
        value = record.get(name)
        if isinstance(value, (int, float)):
            board.add_scalar(f"epoch/{name}", float(value), global_step)
    board.flush()


def read_curves(run_dir: str | Path) -> dict[str, Any]:
    """A training run's curves from its ``metrics.jsonl``: ``loss`` ``[[x, loss], ...]`` with
    ``x`` the global step (``loss_unit`` "step"), or the epoch for runs recorded before
    ``loss_curve`` existed (each epoch's mean loss; ``loss_unit`` "epoch"), and ``val``
    ``[[epoch, val_AP], ...]``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training run folder?")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if records and all(r.get("loss_curve") for r in records):
        loss = [[float(s), float(v)] for r in records for s, v in r["loss_curve"]]
        unit = "step"
    else:
        loss = [[float(r["epoch"]), float(r["loss"])] for r in records if "loss" in r]
        unit = "epoch"
    val = [[int(r["epoch"]), float(r["val_AP"])] for r in records if r.get("val_AP") is not None]
    return {"loss": loss, "loss_unit": unit, "val": val}


def plot_training_curves(runs: dict[tuple[str, int], Path], title: str = ""):
    """Loss (left, log scale) and validation AP against epoch (right) of every
    ``(row, seed) -> run folder``: one colour per row, one line per seed."""
    # lazy: matplotlib (~0.5 s); training imports this module, not the plots
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(12, 4))
    rows = list(dict.fromkeys(row for row, _ in runs))
    units = set()
    for (row, seed), folder in runs.items():
        color = plt.cm.tab10(rows.index(row) % 10)
        curves = read_curves(folder)
        units.add(curves["loss_unit"])
        label = row if seed == min(s for r, s in runs if r == row) else None
        if curves["loss"]:
            ax_loss.plot(*zip(*curves["loss"]), color=color, lw=0.8, alpha=0.8, label=label)
        if curves["val"]:
            epochs, ap = zip(*curves["val"])
            ax_ap.plot(epochs, [100 * v for v in ap], "o-", color=color, ms=3, lw=0.8,
                       alpha=0.8, label=label)
    ax_loss.set(yscale="log", xlabel=" / ".join(sorted(units)) or "step",
                ylabel="training loss (total)", title="training loss, one line per seed")
    ax_ap.set(xlabel="epoch", ylabel="validation AP x 100 (final quality, val subset)",
              title="validation during training")
    for ax in (ax_loss, ax_ap):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
