"""``arkpose rescore``: train the learned pose-scoring net for a trained checkpoint.

    arkpose rescore --checkpoint RUN/best.pt [--data DIR] [--out RUN/scorer.pt]
                    [--max-images N] [--epochs N]

Runs the checkpoint over the training split (final poses, flip test), stores the
candidates' features and max-OKS targets in ``scoring_data.pt`` next to the scorer, trains
the net and prints the held-out MSE and Spearman rank correlation. Use the result with
``arkpose eval --checkpoint RUN/best.pt --scorer RUN/scorer.pt``.
"""

from __future__ import annotations

import argparse
import sys

from arkpose.cli.common import CommandError, add_set_option, guarded
from arkpose.config import ConfigError

PROG = "arkpose rescore"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train the learned pose-scoring net (predicted OKS) for a checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="pose checkpoint, e.g. runs/quick/best.pt")
    p.add_argument("--data", default=None,
                   help="dataset root (default: the checkpoint config's data.root)")
    p.add_argument("--out", default=None, help="scorer file (default: scorer.pt next to the checkpoint)")
    p.add_argument("--max-images", type=int, default=0,
                   help="use the first N training images (0 = all)")
    p.add_argument("--epochs", type=int, default=20,
                   help="passes of the scorer over its training candidates (default 20)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="candidate poses per optimiser step (default 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the train/validation split and the scorer's weights (default 0)")
    add_set_option(p, "data override, e.g. --set data.train_ann=x.json (data.* keys only; the "
                      "model comes from the checkpoint)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--regenerate", action="store_true",
                   help="run the model again even if a matching scoring_data.pt exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    # lazy: torch (~1.3 s), after the arguments parse (fast --help and usage errors)
    from arkpose import rescore
    from arkpose.checkpoint import CheckpointError
    from arkpose.data import DatasetError

    return guarded(PROG, lambda: _run(args), (FileNotFoundError, CheckpointError, ConfigError,
                                              DatasetError, rescore.ScorerFileError))


def _run(args: argparse.Namespace) -> int:
    from arkpose import rescore, runtime  # lazy: torch (~1.3 s), as main

    bad = [f"{name} {value}" for name, value, ok in (
        ("--max-images", args.max_images, args.max_images >= 0),
        ("--epochs", args.epochs, args.epochs >= 1),
        ("--batch-size", args.batch_size, args.batch_size >= 1),
        ("--lr", args.lr, args.lr > 0)) if not ok]
    if bad:
        raise CommandError(f"{', '.join(bad)} out of range: --max-images must be >= 0, "
                           "--epochs and --batch-size >= 1, --lr > 0")
    runtime.configure_threads()
    try:
        runtime.resolve_device(args.device)
    except RuntimeError as err:  # CUDA asked for but absent
        raise CommandError(f"--device {args.device}: {err}") from None
    out, report = rescore.rescore(
        args.checkpoint,
        data=args.data,
        out=args.out,
        max_images=args.max_images,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        regenerate=args.regenerate,
        progress=not args.no_progress,
        overrides=args.overrides,
    )
    print(f"candidates: {report['num_candidates']} (train {report['num_train']}, "
          f"val {report['num_val']}), mean target OKS {report['mean_target']:.3f}")
    print(f"validation MSE {report['val_mse']:.5f}, Spearman {report['val_spearman']:.3f}")
    print(f"scorer written to {out}  (data: {report['data_file']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
