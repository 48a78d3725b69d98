"""Timed checks of the model (plain script, not collected by pytest).

    ARKPOSE_THREADS=2 .venv/bin/python tests/benchmarks/bench_model.py [--repeats 5] [--skip-w32]

Prints: the fp32 ceiling of this CPU (a large matmul's multiply-adds per second; no conv
runs faster, so MACs / ceiling is a floor for every timing below), W32 forward at 512
(eval, no grad; target <= 1.3 s with 2 threads), the adaptive
conv against F.conv2d of the same shape, the adaptive conv's forward+backward per CPU
training sampler (batch 16, 32x32, 16/48/64 channels), and training-step time per image at 128 px for the
CPU presets (targets: tiny-w16 ~9 ms/image, nano-w16 ~6 ms/image), then the laptop preset's
regular and adaptive models at 1 thread against the 1-thread ceiling (how its pool workers
train; issue 17's target: step <= 2.5x the floor). Times are min-of-N; on a
shared machine they vary with the load, so the script also prints the load average.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from arkpose.config import ModelConfig
from arkpose.loss import compute_losses
from arkpose.model import adaptive_conv2d, build_model, count_params_and_macs
from arkpose.presets import preset
from arkpose.runtime import configure_threads, fp32_ceiling


def best_of(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_ceiling(repeats: int) -> float:
    """Multiply-adds per second of a large fp32 matmul: the most any conv reaches here."""
    rate = fp32_ceiling(repeats) * 1e9
    print(f"fp32 ceiling (2048^3 matmul): {rate / 1e9:.1f} G MAC/s")
    return rate


def bench_w32(repeats: int, ceiling: float) -> None:
    model = build_model(ModelConfig(backbone="w32"), 17).eval()
    x = torch.randn(1, 3, 512, 512)
    params, macs = count_params_and_macs(ModelConfig(backbone="w32"), 512)
    with torch.no_grad():
        t = best_of(lambda: model(x), repeats)
    print(
        f"w32 forward 512x512: {t:.3f} s  ({params / 1e6:.2f} M params, {macs / 1e9:.1f} G MACs; "
        f"at the fp32 ceiling >= {macs / ceiling:.2f} s)"
    )


def bench_adaptive_conv(repeats: int) -> None:
    x = torch.randn(1, 256, 128, 128).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3)
    t = 0.1 * torch.randn(1, 4, 128, 128)
    with torch.no_grad():
        ours = best_of(lambda: adaptive_conv2d(x, t, w, 1), repeats)
        conv = best_of(lambda: F.conv2d(x, w, padding=1), repeats)
    print(f"adaptive conv 256->256 at 128x128: {ours:.3f} s (regular conv2d {conv:.3f} s)")


def bench_adaptive_train(repeats: int) -> None:
    """Forward + backward of one adaptive conv per CPU training sampler, A/B in one run."""
    for c in (16, 48, 64):
        x = torch.randn(16, c, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_()
        t = (torch.eye(2).reshape(1, 4, 1, 1) + 0.3 * torch.randn(16, 4, 32, 32)).requires_grad_()
        w = (0.1 * torch.randn(c, c, 3, 3)).requires_grad_()
        grad = torch.randn(16, c, 32, 32)
        times = {}
        for sampler in ("padded", "embedding_bag", "grid_sample"):
            times[sampler] = best_of(
                lambda x=x, t=t, w=w, g=grad, s=sampler: adaptive_conv2d(x, t, w, 1, sampler=s).backward(g),
                repeats,
            )
        regular = best_of(lambda x=x, w=w, g=grad: F.conv2d(x, w, padding=1).backward(g), repeats)
        cells = ", ".join(f"{k} {1000 * v:.1f}" for k, v in times.items())
        print(f"adaptive conv fwd+bwd {c}->{c} at 32x32, batch 16 (ms): {cells}; regular conv2d {1000 * regular:.1f}")


def bench_train(name: str, batch: int, repeats: int, ceiling: float, adaptive: bool | None = None) -> None:
    cfg = preset(name)
    if adaptive is not None:
        cfg.model.adaptive = adaptive
    k = 17
    model = build_model(cfg.model, k)
    if cfg.model.channels_last:  # as arkpose.train
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)  # as arkpose.train
    size = 128
    h = size // 4
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    targets = {
        "heatmaps": torch.rand(batch, k + 1, h, h), "tradeoff_mask": torch.ones(batch, 1, h, h),
        "ignore_mask": torch.ones(batch, 1, h, h), "offsets": torch.randn(batch, 2 * k, h, h),
        "offset_weights": (torch.rand(batch, 2 * k, h, h) > 0.9).float(),
    }

    def step():
        loss = compute_losses(model(x), targets)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = best_of(step, repeats)
    params, macs = count_params_and_macs(cfg.model, 256, k)
    # Backward costs two forwards (input and weight gradients): 3x the forward's MACs at 128 px.
    floor = 3 * count_params_and_macs(cfg.model, size, k)[1] / ceiling
    units = "" if adaptive is None else (" adaptive" if adaptive else " regular")
    print(
        f"{name}: {cfg.model.backbone}{units} train step at {size}px, batch {batch}: {1000 * t / batch:.1f} ms/image "
        f"({params / 1e6:.2f} M params, {macs / 1e9:.2f} G MACs at 256; at the fp32 ceiling "
        f">= {1000 * floor:.1f} ms/image; step / floor = {t / batch / floor:.1f}x, target <= 2.5x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-w32", action="store_true")
    args = parser.parse_args()
    threads = configure_threads()
    print(f"threads {threads}, load average {os.getloadavg()[0]:.2f} (measured under load if > {threads})")
    ceiling = machine_ceiling(args.repeats)
    if not args.skip_w32:
        bench_w32(args.repeats, ceiling)
        bench_adaptive_conv(args.repeats)
    bench_adaptive_train(args.repeats)
    bench_train("quick", 16, args.repeats, ceiling)  # tiny-w16
    bench_train("smoke", 16, args.repeats, ceiling)  # nano-w16
    # The default ablation trains in 2 pool workers of 1 thread each (arkpose.pool): its two
    # models at 1 thread, against the 1-thread ceiling.
    torch.set_num_threads(1)
    print("1 thread (a laptop pool worker):")
    one = machine_ceiling(args.repeats)
    for adaptive in (False, True):
        bench_train("laptop", 16, args.repeats, one, adaptive=adaptive)
    torch.set_num_threads(threads)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
