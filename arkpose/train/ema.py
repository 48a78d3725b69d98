"""An exponential moving average of the weights, the model a run evaluates and ships.

Between two seeds, much of an ablation row's AP spread is where each run happened to stop on
its noisy last steps (issue 17). Averaging the last few hundred steps' weights removes most
of that. The average covers parameters and buffers (BatchNorm's running statistics follow the
averaged weights' statistics closely enough at these decays; integer buffers are copied).

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so a short run
is not dominated by its random initial weights (``0.999 ** 500`` would still give them 60%).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def warmup_decay(decay: float, updates: int) -> float:
    """The decay of update ``updates + 1``: ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """EMA of ``model``'s state: ``avg <- d·avg + (1 − d)·current`` per :meth:`update`.

    ``module`` is a frozen copy of the model holding the averaged state (the one to evaluate
    and save); ``updates`` counts the steps averaged so far.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema must be in (0, 1) (0 = off), got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list, list]:
        mine, theirs = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        others = [k for k in mine if k not in set(floats)]
        return ([mine[k] for k in floats], [theirs[k].detach() for k in floats],
                [mine[k] for k in others], [theirs[k] for k in others])

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current state into the average (call after each optimiser step)."""
        d = warmup_decay(self.decay, self.updates)
        avg, cur, avg_other, cur_other = self._pairs(model)
        for a, c in zip(avg, cur):
            a.lerp_(c, 1.0 - d)
        for a, c in zip(avg_other, cur_other):
            a.copy_(c)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
