"""The training data of one process: the data check, the resumable sampler and
:class:`TrainLoader` (batches as functions of seed, epoch, index and rank only)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from arkpose.config import Config
from arkpose.train.distributed import DistEnv
from arkpose.train.signals import _ignore_stop_signals

if TYPE_CHECKING:
    from arkpose.data.datasets import TrainDataset


class DataMissingError(FileNotFoundError):
    """The data directory or its annotation file is not there."""


# ---------------------------------------------------------------------------------------
# Data


def check_data(cfg: Config) -> None:
    """Fail early, naming the fix, when the training data is not where the config says."""
    root = Path(cfg.data.root)
    synth = getattr(cfg.data, "synth_preset", "") or ""
    if cfg.data.dataset == "synth":
        fix = (
            f"Generate SynthPose with `arkpose synth --out {root} --preset {synth or 'quick'}`"
            ", or point --data at an existing SynthPose directory"
        )
    else:
        fix = f"Pass --data DIR pointing at your {cfg.data.dataset.upper()} directory"
    if not root.is_dir():
        raise DataMissingError(f"data directory {root} does not exist. {fix}")
    ann = root / cfg.data.train_ann
    if not ann.is_file():
        raise DataMissingError(
            f"annotation file {ann} is missing (data.root={root}, data.train_ann="
            f"{cfg.data.train_ann}). {fix}"
        )


class ResumableSampler(Sampler):
    """A :class:`DistributedSampler` that can start ``skip`` indices into its epoch,
    so a run resumed mid-epoch sees exactly the batches it had not seen yet."""

    def __init__(self, base: DistributedSampler):
        self.base = base
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class BatchCache:
    """The collated training batches of one data setting, per epoch, kept in memory.

    An ablation trains its rows one after another in one process, and a row's batches are
    functions of (seed, epoch, index, rank) and the data settings only, so the next row of
    the same seed would augment and render the very same batches again (~a quarter of a
    CPU step here). :class:`TrainLoader` stores an epoch it iterated in full under its
    key, and serves it back to any loader with that key: bit for bit the same batches
    (tests/test_train.py). One data setting at a time (a new key drops the old); an epoch
    that would take the total past the budget is not kept.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.epochs: dict[int, list[dict]] = {}
        self.nbytes = 0

    def get(self, key: tuple, epoch: int) -> list[dict] | None:
        return self.epochs.get(epoch) if key == self.key else None

    def room(self, key: tuple, budget_bytes: float) -> float:
        """Bytes an epoch under ``key`` may take (a new key would drop what is kept)."""
        return budget_bytes - (self.nbytes if key == self.key else 0)

    def put(self, key: tuple, epoch: int, batches: list[dict], budget_bytes: float) -> None:
        if key != self.key:
            self.clear()
            self.key = key
        size = sum(_nbytes(b) for b in batches)
        if self.nbytes + size <= budget_bytes:
            self.epochs[epoch] = batches
            self.nbytes += size

    def clear(self) -> None:
        self.key, self.epochs, self.nbytes = None, {}, 0


BATCH_CACHE = BatchCache()


def _nbytes(batch: dict) -> int:
    return sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor))


class TrainLoader:
    """The training batches of one process: order, augmentation and worker seeds are
    functions of (cfg.seed, epoch, index, rank) only, never of the model or the loss, so
    every row of an ablation sees the same batches for a given seed (common random numbers)
    and a resumed run sees the batches it had not seen yet. Call :meth:`set_epoch` first."""

    def __init__(self, dataset: TrainDataset, cfg: Config, env: DistEnv):
        self.dataset, self.seed, self.rank = dataset, cfg.seed, env.rank
        self.epoch = self.skip = 0
        # launch.batch_cache_gb: reuse the batches of an earlier run in this process
        # (BatchCache); only in-process ablations and pool workers have one, and only
        # datasets that can say what their samples depend on take part.
        shared = not cfg.launch.submitted and hasattr(dataset, "batch_key")
        self.cache_bytes = cfg.launch.batch_cache_gb * 1e9 if shared else 0.0
        self.cache_key = (dataset.batch_key(), cfg.optim.batch_size, env.rank,
                          env.world_size) if self.cache_bytes > 0 else None
        self.sampler = ResumableSampler(DistributedSampler(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed
        ))
        # The loader draws its worker base seed from this generator, never from the global one.
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset, batch_size=cfg.optim.batch_size, sampler=self.sampler,
            num_workers=cfg.data.workers, pin_memory=env.device.type == "cuda", drop_last=False,
            generator=self.generator,
            persistent_workers=False,  # workers must pick up dataset.set_epoch every epoch
            worker_init_fn=_ignore_stop_signals,
        )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order and augmentation draws; start ``skip`` samples in."""
        self.sampler.set_epoch(epoch, skip)
        self.epoch, self.skip = epoch, skip
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 1009 + self.rank)

    def __iter__(self) -> Iterator[dict]:
        if self.cache_key is None or self.skip:  # a resumed epoch starts mid-way: not cached
            yield from self.loader
            return
        cached = BATCH_CACHE.get(self.cache_key, self.epoch)
        if cached is not None:
            for batch in cached:
                yield dict(batch)  # a new dict each time: callers may add or replace keys
            return
        kept, size, room = [], 0, BATCH_CACHE.room(self.cache_key, self.cache_bytes)
        for batch in self.loader:
            if kept is not None:
                size += _nbytes(batch)
                if size <= room:
                    kept.append(batch)
                else:
                    kept = None  # over the budget: keep none of this epoch
            yield dict(batch)
        if kept is not None:  # complete epochs only
            BATCH_CACHE.put(self.cache_key, self.epoch, kept, self.cache_bytes)

    def __len__(self) -> int:
        return len(self.loader)


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if key == "image" and channels_last:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out
