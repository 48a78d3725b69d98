"""``arkpose predict``: run a checkpoint on images; write COCO json and skeleton drawings.

    arkpose predict --checkpoint RUN/best.pt IMAGE... [--out DIR] [--no-flip]
                    [--scales 1 | 0.5,1,2] [--scorer RUN/scorer.pt] [--min-score 0.1]

``OUT/predictions.json`` holds COCO keypoint results (original pixels; ``image_id`` is the
image's position on the command line, ``file_name`` names it) and ``OUT/<name>.png`` each
image with its poses drawn. An image with nobody in it gives no entry, not an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from arkpose.cli.common import CommandError, load_checkpoint, load_scorer
from arkpose.cli.eval import _scales
from arkpose.jsonio import write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arkpose predict",
        description="Detect poses in images with a checkpoint; write json and drawings.",
    )
    p.add_argument("images", nargs="+", help="image files (any size, RGB or grey)")
    p.add_argument("--checkpoint", required=True, help="pose checkpoint, e.g. runs/quick/best.pt")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    p.add_argument("--flip", dest="flip", action="store_true", default=None,
                   help="flip test (default: the checkpoint config's eval.flip)")
    p.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument("--scales", type=_scales, default=None, help="test scales, e.g. 1 or 0.5,1,2")
    p.add_argument("--scorer", default=None, help="learned scoring net from `arkpose rescore`")
    p.add_argument("--min-score", type=float, default=0.1,
                   help="draw joints whose score is above this (all are written to json)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        print(f"arkpose predict: image {missing[0]} does not exist", file=sys.stderr)
        return 1
    import numpy as np

    from arkpose import inference, viz

    try:
        model, cfg = load_checkpoint(args.checkpoint, args.device)
        spec = cfg.data.spec
        score_fn = load_scorer(args.scorer, spec, cfg.eval.scoring_mode)
    except CommandError as err:
        print(f"arkpose predict: {err}", file=sys.stderr)
        return 1
    opts = inference.options_from_config(cfg, flip=args.flip, scales=args.scales,
                                         score_fn=score_fn)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for image_id, path in enumerate(args.images):
        try:
            image = inference.load_image(path)
        except ValueError as err:
            print(f"arkpose predict: {err}", file=sys.stderr)
            return 1
        poses, scores = inference.infer_image(model, image, spec, opts)["final"]
        order = np.argsort(-scores.numpy(), kind="stable")
        dets = inference.to_coco(poses[order], scores[order], image_id)
        for d in dets:
            d["file_name"] = os.path.basename(path)
        results.extend(dets)
        drawing = viz.draw_skeleton(image, poses[order], spec, min_score=args.min_score)
        png = viz.save_png(drawing, out / f"{image_id:03d}_{Path(path).stem}.png")
        print(f"{path}: {len(dets)} person(s) -> {png}")
    write_json(out / "predictions.json", results)
    print(f"wrote {out / 'predictions.json'} ({len(results)} poses)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
