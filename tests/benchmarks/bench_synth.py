"""SynthPose generation speed: images/s at 256x256, one worker and two workers.

Target (issue 3): >= 100 images/s at 256x256 with --workers 2 on the 2-core CPU machine.
Runs ``generate`` end to end (render, JPEG, json; no card) into a temporary folder, takes
the best of N repeats (min-of-N is the number to quote on a shared machine) and also prints
the CPU-time rate of a single process, which is what an idle core would give.

    ARKPOSE_THREADS=1 .venv/bin/python tests/benchmarks/bench_synth.py [--images 400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from arkpose.data.synth import encode_jpeg, generate, make_config, render_scene


def bench_generate(preset: str, size: int, images: int, workers: int, repeats: int) -> float:
    """Best wall-clock images/s of ``generate`` (train split only, no card)."""
    best = float("inf")
    for r in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        try:
            start = time.perf_counter()
            generate(root / "ds", preset, seed=r, train=images, val=0, size=size,
                     workers=workers, progress=False, card=False)
            best = min(best, time.perf_counter() - start)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return images / best


def bench_cpu(preset: str, size: int, images: int) -> float:
    """Images/s of render + JPEG in this process, by CPU time (insensitive to other load)."""
    cfg = make_config(preset, size=size)
    start = time.process_time()
    for i in range(images):
        scene, painted, _ = render_scene(cfg, 0, "train", i)
        encode_jpeg(painted.image, scene.post["jpeg_quality"])
    return images / (time.process_time() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()}")
    for preset in ("quick", "full"):
        cpu = bench_cpu(preset, args.size, min(args.images, 200))
        print(f"{preset:5s} @{args.size}: single process, CPU-time rate {cpu:6.1f} img/s")
        for workers in (1, 2):
            rate = bench_generate(preset, args.size, args.images, workers, args.repeats)
            print(f"{preset:5s} @{args.size}: generate --workers {workers}: "
                  f"{rate:6.1f} img/s (best of {args.repeats}, wall clock)")


if __name__ == "__main__":
    main()
