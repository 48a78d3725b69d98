"""Training losses (docs/method.md §3), pure tensor functions.

- Eq. (4), heatmap loss: :func:`heatmap_loss` — squared error on the K keypoint heatmaps and
  the center heatmap, weighted by the tradeoff mask and the ignore mask.
- Eq. (5), offset loss: :func:`offset_loss` — smooth-L1 (β = 1/9) on the offsets, weighted
  by the per-person normaliser, divided by the number of positive weights.
- Eq. (6), total: :func:`compute_losses` — heatmap + λ · offset with λ = 0.01.

The paper's center term ||C − C*||² is, as in the official code, the last channel of the
heatmap loss.
"""

from __future__ import annotations

import torch


def heatmap_loss(
    pred: torch.Tensor, target: torch.Tensor, tradeoff_mask: torch.Tensor, ignore_mask: torch.Tensor
) -> torch.Tensor:
    """Eq. (4): mean over (channels, H, W) of (pred − gt)² · mask · ignore, averaged over the batch.

    pred, target: (N, K+1, h, w), the center last; tradeoff_mask: (N, 1, h, w) (one mask for
    all channels, official) or (N, K+1, h, w) (per keypoint); ignore_mask: (N, 1, h, w),
    1 = use, 0 = ignore. Returns a scalar.
    """
    if pred.shape != target.shape:
        raise ValueError(f"heatmap pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    for name, mask in (("tradeoff_mask", tradeoff_mask), ("ignore_mask", ignore_mask)):
        if mask.dim() != 4 or mask.shape[0] != pred.shape[0] or mask.shape[1] not in (1, pred.shape[1]) \
                or mask.shape[2:] != pred.shape[2:]:
            raise ValueError(
                f"{name} must be (N, 1 or {pred.shape[1]}, h, w) for heatmaps {tuple(pred.shape)}, "
                f"got {tuple(mask.shape)}"
            )
    per_image = ((pred - target) ** 2 * tradeoff_mask * ignore_mask).mean(dim=(1, 2, 3))
    return per_image.mean()


def smooth_l1(diff: torch.Tensor, beta: float = 1.0 / 9.0) -> torch.Tensor:
    """Elementwise smooth-L1: 0.5·d²/β where |d| < β, else |d| − 0.5·β."""
    a = diff.abs()
    return torch.where(a < beta, 0.5 * a**2 / beta, a - 0.5 * beta)


def offset_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, beta: float = 1.0 / 9.0
) -> torch.Tensor:
    """Eq. (5): Σ smoothL1_β(pred − gt) · w / #(w > 0) over the whole batch.

    pred, target, weights: (N, 2K, h, w). With no positive weight the loss is the plain sum
    Σ smoothL1 · w (= 0 when all weights are 0; the official code divides by 1), so a batch
    without persons contributes nothing and keeps the graph.
    """
    if not (pred.shape == target.shape == weights.shape):
        raise ValueError(
            f"offset pred {tuple(pred.shape)}, target {tuple(target.shape)} and weights "
            f"{tuple(weights.shape)} must have one shape"
        )
    count = (weights > 0).sum().clamp(min=1)
    return (smooth_l1(pred - target, beta) * weights).sum() / count


def compute_losses(
    outputs: dict, batch: dict, offset_weight: float = 0.01, beta: float = 1.0 / 9.0
) -> dict[str, torch.Tensor]:
    """Eq. (6): total = heatmap loss (eq. 4) + λ · offset loss (eq. 5), λ = ``offset_weight``.

    outputs: PoseNet.forward's dict (``heatmaps`` (N, K, h, w), ``center`` (N, 1, h, w),
    ``offsets`` (N, 2K, h, w)); batch: the batched make_targets keys ``heatmaps``
    (N, K+1, h, w) center last, ``tradeoff_mask``, ``ignore_mask``, ``offsets``,
    ``offset_weights``. Returns {"total", "heatmap", "offset"} scalar tensors (the offset
    part unweighted, for logging).
    """
    missing = [k for k in ("heatmaps", "tradeoff_mask", "ignore_mask", "offsets", "offset_weights") if k not in batch]
    if missing:
        raise KeyError(f"batch lacks target(s) {missing}; make_targets provides them")
    pred_heat = torch.cat([outputs["heatmaps"], outputs["center"]], 1)
    heat = heatmap_loss(pred_heat, batch["heatmaps"], batch["tradeoff_mask"], batch["ignore_mask"])
    off = offset_loss(outputs["offsets"], batch["offsets"], batch["offset_weights"], beta)
    return {"total": heat + offset_weight * off, "heatmap": heat, "offset": off}
