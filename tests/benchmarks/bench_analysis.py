"""Timing of arkpose.analysis on a COCO-val-sized slice: 500 images, about 1,900 detections.

Builds synthetic GT + perturbed detections itself (arkpose.analysis.synthetic), then times
(1) every number, no plots (target <= 4 s) and (2) the plots (target <= 30 s).
Prints min-of-N wall time and CPU time; on shared machines say "measured under load".

    ARKPOSE_THREADS=1 .venv/bin/python tests/benchmarks/bench_analysis.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MPLBACKEND", "Agg")

from arkpose.analysis import analyze
from arkpose.analysis.plots import save_all
from arkpose.analysis.synthetic import make_synthetic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    gt, dt = make_synthetic(args.images, dets_per_image=3.95, seed=0)
    print(f"input: {len(gt['images'])} images, {len(gt['annotations'])} GT, {len(dt)} detections")
    walls, cpus = [], []
    for _ in range(args.repeats):
        w, c = time.perf_counter(), time.process_time()
        result = analyze(gt, dt, name="bench")
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    print(f"numbers (no plots): min wall {min(walls):.2f} s, min cpu {min(cpus):.2f} s "
          f"over {args.repeats} runs (target <= 4 s)")
    with tempfile.TemporaryDirectory() as tmp:
        w, c = time.perf_counter(), time.process_time()
        paths = save_all(result, tmp)
        print(f"plots ({len(paths)} files, PNG+PDF): wall {time.perf_counter() - w:.2f} s, "
              f"cpu {time.process_time() - c:.2f} s (target <= 30 s)")
    print(f"load average: {os.getloadavg()[0]:.2f} (machine shared: timings measured under load)")


if __name__ == "__main__":
    main()
