"""One optimisation step and what shapes it: the learning-rate schedule, mixed precision,
and the errors a step can end in (out of memory, a non-finite loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import MultiStepLR

from arkpose.config import Config, ConfigError
from arkpose.train.distributed import DistEnv

# arkpose.loss.compute_losses(outputs, batch, ...) -> {"total", "heatmap", "offset"}
LossFn = Callable[..., dict[str, torch.Tensor]]


class OutOfMemory(RuntimeError):
    """CUDA ran out of memory; the message names the knob to lower."""


# ---------------------------------------------------------------------------------------
# Schedule


def lr_milestones(epochs: int, drops: tuple[float, ...]) -> list[int]:
    """Epoch indices (0-based) from which the learning rate is multiplied by the factor.

    ``round(f * epochs)``: the paper's 90/140 and 120/140 give epochs 90 and 120 for a
    140-epoch run, i.e. epochs 1..90 (1-based) train at 1e-3, 91..120 at 1e-4, the rest at
    1e-5. (The official code drops one epoch early; see docs/training.md.)
    """
    return [round(f * epochs) for f in drops]


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: Config) -> MultiStepLR:
    return MultiStepLR(
        optimizer, lr_milestones(cfg.optim.epochs, cfg.optim.lr_drops), gamma=cfg.optim.lr_factor
    )


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


def train_step(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, cfg: Config, compute_losses: LossFn) -> dict:
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


def _check_finite(sums: torch.Tensor, epoch: int, step: int) -> None:
    if not bool(torch.isfinite(sums).all()):
        raise FloatingPointError(
            f"the loss became {float(sums[1])} by epoch {epoch + 1} step {step}; lower "
            "optim.lr, or use optim.amp=bf16 / none instead of fp16"
        )
