"""Training: one loop for a laptop CPU and a GPU cluster (single process or torchrun/DDP).

``arkpose train --preset quick`` (or ``python -m arkpose.train``, or
``torchrun --nproc_per_node=N -m arkpose.train``, same arguments) trains a pose model and
leaves a run directory::

    config.yaml    the full config of the run
    metrics.jsonl  one line per epoch: loss parts and curve, lr, images/s, data wait, validation
    last.pt        the latest state (epoch boundary, or mid-epoch after Ctrl-C / SIGTERM)
    best.pt        the state with the best validation (final-quality AP; val loss before
                   the evaluator exists)
    train.log      what the progress bar and the log said

Resuming (``--resume``) restores weights, optimiser, scheduler, all random generator states
and the position inside the epoch, so an interrupted CPU run ends with the same numbers, bit
for bit, as one that never stopped. That rests on two facts: the sampler's order and the
augmentation are functions of (seed, epoch, index) (``DistributedSampler.set_epoch`` and
``dataset.set_epoch``), and nothing in the loop draws from a generator that is not saved.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

import arkpose
from arkpose import checkpoint as ckpt
from arkpose import config as config_lib
from arkpose import runtime
from arkpose.config import Config, ConfigError
from arkpose.config_check import check as check_config
from arkpose.curves import LossCurve, check_tensorboard, open_tensorboard, write_epoch_scalars
from arkpose.progress import bar as progress_bar

LOG = logging.getLogger("arkpose.train")

LAST, BEST = "last.pt", "best.pt"
METRICS, LOG_FILE, CONFIG_FILE = "metrics.jsonl", "train.log", "config.yaml"

# Exit statuses of `arkpose train` (shell conventions for SIGINT / SIGTERM).
EXIT_ERROR, EXIT_SIGINT, EXIT_SIGTERM = 1, 130, 143
EXIT_BAD_INPUT = 2  # config, data or checkpoint unusable: nothing was run (argparse's status)


class DataMissingError(FileNotFoundError):
    """The data directory or its annotation file is not there."""


class OutOfMemory(RuntimeError):
    """CUDA ran out of memory; the message names the knob to lower."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped training after ``last.pt`` was saved."""

    def __init__(self, signum: int, path: Path):
        self.signum, self.path = signum, path
        name = signal.Signals(signum).name
        super().__init__(
            f"training stopped by {name}; state saved to {path}. "
            f"Continue with the same command plus --resume"
        )


# ---------------------------------------------------------------------------------------
# Schedule


def lr_milestones(epochs: int, drops: tuple[float, ...]) -> list[int]:
    """Epoch indices (0-based) from which the learning rate is multiplied by the factor.

    ``round(f * epochs)``: the paper's 90/140 and 120/140 give epochs 90 and 120 for a
    140-epoch run, i.e. epochs 1..90 (1-based) train at 1e-3, 91..120 at 1e-4, the rest at
    1e-5. (The official code drops one epoch early; see docs/training.md.)
    """
    return [round(f * epochs) for f in drops]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, lr_milestones(cfg.optim.epochs, cfg.optim.lr_drops), gamma=cfg.optim.lr_factor
    )


# ---------------------------------------------------------------------------------------
# Processes and devices


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


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: Ctrl-C / SIGTERM reach the whole process group, but only the
    main process should react (finish the step, save, exit); a worker that died of them
    would turn the clean stop into a 'worker exited unexpectedly' error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class TrainLoader:
    """The training batches of one process: order, augmentation and worker seeds are
    functions of (cfg.seed, epoch, index, rank) only, never of the model or the loss, so
    every row of an ablation sees the same batches for a given seed (common random numbers)
    and a resumed run sees the batches it had not seen yet. Call :meth:`set_epoch` first."""

    def __init__(self, dataset: Any, cfg: Config, env: DistEnv):
        self.dataset, self.seed, self.rank = dataset, cfg.seed, env.rank
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
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 1009 + self.rank)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.loader)

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


# ---------------------------------------------------------------------------------------
# Signals


