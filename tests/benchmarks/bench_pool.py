"""Why the laptop preset runs its trainings in 2 worker processes (arkpose.pool): one A/B in
one run, on a quiet machine.

    python tests/benchmarks/bench_pool.py [--data data/synthpose-table4] [--images 480]

For the laptop preset's regular model (Table 4's first three rows) and its adaptive model
(+adaptive), it trains two runs of one epoch on the first ``--images`` training images (no
validation, separate processes as `arkpose train`), twice:

- one after the other, each with 2 threads (what `--launcher inprocess` does), and
- both at once, each with 1 thread (what `--launcher pool --jobs 2` does),

and prints each run's wall time (process start to exit), its images/s and data-wait share
from ``metrics.jsonl``, and the ratio of the two ways' wall times. The fp32 ceiling and the
load average are printed first and last. The data directory must exist (`make ablations`
makes it, or ``arkpose synth --out data/synthpose-table4 --preset table4``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arkpose import runtime

ARKPOSE = [sys.executable, "-m", "arkpose.cli"]


def command(data: Path, out: Path, images: int, adaptive: bool) -> list[str]:
    return [*ARKPOSE, "train", "--preset", "laptop", "--data", str(data), "--out", str(out),
            "--no-progress", "--set", f"data.train_subset={images}", "optim.epochs=1",
            "eval.every=0", f"model.adaptive={str(adaptive).lower()}"]


def start(cmd: list[str], threads: int) -> subprocess.Popen:
    env = {**os.environ, runtime.THREADS_ENV: str(threads)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, t0: float) -> float:
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - t0


def epoch_line(out: Path) -> str:
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return f"{record['images_per_s']:.1f} img/s, data wait {100 * record['data_wait']:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthpose-table4"))
    parser.add_argument("--images", type=int, default=480)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"no data at {args.data}: run `make ablations` or `arkpose synth --out "
                         f"{args.data} --preset table4` first")
    runtime.configure_threads()
    print(f"load average {os.getloadavg()[0]:.2f}; fp32 ceiling {runtime.fp32_ceiling():.1f} G MAC/s "
          f"({runtime.num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, adaptive in (("regular", False), ("adaptive", True)):
            outs = [root / f"{name}-{way}-{i}" for way in ("seq", "par") for i in (0, 1)]
            seq = []
            for out in outs[:2]:
                t0 = time.perf_counter()
                seq.append(finish(start(command(args.data, out, args.images, adaptive), 2), t0))
            t0 = time.perf_counter()
            procs = [start(command(args.data, out, args.images, adaptive), 1) for out in outs[2:]]
            par = [finish(p, t0) for p in procs]
            for way, walls, pair in (("one after the other, 2 threads", seq, outs[:2]),
                                     ("both at once, 1 thread each  ", par, outs[2:])):
                runs = "; ".join(f"{w:.1f} s ({epoch_line(o)})" for w, o in zip(walls, pair))
                print(f"{name:8s} x2, {way}: {runs}")
            print(f"{name:8s}: wall {sum(seq):.1f} s one after the other / {max(par):.1f} s at once "
                  f"= {sum(seq) / max(par):.2f}x")
    print(f"load average at the end {os.getloadavg()[0]:.2f}; fp32 ceiling {runtime.fp32_ceiling():.1f} G MAC/s")


if __name__ == "__main__":
    main()
