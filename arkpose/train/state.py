"""What a training checkpoint holds: built by :func:`_state`, restored by :func:`_restore`.

This is the one place that defines the contents of ``last.pt`` / ``best.pt``
(:mod:`arkpose.checkpoint` saves, loads and checks them). :data:`STATE_KEYS` lists the keys
every checkpoint has; :data:`OPTIONAL_KEYS` those present only sometimes:

- ``model``: the unwrapped model's ``state_dict`` (never DDP's ``module.`` prefix): with
  ``optim.ema`` > 0 the averaged weights (:mod:`arkpose.train.ema`), the ones validation and
  every evaluation use;
- ``optimizer``, ``scheduler``: their ``state_dict``\\ s;
- ``epoch``: epochs finished; ``step``: batches finished inside epoch ``epoch`` (0 at an
  epoch boundary; > 0 only when a run was interrupted mid-epoch);
- ``epoch_sums``: float64 ``[images, total, heatmap, offset (x images)]`` of the epoch so
  far, all ranks together (zeros at an epoch boundary; rank 0 carries them on resume);
- ``rng``: rank 0's python / numpy / torch (/ CUDA) generator states
  (:func:`arkpose.checkpoint.rng_state`);
- ``config``: :func:`arkpose.config.to_dict` of the run's config;
- ``metrics``: the latest epoch's metrics record; ``best``: ``{"name", "value", "epoch"}``
  of the best validation so far, or ``None``;
- ``version``: ``arkpose.__version__``;
- optional ``rng_ranks``: every rank's generator states, in rank order (DDP runs only);
- optional ``scaler``: the GradScaler's ``state_dict`` (``optim.amp=fp16`` only);
- optional ``online_model``, ``ema_updates`` (``optim.ema`` > 0 only): the weights being
  trained, and how many steps the average in ``model`` holds;
- ``paths``: added by :func:`arkpose.checkpoint.save_checkpoint` (the data root relative to
  the checkpoint's folder).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import arkpose
from arkpose import checkpoint as ckpt
from arkpose import config as config_lib
from arkpose.config import Config
from arkpose.train.distributed import DistEnv
from arkpose.train.ema import WeightAverage

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger("arkpose.train")

STATE_KEYS = (
    "model", "optimizer", "scheduler", "epoch", "step", "epoch_sums", "rng", "config",
    "metrics", "best", "version",
)
OPTIONAL_KEYS = ("rng_ranks", "scaler", "online_model", "ema_updates")


def _state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.MultiStepLR, scaler: torch.amp.GradScaler | None,
           epoch: int, step: int, sums: torch.Tensor, cfg: Config, metrics: dict,
           best: dict | None, rngs: list[dict], ema: WeightAverage | None = None) -> dict:
    """The checkpoint dict: :data:`STATE_KEYS`, plus :data:`OPTIONAL_KEYS` when they apply."""
    state = {
        "model": (ema.module if ema else model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "epoch_sums": sums.detach().cpu(),
        "rng": rngs[0],
        "config": config_lib.to_dict(cfg),
        "metrics": dict(metrics),
        "best": best,
        "version": arkpose.__version__,
    }
    if len(rngs) > 1:
        state["rng_ranks"] = rngs
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["online_model"], state["ema_updates"] = model.state_dict(), ema.updates
    return state


def _restore(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.MultiStepLR,
             scaler: torch.amp.GradScaler | None, env: DistEnv,
             ema: WeightAverage | None = None) -> None:
    """Load weights (and their average), optimiser, scheduler, scaler and this rank's
    generator states."""
    model.load_state_dict(state.get("online_model", state["model"]))
    if ema is not None:
        # A run that trained without the average starts one from its current weights.
        ema.module.load_state_dict(state["model"])
        ema.updates = int(state.get("ema_updates", 0))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(ckpt.scheduler_state_from_plain(state["scheduler"]))
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    ranks = state.get("rng_ranks", [state["rng"]])
    if len(ranks) == env.world_size:
        ckpt.set_rng_state(ranks[env.rank])
    else:
        LOG.warning(
            "resuming with %d process(es) from a %d-process checkpoint: generator states stay "
            "per-rank seeded, so numbers will not match an uninterrupted run bit for bit",
            env.world_size, len(ranks),
        )


def _warn_config_changes(state: dict, cfg: Config) -> None:
    before, now = config_lib.flatten(ckpt.checkpoint_config(state)), config_lib.flatten(cfg)
    changed = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in now if before.get(k) != now[k]]
    if changed:
        LOG.warning("resuming with a changed config: %s", "; ".join(changed))
