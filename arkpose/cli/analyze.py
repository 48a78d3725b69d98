"""``arkpose analyze``: Ronchi-Perona error analysis of a keypoint detections json.

Writes DIR/analysis.json (every number) and, unless --no-plots, the figures as PNG and
PDF, then prints a short summary table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arkpose.analysis import analyze
from arkpose.analysis.data import AnalysisInputError
from arkpose.cli.common import report
from arkpose.config import ConfigError, DataConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="arkpose analyze",
        description="Ronchi-Perona error analysis of a keypoint detections json: writes "
                    "OUT/analysis.json and the figures, prints a summary table.")
    p.add_argument("--gt", required=True, help="COCO keypoint ground-truth json")
    p.add_argument("--dt", required=True, help="detections json (COCO results list)")
    p.add_argument("--out", default="analysis", help="output directory (default: ./analysis)")
    p.add_argument("--name", default=None, help="model name for titles (default: dt file stem)")
    p.add_argument("--no-plots", action="store_true", help="numbers only")
    p.add_argument("--no-benchmarks", action="store_true",
                   help="skip the occlusion x crowding and size studies")
    p.add_argument("--compat", choices=("coco-analyze", "fixed"), default="coco-analyze",
                   help="coco-analyze: the tool's numbers, quirks included (default); "
                        "fixed: quirks corrected, official COCO area ranges")
    p.add_argument("--spec", choices=("coco", "crowdpose"), default="coco", help="keypoint layout")
    p.add_argument("--oks-sigma-scale", type=float, default=1.0,
                   help="multiply the OKS sigmas (data.oks_sigma_scale; the CPU SynthPose "
                        "presets evaluate with 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    name = args.name or Path(args.dt).stem
    try:
        spec = DataConfig(dataset=args.spec, oks_sigma_scale=args.oks_sigma_scale).spec
        result = analyze(args.gt, args.dt, spec=spec, compat=args.compat,
                         name=name, benchmarks=not args.no_benchmarks)
    except (FileNotFoundError, AnalysisInputError, ConfigError) as err:
        return report("arkpose analyze", err)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "analysis.json")
    written = [out / "analysis.json"]
    if not args.no_plots:
        from arkpose.analysis.plots import save_all  # lazy: matplotlib (~0.5 s)

        written += save_all(result, out)
    print(result.summary_table())
    print(f"wrote {len(written)} files to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