class _StopFlag:
    """Set by SIGINT / SIGTERM; the loop saves ``last.pt`` at the next step and stops.
    A second Ctrl-C aborts at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        LOG.warning(
            "%s received: saving last.pt after this step (Ctrl-C again aborts without saving)",
            signal.Signals(signum).name,
        )

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# ---------------------------------------------------------------------------------------
# Logging and run directory


def _setup_logging(out_dir: Path, is_main: bool) -> list[logging.Handler]:
    if not is_main:
        return []

    class TqdmHandler(logging.Handler):  # print above the progress bar, not through it
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    file_handler = logging.FileHandler(out_dir / LOG_FILE)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    console = TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [file_handler, console]
    for h in handlers:
        LOG.addHandler(h)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    return handlers


def read_metrics(out_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (one per finished epoch)."""
    path = Path(out_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(out_dir: Path, epochs_done: int) -> None:
    """Drop records of epochs past the checkpoint (written before a crash, redone now)."""
    records = [r for r in read_metrics(out_dir) if r.get("epoch", 0) <= epochs_done]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (out_dir / METRICS).write_text(text)


# ---------------------------------------------------------------------------------------
# Validation


def validate(model: torch.nn.Module, cfg: Config) -> dict:
    """Validation record ``{"val_AP": ...}``: the final-quality AP (flip test, full
    grouping) on the first ``cfg.eval.val_images`` validation images."""
    from arkpose.evaluate import evaluate_model

    was_training = model.training
    model.eval()
    try:
        stats = evaluate_model(
            model, cfg, split="val", qualities=("final",),
            max_images=cfg.eval.val_images, progress=False,
        )
        return {"val_AP": float(stats["final"]["AP"])}
    finally:
        model.train(was_training)


def _improved(record: dict, best: dict | None) -> bool:
    if "val_AP" not in record:
        return False
    return best is None or best.get("name") != "val_AP" or record["val_AP"] > best["value"]


# ---------------------------------------------------------------------------------------
# Mixed precision and memory errors


_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _check_amp(amp: str, device: torch.device) -> None:
    if amp not in ("none", *_AMP_DTYPES):
        raise ConfigError(f"optim.amp={amp!r}: use none, bf16 or fp16")
    if amp != "none" and device.type != "cuda":
        raise ConfigError(
            f"optim.amp={amp} needs a CUDA device (this run uses {device}); "
            "use --set optim.amp=none on CPU"
        )


def _autocast(device: torch.device, amp: str):
    return torch.autocast(
        device.type, dtype=_AMP_DTYPES.get(amp, torch.float32), enabled=amp != "none"
    )


def _oom_message(cfg: Config, env: DistEnv) -> str:
    bs, size = cfg.optim.batch_size, cfg.data.input_size
    amp_hint = "" if cfg.optim.amp != "none" else ", or use mixed precision (--set optim.amp=bf16)"
    return (
        f"CUDA ran out of memory on {env.device} training {cfg.model.backbone} at "
        f"{bs} images of {size} px per GPU. Lower optim.batch_size (e.g. --set "
        f"optim.batch_size={max(1, bs // 2)}) or data.input_size{amp_hint}"
    )


# ---------------------------------------------------------------------------------------
# The loop


def train_step(model, batch: dict, optimizer, scaler, cfg: Config, compute_losses) -> dict:
    """One optimisation step on ``batch`` (on the model's device); returns the losses.

    The forward pass runs under autocast when ``cfg.optim.amp`` asks for it; the losses are
    computed in fp32. ``scaler`` is a GradScaler for fp16, else None.
    """
    device = batch["image"].device
    with _autocast(device, cfg.optim.amp):
        outputs = model(batch["image"])
    outputs = {k: v.float() for k, v in outputs.items()}
    losses = compute_losses(
        outputs, batch, offset_weight=cfg.loss.offset_weight, beta=cfg.loss.smooth_l1_beta
    )
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(losses["total"]).backward()
        scaler.unscale_(optimizer)  # so that clipping sees true gradient norms
    else:
        losses["total"].backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return losses


def _state(model, optimizer, scheduler, scaler, epoch, step, sums, cfg, metrics, best, rngs):
    state = {
        "model": model.state_dict(),
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
    return state


def _restore(state: dict, model, optimizer, scheduler, scaler, env: DistEnv) -> None:
    """Load weights, optimiser, scheduler, scaler and this rank's generator states."""
    model.load_state_dict(state["model"])
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


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train ``cfg`` into ``out_dir``; returns the last epoch's metrics record.

    Args:
        resume: continue from ``out_dir/last.pt`` (weights, optimiser, scheduler, RNG states,
            position in the epoch). Without it, an ``out_dir`` holding ``last.pt`` is refused.
        progress: show the tqdm bar (rank 0 only).
        stop_after: train at most this many epochs in this call, then return (``last.pt``
            is saved at every epoch end), e.g. to fit a cluster's time limit; ``--resume``
            continues.

    Raises:
        DataMissingError, ConfigError, CheckpointError: with the fix in the message.
        TrainingInterrupted: after Ctrl-C / SIGTERM, once ``last.pt`` is saved.
    """
    out_dir = Path(out_dir)
    check_config(cfg)  # every field in range before anything is created
    threads = runtime.configure_threads()
    _check_amp(cfg.optim.amp, runtime.resolve_device(cfg.device))
    check_data(cfg)
    check_tensorboard(cfg)
    if not resume and (out_dir / LAST).exists():
        raise ConfigError(
            f"{out_dir} already holds {LAST}: pass --resume to continue that run, or choose "
            "another --out"
        )
    if resume and not (out_dir / LAST).exists():
        raise ckpt.CheckpointNotFoundError(
            f"--resume: {out_dir / LAST} does not exist, nothing to resume; drop --resume "
            "to start a new run"
        )
    if resume:  # a model the checkpoint does not fit: name the fields now, not 60 tensors later
        ckpt.check_resumable(out_dir / LAST, cfg)

    env = setup_distributed(cfg.device)
    handlers: list[logging.Handler] = []
    stop = _StopFlag()
    board = None
    try:
        if env.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        if env.distributed:
            dist.barrier()
        handlers = _setup_logging(out_dir, env.is_main)
        board = open_tensorboard(cfg, out_dir) if env.is_main else None
        stop.install()
        return _run(cfg, out_dir, env, resume, progress, stop_after, stop, threads, board)
    finally:
        stop.restore()
        if board:
            board.close()
        for h in handlers:
            LOG.removeHandler(h)
            h.close()
        if env.owns_group:
            dist.destroy_process_group()


def _run(cfg: Config, out_dir: Path, env: DistEnv, resume: bool, progress: bool,
         stop_after: int | None, stop: _StopFlag, threads: int, board: Any = None) -> dict:
    from arkpose.data import build_train_dataset
    from arkpose.loss import compute_losses
    from arkpose.model import build_model

    device, amp = env.device, cfg.optim.amp
    spec = cfg.data.spec

    # Same initial weights on every rank (DDP also broadcasts rank 0's), and on every row of
    # an ablation where names and shapes agree (keyed by seed and module name); per-rank
    # seeds after.
    runtime.seed_everything(cfg.seed)
    model = build_model(cfg.model, spec.num_keypoints, seed=cfg.seed).to(device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runtime.seed_everything(cfg.seed + env.rank)

    dataset = build_train_dataset(cfg, split="train")
    loader = TrainLoader(dataset, cfg, env)

    # The fused kernel is ~5x faster than the per-parameter loop on CPU (3 vs 17 ms a step for
    # tiny-w16's 201 tensors) and exists for CPU and CUDA only.
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    scheduler = make_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    effective_batch = cfg.optim.batch_size * env.world_size
    LOG.info(
        "arkpose %s | %s | %s | %d process(es) on %s, %d thread(s) | batch %d x %d = "
        "effective %d | lr %g (not scaled with world size) | %d train images | lr drops "
        "x%g at epochs %s",
        arkpose.__version__, cfg.name, cfg.model.backbone, env.world_size, device, threads,
        cfg.optim.batch_size, env.world_size, effective_batch, cfg.optim.lr, len(dataset),
        cfg.optim.lr_factor, lr_milestones(cfg.optim.epochs, cfg.optim.lr_drops),
    )

    start_epoch, start_step, best = 0, 0, None
    sums = torch.zeros(4, dtype=torch.float64)  # images, total, heatmap, offset (x images)
    last_record: dict = {}
    if resume:
        state = ckpt.load_checkpoint(out_dir / LAST, map_location="cpu")
        _restore(state, model, optimizer, scheduler, scaler, env)
        _warn_config_changes(state, cfg)
        start_epoch, start_step = int(state["epoch"]), int(state.get("step", 0))
        if env.is_main and start_step > 0:  # rank 0 carries all ranks' partial sums
            sums = state["epoch_sums"].to(torch.float64)
        best, last_record = state.get("best"), dict(state.get("metrics", {}))
        if env.is_main:
            _truncate_metrics(out_dir, start_epoch)
        LOG.info("resumed from %s at epoch %d step %d", out_dir / LAST, start_epoch, start_step)
    sums = sums.to(device)

    train_model: torch.nn.Module = model
    if env.distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if env.is_main:
        config_lib.save_yaml(cfg, out_dir / CONFIG_FILE)

    def save(path: Path, epoch: int, step: int, metrics: dict, partial: bool = False) -> None:
        """Collective: every rank calls it, rank 0 writes. ``partial``: mid-epoch, keep the
        epoch's loss sums (all ranks' together; rank 0 carries them on resume)."""
        rngs = _gather_rng(env)
        totals = sums.clone() if partial else torch.zeros_like(sums)
        if partial and env.distributed:
            dist.all_reduce(totals)
        if env.is_main:
            ckpt.save_checkpoint(
                path,
                _state(model, optimizer, scheduler, scaler, epoch, step, totals, cfg, metrics,
                       best, rngs),
            )

    end_epoch = cfg.optim.epochs
    if stop_after is not None:
        end_epoch = min(end_epoch, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        skip = start_step * cfg.optim.batch_size if epoch == start_epoch else 0
        step0 = start_step if epoch == start_epoch else 0
        if not (epoch == start_epoch and start_step > 0):
            sums.zero_()
        loader.set_epoch(epoch, skip)
        lr = optimizer.param_groups[0]["lr"]
        train_model.train()
        bar = progress_bar(
            total=step0 + len(loader), initial=step0, enabled=progress and env.is_main,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", dynamic_ncols=True, leave=False,
        )
        t_epoch, wait, images = time.perf_counter(), 0.0, 0
        curve = LossCurve(epoch, step0 + len(loader), device)
        t_ready = time.perf_counter()
        step = step0
        for batch in loader:
            wait += time.perf_counter() - t_ready
            batch = _to_device(batch, device, cfg.model.channels_last)
            n = batch["image"].shape[0]
            try:
                losses = train_step(train_model, batch, optimizer, scaler, cfg, compute_losses)
            except torch.cuda.OutOfMemoryError as err:
                raise OutOfMemory(_oom_message(cfg, env)) from err
            sums += torch.stack([
                torch.tensor(float(n), dtype=torch.float64, device=device),
                *(losses[k].detach().double() * n for k in ("total", "heatmap", "offset")),
            ])
            step += 1
            images += n
            bar.update(1)
            point = curve.add(losses["total"], n, step)
            if point and board:
                board.add_scalar("loss/total", point[1], point[0])
            # Reading the sums syncs with the GPU: there, only every 10 steps.
            if device.type == "cpu" or step % 10 == 0 or step == step0 + len(loader):
                _check_finite(sums, epoch, step)
                rate = images * env.world_size / max(time.perf_counter() - t_epoch, 1e-9)
                bar.set_postfix(loss=f"{float(sums[1] / sums[0]):.5f}", lr=f"{lr:.1e}",
                                img_s=f"{rate:.1f}")
            if _any_rank(bool(stop.signum), env):
                bar.close()
                save(out_dir / LAST, epoch, step, last_record, partial=True)
                if env.distributed:
                    dist.barrier()
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, out_dir / LAST)
            if device.type == "cuda":
                # So that `wait` is time the GPU sat idle for data, not time the CPU ran ahead.
                torch.cuda.synchronize(device)
            t_ready = time.perf_counter()
        bar.close()
        seconds = time.perf_counter() - t_epoch

        totals = sums.clone()
        if env.distributed:
            dist.all_reduce(totals)
            # BN is not synchronised (as in the paper): each rank's last forward left its own
            # running statistics. Adopt rank 0's, the ones checkpoints and validation use.
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
        scheduler.step()
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": float(totals[1] / totals[0]),
            "heatmap": float(totals[2] / totals[0]),
            "offset": float(totals[3] / totals[0]),
            "lr": lr,
            "images_per_s": images * env.world_size / max(seconds, 1e-9),
            "data_wait": wait / max(seconds, 1e-9),
            "seconds": seconds,
            "world_size": env.world_size,
            "batch_size": cfg.optim.batch_size,
            "effective_batch_size": effective_batch,
            "loss_curve": curve.points,
        }
        every = cfg.eval.every
        if every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == cfg.optim.epochs):
            if env.is_main:
                record.update(validate(model, cfg))
            if env.distributed:
                box = [record]
                dist.broadcast_object_list(box, src=0)
                record = box[0]
        improved = _improved(record, best)
        if improved:
            best = {"name": "val_AP", "value": record["val_AP"], "epoch": epoch + 1}
        record["best"] = best
        last_record = record
        if env.is_main:
            with open(out_dir / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
            LOG.info(_format_record(record))
            if board:
                write_epoch_scalars(board, record, (epoch + 1) * curve.steps_per_epoch)
        save(out_dir / LAST, epoch + 1, 0, record)
        if improved and env.is_main:
            ckpt.copy_checkpoint(out_dir / LAST, out_dir / BEST)
        start_step = 0
        if env.distributed:
            dist.barrier()
        if _any_rank(bool(stop.signum), env):
            raise TrainingInterrupted(stop.signum, out_dir / LAST)
    return last_record


def _check_finite(sums: torch.Tensor, epoch: int, step: int) -> None:
    if not bool(torch.isfinite(sums).all()):
        raise FloatingPointError(
            f"the loss became {float(sums[1])} by epoch {epoch + 1} step {step}; lower "
            "optim.lr, or use optim.amp=bf16 / none instead of fp16"
        )


def _format_record(r: dict) -> str:
    text = (
        f"epoch {r['epoch']}: loss {r['loss']:.6f} (heatmap {r['heatmap']:.6f}, offset "
        f"{r['offset']:.4f}) lr {r['lr']:.1e} {r['images_per_s']:.1f} img/s "
        f"data wait {100 * r['data_wait']:.0f}%"
    )
    if "val_AP" in r:
        text += f" val_AP {r['val_AP']:.4f}"
    return text


def _warn_config_changes(state: dict, cfg: Config) -> None:
    before, now = config_lib.flatten(ckpt.checkpoint_config(state)), config_lib.flatten(cfg)
    changed = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in now if before.get(k) != now[k]]
    if changed:
        LOG.warning("resuming with a changed config: %s", "; ".join(changed))


# ---------------------------------------------------------------------------------------
# Command line (shared by `arkpose train`, `python -m arkpose.train` and torchrun)


def build_parser(prog: str = "arkpose train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a pose model from a preset. Multi-GPU: torchrun --nproc_per_node=N "
        "-m arkpose.train (same arguments).",
    )
    p.add_argument("--preset", choices=sorted(config_lib.PRESETS),
                   help="named config (required unless --resume reads the run's config.yaml)")
    p.add_argument("--data", metavar="DIR", help="dataset root (sets data.root); required for "
                   f"the real-data presets {', '.join(config_lib.REAL_DATA_PRESETS)}")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend",
                   default=[], help="config overrides, e.g. --set model.adaptive=false optim.epochs=5")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="train at most N epochs in this call, then exit (resume later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[Config, Path]:
    """The run's config and directory from parsed arguments (raises ConfigError)."""
    if args.preset is None:
        if not (args.resume and args.out):
            raise ConfigError("--preset is required (or --resume with --out of an existing run)")
        cfg = config_lib.load_yaml(Path(args.out) / CONFIG_FILE)
    else:
        cfg = config_lib.preset(args.preset)
        if args.preset in config_lib.REAL_DATA_PRESETS and not args.data:
            raise ConfigError(
                f"preset {args.preset} trains on {cfg.data.dataset.upper()}, which is not "
                f"bundled: pass --data DIR with {cfg.data.train_ann} and {cfg.data.train_images} "
                "inside (or try --preset quick on SynthPose)"
            )
    if args.data:
        cfg.data.root = args.data
    config_lib.apply_overrides(cfg, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    return cfg, out


def main(argv: list[str] | None = None, prog: str = "arkpose train") -> int:
    from arkpose.data import DatasetError

    args = build_parser(prog).parse_args(argv)
    try:
        cfg, out = config_from_args(args)
        metrics = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                        stop_after=args.stop_after)
    except TrainingInterrupted as err:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_SIGINT if err.signum == signal.SIGINT else EXIT_SIGTERM
    except (ConfigError, DataMissingError, DatasetError, ckpt.CheckpointError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FloatingPointError, OutOfMemory) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in metrics.items() if k != "best"}
        print(json.dumps({"out": str(out), **summary, "best": metrics.get("best")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m arkpose.train"))
