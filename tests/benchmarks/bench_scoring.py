"""Timing of learned pose scoring: features + net + score for one image's candidates.

Target (issue 8): 30 candidates in < 1 ms. Prints min and median over many repeats
(min-of-N is the number to quote on a shared machine).

    ARKPOSE_THREADS=1 .venv/bin/python tests/benchmarks/bench_scoring.py
"""

from __future__ import annotations

import statistics
import time

import torch

from arkpose import presets, runtime, scoring
from arkpose.spec import COCO, CROWDPOSE


def bench(spec, num_poses: int, repeats: int = 2000) -> tuple[float, float]:
    torch.manual_seed(0)
    poses = torch.rand(num_poses, spec.num_keypoints, 3) * torch.tensor([512.0, 512.0, 1.0])
    score_fn = scoring.make_score_fn(scoring.ScoringNet(spec.num_features), spec, "official")
    for _ in range(50):
        score_fn(poses)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score_fn(poses)
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, statistics.median(times) * 1e3


def bench_generation(repeats: int = 20) -> None:
    """Per image of the rescoring data: the pose model (nano-w16, 128 px, flip test, final
    poses) against the features + OKS targets of its candidates."""
    from arkpose import inference
    from arkpose.model import build_model

    cfg = presets.preset("smoke")
    torch.manual_seed(0)
    model = build_model(cfg.model, COCO.num_keypoints).eval()
    image = (torch.rand(128, 160, 3) * 255).to(torch.uint8).numpy()
    poses = torch.rand(30, 17, 3) * torch.tensor([160.0, 128.0, 1.0])
    gt = torch.rand(5, 17, 3) * torch.tensor([160.0, 128.0, 2.0])
    areas = torch.full((5,), 2000.0)
    model_times, data_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        inference.infer_image(model, image, COCO, cfg.eval.decode, test_size=cfg.eval.test_size)
        model_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scoring.pose_features(poses, COCO)
        scoring.oks_targets(poses, gt, areas, COCO)
        data_times.append(time.perf_counter() - start)
    print(f"rescoring data per image: pose model {min(model_times) * 1e3:.1f} ms, "
          f"features + targets of 30 candidates {min(data_times) * 1e3:.3f} ms (min of {repeats})")


def main() -> None:
    threads = runtime.configure_threads()
    print(f"torch {torch.__version__}, {threads} thread(s)")
    for spec in (COCO, CROWDPOSE):
        for num_poses in (1, 30, 100):
            best, median = bench(spec, num_poses)
            flag = "" if num_poses != 30 else ("  OK (< 1 ms)" if best < 1 else "  SLOW (>= 1 ms)")
            print(f"{spec.name:9s} {num_poses:3d} poses: min {best:.3f} ms, "
                  f"median {median:.3f} ms{flag}")
    bench_generation()


if __name__ == "__main__":
    main()
