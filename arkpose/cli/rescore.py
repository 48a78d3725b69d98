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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arkpose rescore",
        description="Train the learned pose-scoring net (predicted OKS) for a checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="pose checkpoint, e.g. runs/quick/best.pt")
    p.add_argument("--data", default=None,
                   help="dataset root (default: the checkpoint config's data.root)")
    p.add_argument("--out", default=None, help="scorer file (default: scorer.pt next to the checkpoint)")
    p.add_argument("--max-images", type=int, default=0,
                   help="use the first N training images (0 = all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--regenerate", action="store_true",
                   help="run the model again even if a matching scoring_data.pt exists")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.max_images < 0 or args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
        print("arkpose rescore: --max-images must be >= 0, --epochs and --batch-size >= 1, "
              "--lr > 0", file=sys.stderr)
        return 2
    from arkpose import rescore, runtime
    from arkpose.checkpoint import CheckpointError
    from arkpose.data import DatasetError

    runtime.configure_threads()

    try:
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
        )
    except (FileNotFoundError, CheckpointError, DatasetError, rescore.ScorerFileError) as err:
        print(f"arkpose rescore: {err}", file=sys.stderr)
        return 1
    print(f"candidates: {report['num_candidates']} (train {report['num_train']}, "
          f"val {report['num_val']}), mean target OKS {report['mean_target']:.3f}")
    print(f"validation MSE {report['val_mse']:.5f}, Spearman {report['val_spearman']:.3f}")
    print(f"scorer written to {out}  (data: {report['data_file']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
