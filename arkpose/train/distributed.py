"""Processes and devices: torchrun's environment, the process group, and the few
collectives the loop needs besides DDP's own (stop flags, generator states)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from arkpose import checkpoint as ckpt
from arkpose import runtime


@dataclass
class DistEnv:
    """Where this process sits: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # this call created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_name: str = "auto") -> DistEnv:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); start the
    process group (``nccl`` on CUDA, ``gloo`` on CPU) when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = runtime.resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if world > 1 else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    env = DistEnv(rank, world, local_rank, device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # Rank 0 validates alone while the others wait at a barrier: allow a long wait.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
        env.owns_group = True
    return env


def _gather_rng(env: DistEnv) -> list[dict]:
    """Every rank's generator states (rank order); on rank 0 only in DDP."""
    mine = ckpt.rng_state()
    if not env.distributed:
        return [mine]
    gathered: list[Any] = [None] * env.world_size if env.is_main else None  # type: ignore
    dist.gather_object(mine, gathered, dst=0)
    return gathered if env.is_main else []


def _any_rank(flag: bool, env: DistEnv) -> bool:
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
