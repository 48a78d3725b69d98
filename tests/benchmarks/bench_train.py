"""Training throughput of the real loop (``arkpose.train.train``) for the CPU presets.

For each preset it trains 2 short epochs on the first ``--images`` training images (no
validation) and prints the second epoch's images/s and the share of step time spent waiting
for the DataLoader, from ``metrics.jsonl``. ``--repeat N`` keeps the best of N runs (the
machines this project targets are shared: numbers are measured under load).

    python tests/benchmarks/bench_train.py                      # smoke, quick, full-cpu
    python tests/benchmarks/bench_train.py --preset quick --images 64 --repeat 3
    # GPU: W32 at 512 on SynthPose, bf16, 4 loader workers
    python tests/benchmarks/bench_train.py --preset coco-w32 --data data/synthpose-quick \\
        --set data.dataset=synth data.train_ann=annotations/person_keypoints_train.json \\
        data.train_images=images/train data.val_ann=annotations/person_keypoints_val.json \\
        data.val_images=images/val optim.amp=bf16 --images 480

The data directory of each preset must exist (``arkpose synth --out DIR --preset NAME``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from arkpose import config, presets, runtime, train

CPU_PRESETS = ("smoke", "quick", "full-cpu")


def measure(cfg: config.Config, images: int) -> dict:
    cfg = config.clone(cfg)
    cfg.data.train_subset = images
    cfg.optim.epochs = 2
    cfg.eval.every = 0
    with tempfile.TemporaryDirectory() as out:
        train.train(cfg, out, progress=False)
        return train.read_metrics(out)[-1]  # epoch 2: warm caches and allocator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", action="append", choices=sorted(presets.PRESETS))
    p.add_argument("--data", help="data.root for every preset (default: each preset's own)")
    p.add_argument("--images", type=int, default=0,
                   help="training images per epoch (default: 4 batches)")
    p.add_argument("--repeat", type=int, default=1, help="best of N runs")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[])
    args = p.parse_args(argv)

    device = runtime.resolve_device("auto")
    print(f"torch {torch.__version__}, device {device}, ARKPOSE_THREADS="
          f"{os.environ.get('ARKPOSE_THREADS', runtime.DEFAULT_THREADS)}, "
          f"{os.cpu_count()} CPUs (shared machine: measured under load)")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"{'preset':<14}{'backbone':<10}{'size':>5}{'batch':>6}{'img/s':>9}{'data wait':>11}")
    for name in args.preset or CPU_PRESETS:
        cfg = presets.preset(name)
        if args.data:
            cfg.data.root = args.data
        config.apply_overrides(cfg, args.overrides)
        if not Path(cfg.data.root).is_dir():
            print(f"{name:<14}skipped: {cfg.data.root} missing (arkpose synth --out "
                  f"{cfg.data.root} --preset {cfg.data.synth_preset or 'quick'})")
            continue
        images = args.images or 4 * cfg.optim.batch_size
        best = max((measure(cfg, images) for _ in range(args.repeat)),
                   key=lambda r: r["images_per_s"])
        print(f"{name:<14}{cfg.model.backbone:<10}{cfg.data.input_size:>5}"
              f"{cfg.optim.batch_size:>6}{best['images_per_s']:>9.1f}"
              f"{100 * best['data_wait']:>10.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
