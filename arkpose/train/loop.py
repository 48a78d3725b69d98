"""The training loop: :func:`train` checks its inputs, sets up the process and the run
folder, then runs the named steps :func:`_build`, :func:`_resume`, :func:`_train_epoch`
and :func:`_end_epoch` (see :mod:`arkpose.train` for the guarantees they keep)."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

import arkpose
from arkpose import checkpoint as ckpt
from arkpose import runtime
from arkpose.config import Config, ConfigError
from arkpose.config_check import check as check_config
from arkpose.curves import LossCurve, check_tensorboard, open_tensorboard, write_epoch_scalars
from arkpose.data import build_train_dataset
from arkpose.loss import compute_losses
from arkpose.model import build_model
from arkpose.progress import bar as progress_bar
from arkpose.train.distributed import DistEnv, _any_rank, _gather_rng, setup_distributed
from arkpose.train.ema import WeightAverage
from arkpose.train.loader import TrainLoader, _to_device, check_data
from arkpose.train.pretrained import load_backbone
from arkpose.train.rundir import (
    BEST,
    LAST,
    _append_metrics,
    _save_config,
    _setup_logging,
    _truncate_metrics,
)
from arkpose.train.signals import TrainingInterrupted, _StopFlag
from arkpose.train.state import _restore, _state, _warn_config_changes
from arkpose.train.step import (
    LossFn,
    OutOfMemory,
    _check_amp,
    _check_finite,
    _oom_message,
    lr_milestones,
    make_scheduler,
)
from arkpose.train.validation import _improved

if TYPE_CHECKING:  # tensorboard is optional
    from torch.utils.tensorboard import SummaryWriter

LOG = logging.getLogger("arkpose.train")


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




@dataclass
class _Run:
    """Everything one call of :func:`_run` holds between its steps."""

    cfg: Config
    out_dir: Path
    env: DistEnv
    stop: _StopFlag
    board: SummaryWriter | None
    model: torch.nn.Module
    loader: TrainLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler | None
    compute_losses: LossFn
    train_model: torch.nn.Module | None = None  # the model, DDP-wrapped with several processes
    ema: WeightAverage | None = None  # optim.ema > 0: the averaged weights validated and saved
    start_epoch: int = 0
    start_step: int = 0  # batches already done in start_epoch (resumed mid-epoch)
    best: dict | None = None
    last_record: dict = field(default_factory=dict)
    # images, total, heatmap, offset (x images) of the epoch so far, on this rank
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(4, dtype=torch.float64))


@dataclass
class _EpochStats:
    lr: float
    images: int
    wait: float
    seconds: float
    curve: LossCurve


def _run(cfg: Config, out_dir: Path, env: DistEnv, resume: bool, progress: bool,
         stop_after: int | None, stop: _StopFlag, threads: int, board: SummaryWriter | None = None) -> dict:
    run = _build(cfg, out_dir, env, stop, board, threads)
    if resume:
        _resume(run)
    run.sums = run.sums.to(env.device)
    run.train_model = run.model
    if env.distributed:
        device = env.device
        run.train_model = torch.nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if env.is_main:
        _save_config(cfg, out_dir)

    end_epoch = cfg.optim.epochs
    if stop_after is not None:
        end_epoch = min(end_epoch, run.start_epoch + stop_after)
    for epoch in range(run.start_epoch, end_epoch):
        stats = _train_epoch(run, epoch, progress)
        _end_epoch(run, epoch, stats)
    return run.last_record


def _build(cfg: Config, out_dir: Path, env: DistEnv, stop: _StopFlag, board: SummaryWriter | None,
           threads: int) -> _Run:
    """Model, data, optimiser, scheduler and scaler of a fresh run; logs the setup."""
    device = env.device
    # Same initial weights on every rank (DDP also broadcasts rank 0's), and on every row of
    # an ablation where names and shapes agree (keyed by seed and module name); per-rank
    # seeds after.
    runtime.seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.data.spec.num_keypoints, seed=cfg.seed).to(device)
    if cfg.model.init_backbone:
        load_backbone(model, cfg.model.init_backbone)
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
    scaler = torch.amp.GradScaler("cuda") if cfg.optim.amp == "fp16" else None

    LOG.info(
        "arkpose %s | %s | %s | %d process(es) on %s, %d thread(s) | batch %d x %d = "
        "effective %d | lr %g (not scaled with world size) | %d train images | lr drops "
        "x%g at epochs %s",
        arkpose.__version__, cfg.name, cfg.model.backbone, env.world_size, device, threads,
        cfg.optim.batch_size, env.world_size, cfg.optim.batch_size * env.world_size,
        cfg.optim.lr, len(dataset),
        cfg.optim.lr_factor, lr_milestones(cfg.optim.epochs, cfg.optim.lr_drops),
    )
    ema = WeightAverage(model, cfg.optim.ema) if cfg.optim.ema > 0 else None
    return _Run(cfg, out_dir, env, stop, board, model, loader, optimizer, scheduler, scaler,
                compute_losses, ema=ema)


def _resume(run: _Run) -> None:
    """Restore ``last.pt``: states, position in the epoch, partial sums, best, metrics."""
    env, last = run.env, run.out_dir / LAST
    state = ckpt.load_checkpoint(last, map_location="cpu")
    _restore(state, run.model, run.optimizer, run.scheduler, run.scaler, env, run.ema)
    _warn_config_changes(state, run.cfg)
    run.start_epoch, run.start_step = int(state["epoch"]), int(state.get("step", 0))
    if env.is_main and run.start_step > 0:  # rank 0 carries all ranks' partial sums
        run.sums = state["epoch_sums"].to(torch.float64)
    run.best, run.last_record = state.get("best"), dict(state.get("metrics", {}))
    if env.is_main:
        _truncate_metrics(run.out_dir, run.start_epoch)
    LOG.info("resumed from %s at epoch %d step %d", last, run.start_epoch, run.start_step)


def _save(run: _Run, epoch: int, step: int, metrics: dict, partial: bool = False) -> None:
    """Write ``last.pt``. Collective: every rank calls it, rank 0 writes. ``partial``:
    mid-epoch, keep the epoch's loss sums (all ranks' together; rank 0 carries them on
    resume)."""
    env = run.env
    rngs = _gather_rng(env)
    totals = run.sums.clone() if partial else torch.zeros_like(run.sums)
    if partial and env.distributed:
        dist.all_reduce(totals)
    if env.is_main:
        ckpt.save_checkpoint(
            run.out_dir / LAST,
            _state(run.model, run.optimizer, run.scheduler, run.scaler, epoch, step, totals,
                   run.cfg, metrics, run.best, rngs, run.ema),
        )


def _train_epoch(run: _Run, epoch: int, progress: bool) -> _EpochStats:
    """One pass over this rank's batches (from ``run.start_step`` in the first epoch of a
    resumed run). After SIGINT / SIGTERM on any rank: save ``last.pt`` mid-epoch and raise
    :class:`TrainingInterrupted`."""
    from arkpose import train as package  # looked up here so that patching train.train_step holds

    cfg, env, loader, sums = run.cfg, run.env, run.loader, run.sums
    device = env.device
    resuming = epoch == run.start_epoch and run.start_step > 0
    step0 = run.start_step if epoch == run.start_epoch else 0
    if not resuming:
        sums.zero_()
    loader.set_epoch(epoch, step0 * cfg.optim.batch_size)
    lr = run.optimizer.param_groups[0]["lr"]
    run.train_model.train()
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
            losses = package.train_step(run.train_model, batch, run.optimizer, run.scaler, cfg,
                                        run.compute_losses)
        except torch.cuda.OutOfMemoryError as err:
            raise OutOfMemory(_oom_message(cfg, env)) from err
        if run.ema is not None:
            run.ema.update(run.model)
        sums += torch.stack([
            torch.tensor(float(n), dtype=torch.float64, device=device),
            *(losses[k].detach().double() * n for k in ("total", "heatmap", "offset")),
        ])
        step += 1
        images += n
        bar.update(1)
        point = curve.add(losses["total"], n, step)
        if point and run.board:
            run.board.add_scalar("loss/total", point[1], point[0])
        # Reading the sums syncs with the GPU: there, only every 10 steps.
        if device.type == "cpu" or step % 10 == 0 or step == step0 + len(loader):
            _check_finite(sums, epoch, step)
            rate = images * env.world_size / max(time.perf_counter() - t_epoch, 1e-9)
            bar.set_postfix(loss=f"{float(sums[1] / sums[0]):.5f}", lr=f"{lr:.1e}",
                            img_s=f"{rate:.1f}")
        if _any_rank(bool(run.stop.signum), env):
            bar.close()
            _save(run, epoch, step, run.last_record, partial=True)
            if env.distributed:
                dist.barrier()
            raise TrainingInterrupted(run.stop.signum or signal.SIGTERM, run.out_dir / LAST)
        if device.type == "cuda":
            # So that `wait` is time the GPU sat idle for data, not time the CPU ran ahead.
            torch.cuda.synchronize(device)
        t_ready = time.perf_counter()
    bar.close()
    return _EpochStats(lr, images, wait, time.perf_counter() - t_epoch, curve)


def _end_epoch(run: _Run, epoch: int, stats: _EpochStats) -> None:
    """Reduce the epoch's sums, step the schedule, validate, write the record, save
    ``last.pt`` (and ``best.pt``); raise :class:`TrainingInterrupted` if a signal came."""
    from arkpose import train as package  # looked up here so that patching train.validate holds

    cfg, env, model = run.cfg, run.env, run.model
    seconds = stats.seconds
    totals = run.sums.clone()
    if env.distributed:
        dist.all_reduce(totals)
        # BN is not synchronised (as in the paper): each rank's last forward left its own
        # running statistics. Adopt rank 0's, the ones checkpoints and validation use.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    run.scheduler.step()
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "loss": float(totals[1] / totals[0]),
        "heatmap": float(totals[2] / totals[0]),
        "offset": float(totals[3] / totals[0]),
        "lr": stats.lr,
        "images_per_s": stats.images * env.world_size / max(seconds, 1e-9),
        "data_wait": stats.wait / max(seconds, 1e-9),
        "seconds": seconds,
        "world_size": env.world_size,
        "batch_size": cfg.optim.batch_size,
        "effective_batch_size": cfg.optim.batch_size * env.world_size,
        "loss_curve": stats.curve.points,
    }
    every = cfg.eval.every
    if every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == cfg.optim.epochs):
        if env.is_main:
            record.update(package.validate(run.ema.module if run.ema else model, cfg))
        if env.distributed:
            box = [record]
            dist.broadcast_object_list(box, src=0)
            record = box[0]
    improved = _improved(record, run.best)
    if improved:
        run.best = {"name": "val_AP", "value": record["val_AP"], "epoch": epoch + 1}
    record["best"] = run.best
    run.last_record = record
    if env.is_main:
        _append_metrics(run.out_dir, record)
        if run.board:
            write_epoch_scalars(run.board, record, (epoch + 1) * stats.curve.steps_per_epoch)
    _save(run, epoch + 1, 0, record)
    if improved and env.is_main:
        ckpt.copy_checkpoint(run.out_dir / LAST, run.out_dir / BEST)
    run.start_step = 0
    if env.distributed:
        dist.barrier()
    if _any_rank(bool(run.stop.signum), env):
        raise TrainingInterrupted(run.stop.signum, run.out_dir / LAST)
