"""``arkpose eval``: evaluate a checkpoint on its validation set, per quality.

    arkpose eval --checkpoint RUN/best.pt [--data DIR] [--flip | --no-flip]
                 [--scales 1 | 0.5,1,2] [--quality regression,heatmap,final]
                 [--scorer RUN/scorer.pt] [--out DIR] [--max-images N]

Writes ``OUT/<quality>/detections.json``, ``OUT/<quality>/metrics.json`` and
``OUT/metrics.json`` (every quality of the run; default OUT: ``eval/`` next to the
checkpoint) and prints one row of COCO / CrowdPose stats per quality.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arkpose.cli.common import (
    CommandError,
    add_set_option,
    guarded,
    load_checkpoint,
    load_scorer,
    with_decode_flags,
)
from arkpose.config import QUALITIES, ConfigError
from arkpose.jsonio import write_json


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes numbers like 1 or 0.5,1,2, not {text!r}")
    if not scales or any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"--scales needs positive numbers, got {text!r}")
    return scales


def _qualities(text: str) -> tuple[str, ...]:
    qs = tuple(q.strip() for q in text.split(",") if q.strip())
    bad = [q for q in qs if q not in QUALITIES]
    if bad or not qs:
        raise argparse.ArgumentTypeError(
            f"--quality takes a comma list of {', '.join(QUALITIES)}; got {text!r}")
    return qs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arkpose eval",
        description="Evaluate a checkpoint: regression / heatmap / final quality (Table 4).",
    )
    p.add_argument("--checkpoint", required=True, help="pose checkpoint, e.g. runs/quick/best.pt")
    p.add_argument("--data", default=None,
                   help="dataset root (default: the checkpoint config's data.root)")
    p.add_argument("--split", default="val", choices=("val", "train"),
                   help="which annotation file of the data to evaluate on (default: val)")
    p.add_argument("--flip", dest="flip", action="store_true", default=None,
                   help="flip test (default: the checkpoint config's eval.decode.flip)")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test")
    p.add_argument("--scales", type=_scales, default=None,
                   help="test scales, e.g. 1 or 0.5,1,2 (default: eval.decode.scales)")
    p.add_argument("--quality", type=_qualities, default=QUALITIES,
                   help="comma list of regression,heatmap,final (default: all three)")
    p.add_argument("--scorer", default=None,
                   help="learned scoring net from `arkpose rescore` (ranks the final poses)")
    p.add_argument("--scoring-mode", default=None, choices=("official", "paper"),
                   help="with --scorer: official = predicted OKS x mean joint score, "
                        "paper = predicted OKS (default: eval.scoring_mode)")
    p.add_argument("--out", default=None, help="output folder (default: eval/ next to the checkpoint)")
    p.add_argument("--max-images", type=int, default=0, help="first N images only (0 = all)")
    p.add_argument("--oks-sigma-scale", type=float, default=None,
                   help="multiply the OKS sigmas (default: the run's data.oks_sigma_scale; "
                        "1 = the dataset's own)")
    add_set_option(p, "data override, e.g. --set data.dataset=crowdpose data.val_ann=x.json "
                      "(data.* keys only; the model comes from the checkpoint)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    # lazy: torch via arkpose.data (~1.3 s), pandas via evaluate (~0.4 s): not for --help
    from arkpose import evaluate
    from arkpose.data import DatasetError

    return guarded("arkpose eval", lambda: _run(args),
                   (ConfigError, DatasetError, evaluate.EvaluationError, FileNotFoundError))


def _run(args: argparse.Namespace) -> int:
    from arkpose import evaluate  # lazy: pandas and the COCO tools, as main

    if args.max_images < 0:
        raise CommandError(f"--max-images must be >= 0 (0 = all), got {args.max_images}")
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.insert(0, f"data.root={args.data}")
    if args.oks_sigma_scale is not None:
        overrides.append(f"data.oks_sigma_scale={args.oks_sigma_scale}")
    model, cfg = load_checkpoint(args.checkpoint, args.device, overrides)
    with_decode_flags(cfg, args.flip, args.scales)
    score_fn = load_scorer(args.scorer, cfg.data.spec, args.scoring_mode or cfg.eval.scoring_mode)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval"
    results = evaluate.evaluate_model(
        model, cfg, split=args.split, qualities=args.quality, max_images=args.max_images,
        out_dir=out, score_fn=score_fn, progress=not args.no_progress,
    )
    # One file with every quality of this run, next to the per-quality folders.
    write_json(out / "metrics.json", results, indent=1)
    print(evaluate.format_table(results))
    if cfg.data.oks_sigma_scale != 1.0:
        print(f"OKS sigmas x{cfg.data.oks_sigma_scale:g} (--oks-sigma-scale 1 for the dataset's own)")
    print(f"detections and metrics written under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
