"""Time of ``arkpose.targets.make_targets`` and of one full training sample.

Prints the best-of-N time (the machines are shared: numbers are measured under load) of
  1. make_targets for an 8-person sample at 512 input (128x128 maps) on one thread
     (issue 2 asks for <= 20 ms; the official generators take about 230 ms), and for 30;
  2. a whole TrainDataset sample (decode, affine warp, targets, normalisation) on a real
     COCO fixture image when ../shared/real_fixtures is there.

    ARKPOSE_THREADS=1 python tests/benchmarks/bench_targets.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from arkpose.config import Config
from arkpose.data import TrainDataset
from arkpose.data.coco import KeypointDataset
from arkpose.spec import COCO
from arkpose.targets import make_targets

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "real_fixtures"


def crowd(persons: int, size: int = 512, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    anns = []
    for _ in range(persons):
        c = rng.uniform(60, size - 60, 2)
        kp = np.column_stack([c + rng.normal(0, 40, (17, 2)), rng.choice([0, 1, 2], 17, p=[.2, .2, .6])])
        bw, bh = rng.uniform(60, 200, 2)
        anns.append({"keypoints": kp.ravel().tolist(), "bbox": [c[0] - bw / 2, c[1] - bh / 2, bw, bh],
                     "area": float(bw * bh * 0.6), "iscrowd": 0,
                     "num_keypoints": int((kp[:, 2] > 0).sum())})
    return anns


def best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for n in (8, 30):
        anns = crowd(n)
        ms = best(lambda anns=anns: make_targets(anns, 512, 128, COCO), args.repeat)
        print(f"make_targets, {n:2d} persons, 512 -> 128x128, 1 thread: {ms:6.2f} ms (best of {args.repeat})")
    if (FIXTURES / "coco" / "test_coco.json").is_file():
        raw = KeypointDataset(FIXTURES / "coco" / "test_coco.json", FIXTURES / "coco", COCO)
        ds = TrainDataset(raw, Config())
        ms = best(lambda: ds[3], max(3, args.repeat // 3))
        print(f"TrainDataset sample (COCO 640x392, 5 persons, 512 crop), 1 thread: {ms:6.2f} ms")
    else:
        print(f"(no real fixtures at {FIXTURES}: skipping the full-sample timing)")


if __name__ == "__main__":
    main()
