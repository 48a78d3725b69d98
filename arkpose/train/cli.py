"""The command line shared by ``arkpose train``, ``python -m arkpose.train`` and
``torchrun -m arkpose.train``: the parser, the config it selects, and :func:`main`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from arkpose import checkpoint as ckpt
from arkpose import config as config_lib
from arkpose import presets
from arkpose.config import Config, ConfigError
from arkpose.data import DatasetError
from arkpose.train.loader import DataMissingError
from arkpose.train.rundir import CONFIG_FILE
from arkpose.train.signals import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    TrainingInterrupted,
)
from arkpose.train.step import OutOfMemory


def build_parser(prog: str = "arkpose train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a pose model from a preset. Multi-GPU: torchrun --nproc_per_node=N "
        "-m arkpose.train (same arguments).",
    )
    p.add_argument("--preset", choices=sorted(presets.PRESETS),
                   help="named config (required unless --resume reads the run's config.yaml)")
    p.add_argument("--data", metavar="DIR", help="dataset root (sets data.root); required for "
                   f"the real-data presets {', '.join(presets.REAL_DATA_PRESETS)}")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend",
                   default=[], help="config overrides, e.g. --set model.adaptive=false optim.epochs=5")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="train at most N epochs in this call, then exit (resume later)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[Config, Path]:
    """The run's config and directory from parsed arguments (raises ConfigError)."""
    if args.preset is None:
        if not (args.resume and args.out):
            raise ConfigError("--preset is required (or --resume with --out of an existing run)")
        cfg = config_lib.load_yaml(Path(args.out) / CONFIG_FILE)
    else:
        cfg = presets.preset(args.preset)
        if args.preset in presets.REAL_DATA_PRESETS and not args.data:
            raise ConfigError(
                f"preset {args.preset} trains on {cfg.data.dataset.upper()}, which is not "
                f"bundled: pass --data DIR with {cfg.data.train_ann} and {cfg.data.train_images} "
                "inside (or try --preset quick on SynthPose)"
            )
    if args.data:
        cfg.data.root = args.data
    config_lib.apply_overrides(cfg, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    return cfg, out


def main(argv: list[str] | None = None, prog: str = "arkpose train") -> int:
    # lazy: the package imports this module; looked up here so that patching train.train holds
    from arkpose import train as package

    args = build_parser(prog).parse_args(argv)
    try:
        cfg, out = config_from_args(args)
        metrics = package.train(cfg, out, resume=args.resume, progress=not args.no_progress,
                                stop_after=args.stop_after)
    except TrainingInterrupted as err:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_SIGINT if err.signum == signal.SIGINT else EXIT_SIGTERM
    except (ConfigError, DataMissingError, DatasetError, ckpt.CheckpointError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FloatingPointError, OutOfMemory) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in metrics.items() if k != "best"}
        print(json.dumps({"out": str(out), **summary, "best": metrics.get("best")}))
    return 0
