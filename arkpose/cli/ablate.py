"""``arkpose ablate``: run an ablation definition end to end and execute its notebooks."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import pandas as pd

from arkpose import (
    ablate,
    ablation_def,
    ablation_report,
    config,
    launch,
    notebooks,
    pool,
    presets,
    report_index,
    runtime,
    train,
)
from arkpose.cli.common import add_set_option
from arkpose.config_check import check as check_config
from arkpose.data import DatasetError
from arkpose.data.synth import SynthError
from arkpose.jsonio import write_json
from arkpose.presets import PRESETS

REPO = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arkpose ablate",
        description="Train every row of an ablation, evaluate the three qualities, run the "
        "error analysis and execute the report notebooks into reports/.",
    )
    parser.add_argument("--ablation", default=str(REPO / "ablations" / "table4.yaml"),
                        help="ablation definition (yaml); default: the paper's Table 4")
    parser.add_argument("--preset", default="laptop", choices=sorted(PRESETS),
                        help="training preset every row starts from (default: laptop)")
    parser.add_argument("--data", default=None,
                        help="dataset root (default: the preset's; SynthPose is generated)")
    parser.add_argument("--seeds", default=None, metavar="N | S,S,...",
                        help="run every row with the first N seeds, or with the listed ones "
                        "('5,' for seed 5 alone); default: the preset's ablation_seeds")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples for the intervals (default 1000)")
    add_set_option(parser, "config overrides for every row, e.g. --set optim.epochs=2 "
                           "data.train_subset=64")
    parser.add_argument("--runs", default="runs/ablations", help="where the runs go")
    parser.add_argument("--reports", default="reports", help="where the reports go")
    parser.add_argument("--max-val-images", type=int, default=0,
                        help="evaluate on the first N validation images (0 = all)")
    parser.add_argument("--no-analysis", action="store_true", help="skip the error analysis")
    parser.add_argument("--no-notebooks", action="store_true", help="skip the report notebooks")
    jobs = parser.add_argument_group(
        "where the trainings run (each flag sets one launch.* config field; docs/cluster.md)")
    for flag, field, kind, text in LAUNCH_FLAGS:
        jobs.add_argument(flag, dest=field, type=kind, default=None, help=text)
    jobs.add_argument("--no-wait", dest="wait", action="store_false", default=None,
                      help="submit the trainings and return; the same command again collects "
                      "them and evaluates (launch.wait=false)")
    return parser


# (flag, launch.* field, type, help): flags for the fields people change per call.
LAUNCH_FLAGS = (
    ("--launcher", "launcher", str, ("inprocess (the default but for --preset laptop): one process "
     "runs every row in turn; pool (laptop's default): worker processes, each with "
     "ARKPOSE_THREADS/jobs threads; local: parallel local processes; slurm: a SLURM job "
     "array (submitit)")),
    ("--jobs", "jobs", int, ("at once: pool workers, local processes, or the array's "
     "parallelism (default 2)")),
    ("--partition", "partition", str, "SLURM partition (default: the cluster's)"),
    ("--gpus-per-job", "gpus_per_job", int, ("GPUs per training job; > 1 trains it with DDP "
     "(default 1)")),
    ("--cpus-per-job", "cpus_per_job", int, "CPUs per task (default 8)"),
    ("--time-min", "time_min", int, ("a job's time limit in minutes; at the limit it saves, "
     "requeues and resumes (default 1440)")),
    ("--mem-gb", "mem_gb", int, "memory per job in GB (default 64)"),
    ("--account", "account", str, "SLURM account"),
    ("--qos", "qos", str, "SLURM quality of service"),
)


def launch_overrides(args: argparse.Namespace) -> list[str]:
    """The launcher flags given, as ``launch.<field>=<value>`` overrides."""
    fields = [field for _, field, _, _ in LAUNCH_FLAGS] + ["wait"]
    return [f"launch.{f}={getattr(args, f)}" for f in fields if getattr(args, f) is not None]


# The whole command's wall time and the machine's fp32 ceiling before and after it, beside
# the runs and in the report: the budget of issue 17 is stated against that ceiling.
WALL_FILE = "wall.json"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.overrides = [*args.overrides, *launch_overrides(args)]
    threads = runtime.configure_threads()
    t_start = time.perf_counter()
    try:
        definition = ablation_def.load_ablation(args.ablation)
        base = presets.preset(args.preset)
        seeds = ablation_def.parse_seeds(args.seeds, base.ablation_seeds)
        if args.n_boot < 1:
            raise ablate.AblationError(f"--n-boot must be >= 1, got {args.n_boot}")
        for row in definition.rows:  # every row's config, before any run folder is made
            if row.reuse is None:
                check_config(ablate.row_config(base, row, args.overrides))
        ceiling = runtime.fp32_ceiling()  # after the input checks: bad input fails at once
        summary = ablate.run_ablation(
            definition,
            args.preset,
            seeds=seeds,
            runs_dir=args.runs,
            overrides=args.overrides,
            data_root=args.data,
            max_val_images=args.max_val_images,
            analyse=not args.no_analysis,
            n_boot=args.n_boot,
            threads=threads,
        )
    # Bad input (definition, seeds, --set key, data folder, an old runs folder) gets one line
    # naming the fix; a failure inside a training run keeps its traceback.
    except (ablate.AblationError, config.ConfigError, DatasetError, FileNotFoundError,
            SynthError) as err:
        print(f"arkpose ablate: {err}", file=sys.stderr)
        return 2
    except launch.JobsPending as pending:
        print(f"arkpose ablate: {pending}", file=sys.stderr)
        return 0
    except (launch.JobsFailed, pool.PoolJobFailed) as failed:
        print(f"arkpose ablate: {failed}", file=sys.stderr)
        return 1
    except train.TrainingInterrupted as stop:
        print(f"arkpose ablate: stopped by {signal.Signals(stop.signum).name}; {stop.path} is "
              "saved: run the same `arkpose ablate` command again to carry on where it stopped",
              file=sys.stderr)
        return train.EXIT_SIGINT if stop.signum == signal.SIGINT else train.EXIT_SIGTERM
    run_root = Path(args.runs) / f"{definition.name}-{args.preset}"
    print(console_table(summary))
    print(f"\nruns: {run_root}")
    if not args.no_notebooks:
        report_dir = Path(args.reports) / f"{definition.name}-{args.preset}"
        wanted = notebooks.report_notebooks(definition, args.preset, seeds, args.overrides,
                                            run_root, report_dir, analysis=not args.no_analysis)
        started = time.time()
        notebooks.run_report_notebooks(wanted, report_dir, workers=threads)
        print(f"report: {report_index.run_page(report_dir, since=started)}")
        report_index.root_page(args.reports)
    wall = {"command": "arkpose ablate " + " ".join(argv), "wall_s": round(time.perf_counter() - t_start, 1),
            "threads": threads, "fp32_ceiling_gmac_s": {"start": round(ceiling, 1),
                                                        "end": round(runtime.fp32_ceiling(), 1)}}
    for folder in [run_root] + ([report_dir] if not args.no_notebooks else []):
        write_json(folder / WALL_FILE, wall, indent=2)
    print(f"wall {wall['wall_s'] / 60:.1f} min; fp32 ceiling {wall['fp32_ceiling_gmac_s']} G MAC/s")
    return 0


def console_table(summary: dict) -> str:
    """Rows (mean AP [95% CI]) and components (Δ [CI], P(Δ > 0), verdict), in AP points."""
    fmt = ablation_report.format_interval
    rows = pd.DataFrame.from_records(summary["row_stats"])
    table = rows.assign(cell=[fmt(100 * r.AP, 100 * r.ci_low, 100 * r.ci_high) for r in rows.itertuples()])
    table = table.pivot(index="row", columns="quality", values="cell")
    table = table.reindex(index=[r["row"] for r in summary["rows"]], columns=list(ablate.QUALITIES))
    deltas = pd.DataFrame.from_records(summary["deltas"])
    lines = [f"AP x 100, mean over seeds {summary['seeds']} [95% CI, paired bootstrap]",
             table.to_string(), "", "each component against the row above:"]
    for d in deltas.itertuples():
        p = "" if d.p_improve != d.p_improve else f"  P(Δ>0) {d.p_improve:.2f}"
        lines.append(f"  {d.row:<12} {d.quality:<10} Δ {fmt(100 * d.delta, 100 * d.ci_low, 100 * d.ci_high)}"
                     f"{p}  {d.verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
