"""Timing of the grouping post-processing on a 20-person image (docs/method.md §5.7-5.8).

Maps: the training targets of 20 persons at a 512 x 512 input (128 x 128 grid, 1x maps of
512 x 512), with a little noise so that no value ties. Times, min of N runs:

1. absorb + refinement (keypoint candidates, absorb, Gaussian-fit refinement) on the
   grid maps, 1x values computed lazily (target <= 30 ms; the official code takes
   about 360 ms, mostly scipy fits one joint at a time);
2. the whole ``parse`` (centers, pose NMS, regression poses, absorb, refinement);
3. absorb + refinement on dense 1x maps (the multi-scale path), for comparison.

Prints wall and CPU time; on the shared 2-core machines say "measured under load".

    ARKPOSE_THREADS=1 .venv/bin/python tests/benchmarks/bench_grouping.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from arkpose import decode as G
from arkpose import runtime
from arkpose.spec import COCO
from arkpose.targets import make_targets

SHAPE = np.array([
    [0, -4], [-.5, -4.5], [.5, -4.5], [-1, -4.2], [1, -4.2], [-1.5, -2.5], [1.5, -2.5],
    [-2, -.5], [2, -.5], [-2.2, 1.2], [2.2, 1.2], [-1, 1], [1, 1], [-1.1, 3.5], [1.1, 3.5],
    [-1.2, 6], [1.2, 6],
])


def twenty_person_maps(seed: int = 0):
    rng = np.random.default_rng(seed)
    anns = []
    for i in range(20):
        r, c = divmod(i, 5)
        kp = SHAPE * rng.uniform(7, 10) + [55 + 100 * c, 70 + 120 * r] + rng.uniform(-2, 2, (17, 2))
        kp = np.clip(kp, 2, 509)
        k3 = np.concatenate([kp, np.full((17, 1), 2.0)], 1)
        (x0, y0), (x1, y1) = kp.min(0), kp.max(0)
        anns.append({"keypoints": k3.ravel().tolist(), "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0, "num_keypoints": 17})
    t = make_targets(anns, 512, 128, COCO, min_center_area=0)
    g = torch.Generator().manual_seed(seed)
    heat = t["heatmaps"] + 1e-3 * torch.rand(t["heatmaps"].shape, generator=g)
    return heat[:17], heat[17:], G.absolute_keypoints(t["offsets"])


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (first calls load kernels)
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls) * 1e3, min(cpus) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    threads = runtime.configure_threads()
    heat, center, kmap = twenty_person_maps()
    joints, cscores = G.regression_poses(17, [center], [kmap])
    start = torch.cat([joints, cscores[:, None, None].expand(-1, 17, 1)], -1)
    lazy = G.Heat1x(heat, 4)
    dense = G.Heat1x(G.upsample_to(heat, (512, 512)), 1)

    def post(src):
        def run():
            pos, val = G.keypoint_candidates(src)
            G.refine(G.absorb(start, src, pos, val), src, cscores)
        return run

    res = G.parse(heat, center, kmap)
    n_fit = int((G.absorb(start, lazy, *G.keypoint_candidates(lazy))[..., 2] > 0.05).sum())
    print(f"{len(joints)} poses, {n_fit} joints refined; torch threads {threads}")
    for name, fn in [
        ("absorb + refinement, lazy 1x (target <= 30 ms)", post(lazy)),
        ("whole parse, lazy 1x", lambda: G.parse(heat, center, kmap)),
        ("absorb + refinement, dense 1x maps", post(dense)),
    ]:
        wall, cpu = timed(fn, args.repeats if "dense" not in name else max(3, args.repeats // 5))
        print(f"{name:<50s} wall {wall:7.1f} ms   cpu {cpu:7.1f} ms  (min of runs)")
    assert res["final"].shape[0] == 20


if __name__ == "__main__":
    main()
