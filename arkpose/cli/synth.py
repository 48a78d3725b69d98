"""``arkpose synth``: generate the SynthPose benchmark (see docs/synthpose.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from arkpose.cli.common import add_set_option, report
from arkpose.data.synth import SYNTH_PRESETS, SynthError, generate
from arkpose.data.synth_card import benchmark_shares, format_shares


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arkpose synth",
        description="Generate SynthPose, the procedural multi-person keypoint benchmark, "
                    "in COCO keypoint format (images, annotations, manifest, dataset card).")
    p.add_argument("--out", required=True, help="output directory (created; must be new, "
                   "empty, or a SynthPose dataset made with the same arguments)")
    p.add_argument("--preset", default="quick", choices=sorted(SYNTH_PRESETS),
                   help="difficulty and size preset (default: quick)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--train", type=int, default=None, help="number of training images")
    p.add_argument("--val", type=int, default=None, help="number of validation images")
    p.add_argument("--size", type=int, default=None, help="image side in pixels")
    p.add_argument("--workers", type=int, default=1, help="worker processes (output is "
                   "identical for any number)")
    add_set_option(p, "override SynthConfig knobs, e.g. --set max_persons=4 clutter=0.2 "
                      "(values are parsed as yaml)")
    p.add_argument("--no-card", action="store_true", help="skip the dataset card")
    p.add_argument("--force", action="store_true",
                   help="replace an existing SynthPose dataset made with other arguments")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SynthError(f"--set expects KNOB=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value  # make_config names the knob and the type it takes
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    for name in ("train", "val"):
        n = getattr(args, name)
        if n is not None and n < 0:
            return report("arkpose synth", f"--{name} must be >= 0, got {n}")
    try:
        out = generate(args.out, args.preset, seed=args.seed, train=args.train, val=args.val,
                       size=args.size, workers=args.workers, progress=not args.quiet,
                       overrides=_overrides(args.overrides), card=not args.no_card,
                       overwrite=args.force)
    except (SynthError, ValueError) as e:
        return report("arkpose synth", e)
    print(f"SynthPose written to {out}")
    for split in ("train", "val"):  # the shares the Table 4 components need (dataset card)
        ann = Path(out) / "annotations" / f"person_keypoints_{split}.json"
        if ann.is_file() and (shares := benchmark_shares(json.loads(ann.read_text())))["persons"]:
            print("  " + format_shares(split, shares))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
