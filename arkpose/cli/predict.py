"""``arkpose predict``: run a checkpoint on images; write COCO json and skeleton drawings.

    arkpose predict --checkpoint RUN/best.pt IMAGE... [--out DIR] [--no-flip]
                    [--scales 1 | 0.5,1,2] [--scorer RUN/scorer.pt] [--min-score 0.1]

``OUT/predictions.json`` holds COCO keypoint results (original pixels; ``image_id`` is the
image's position on the command line, ``file_name`` names it; every pose) and
``OUT/<name>.png`` each image with its poses scoring above ``--min-score`` drawn; those are
the persons counted. An image that cannot be read is reported and skipped, the others are
done, and the exit status is then 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from arkpose.cli.common import (
    EXIT_USAGE,
    CommandError,
    add_set_option,
    guarded,
    load_checkpoint,
    load_scorer,
    report,
    with_decode_flags,
)
from arkpose.cli.eval import _scales
from arkpose.jsonio import write_json

PROG = "arkpose predict"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Detect poses in images with a checkpoint; write json and drawings.",
    )
    p.add_argument("images", nargs="+", help="image files (any size, RGB or grey)")
    p.add_argument("--checkpoint", required=True, help="pose checkpoint, e.g. runs/quick/best.pt")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    p.add_argument("--flip", dest="flip", action="store_true", default=None,
                   help="flip test (default: the checkpoint config's eval.decode.flip)")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test")
    p.add_argument("--scales", type=_scales, default=None, help="test scales, e.g. 1 or 0.5,1,2")
    p.add_argument("--scorer", default=None, help="learned scoring net from `arkpose rescore`")
    p.add_argument("--min-score", type=float, default=0.1,
                   help="count and draw the poses, and their joints, scoring above this "
                        "(default 0.1); the json holds every pose")
    add_set_option(p, "data override, e.g. --set data.dataset=crowdpose (data.* keys only; "
                      "the model comes from the checkpoint)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def check_images(paths: list[str]) -> None:
    """Every path names a file: a missing one or a folder is a usage error, found before the
    model is loaded."""
    for path in paths:
        if Path(path).is_dir():
            raise CommandError(f"image {path} is a folder; pass the image files inside it "
                               f"(e.g. {Path(path) / '*.jpg'})")
        if not Path(path).is_file():
            raise CommandError(f"image {path} does not exist; check the path")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return guarded(PROG, lambda: _run(args), (FileNotFoundError,))


def _run(args: argparse.Namespace) -> int:
    from arkpose import inference, viz  # lazy: torch (~1.3 s), after the arguments parse

    check_images(args.images)
    model, cfg = load_checkpoint(args.checkpoint, args.device, args.overrides)
    spec = cfg.data.spec
    score_fn = load_scorer(args.scorer, spec, cfg.eval.scoring_mode)
    with_decode_flags(cfg, args.flip, args.scales)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, unreadable = [], 0
    for image_id, path in enumerate(args.images):
        try:
            image = inference.load_image(path)
        except ValueError as err:  # a corrupt or non-image file: report it, go on
            report(PROG, f"{err}; skipped it, going on with the others")
            unreadable += 1
            continue
        poses, scores = inference.infer_image(model, image, spec, cfg.eval.decode,
                                              test_size=cfg.eval.test_size,
                                              score_fn=score_fn)["final"]
        order = np.argsort(-scores.numpy(), kind="stable")
        dets = inference.to_coco(poses[order], scores[order], image_id)
        for d in dets:
            d["file_name"] = os.path.basename(path)
        results.extend(dets)
        shown = order[scores.numpy()[order] > args.min_score]
        drawing = viz.draw_skeleton(image, poses[shown], spec, min_score=args.min_score)
        png = viz.save_png(drawing, out / f"{image_id:03d}_{Path(path).stem}.png")
        below = len(dets) - len(shown)
        print(f"{path}: {len(shown)} person(s) scoring above {args.min_score:g}"
              + (f" ({below} below, in the json only)" if below else "") + f" -> {png}")
    write_json(out / "predictions.json", results)
    skipped = f"; {unreadable} unreadable image(s) skipped" if unreadable else ""
    print(f"wrote {out / 'predictions.json'} ({len(results)} poses{skipped})")
    return EXIT_USAGE if unreadable else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
