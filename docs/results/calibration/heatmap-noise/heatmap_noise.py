"""Why the heatmap quality is the noisiest (issue 17): where its seed-to-seed spread comes from.

    .venv/bin/python docs/results/calibration/heatmap-noise/heatmap_noise.py \
        [runs/ablations/table4-laptop] [reports/table4-laptop]

Reads a finished laptop ablation (`make ablations`): its deltas.csv and per_seed.csv, the
error analysis per seed (fig4_errors_per_seed.csv) and each row's heatmap-quality
detections. Prints (1) each component's Δ variance split into the validation-image part
and the rest (seeds, from the paired bootstrap's own intervals), (2) each row's seed SD of
AP per quality, (3) the heatmap quality's seed SDs with each Ronchi-Perona error type
fixed, (4) the heatmap AP with every pose scored 1 (ranking taken out), (5) the share of
heatmap joints the Gaussian refinement reached (score > 0.05). AP in points.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as st

from arkpose import ablate, ablation_def, evaluate, presets

ROWS = ("baseline", "+guidance", "+tradeoff", "+adaptive")
QUALITIES = ("regression", "heatmap", "final")


def variance_split(run: Path) -> pd.DataFrame:
    d = pd.read_csv(run / "deltas.csv")
    d = d[d.row.isin(ROWS)]
    se = (d.ci_high - d.ci_low) / 2 / st.t.ppf(0.975, d.df)
    image_se = (d.image_ci_high - d.image_ci_low) / 2 / st.norm.ppf(0.975)
    return pd.DataFrame({"component": d.row, "quality": d.quality, "half_width": 100 * (d.ci_high - d.ci_low) / 2,
                         "se": 100 * se, "image_se": 100 * image_se, "not_images_share": 1 - image_se**2 / se**2})


def per_seed(p: pd.DataFrame, quality: str, row: str, errors: pd.DataFrame | None = None,
             fixed: str | None = None):
    """AP of ``row`` per seed (``p``: a run's per_seed.csv), with the ``fixed`` error's gain."""
    ap = 100 * p[p.row == row].sort_values("seed")[f"{quality}_AP"].to_numpy()
    if fixed is None:
        return ap
    x = errors[(errors.metric == "ap") & (errors.quality == quality) & (errors.row == row)]
    gains = x.pivot(index="seed", columns="error", values="value").sort_index()
    return ap + (gains.sum(axis=1) if fixed == "all" else gains[fixed]).to_numpy()


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablations/table4-laptop")
    report = Path(sys.argv[2] if len(sys.argv) > 2 else "reports/table4-laptop")
    pd.set_option("display.width", 160)
    seeds = pd.read_csv(run / "per_seed.csv")
    print("(1) Δ variance: image part and the rest (seeds and seed x image)\n",
          variance_split(run).round(2).to_string(index=False))
    print("\n(2) seed SD of AP per row\n", pd.DataFrame(
        {q: [per_seed(seeds, q, r).std(ddof=1) for r in ROWS] for q in QUALITIES}, index=ROWS).round(2))
    errors = pd.read_csv(report / "fig4_errors_per_seed.csv")
    table = []
    for fixed in (None, "miss", "swap", "inversion", "jitter", "all"):
        line = {"fixed": fixed or "none"}
        line.update({f"{r} sd": per_seed(seeds, "heatmap", r, errors, fixed).std(ddof=1) for r in ROWS})
        line.update({f"Δ{b} sd": (per_seed(seeds, "heatmap", b, errors, fixed)
                                  - per_seed(seeds, "heatmap", a, errors, fixed)).std(ddof=1)
                     for a, b in zip(ROWS, ROWS[1:])})
        table.append(line)
    print("\n(3) heatmap quality, seed SDs with each error type fixed\n", pd.DataFrame(table).round(2).to_string(index=False))
    summary = json.loads((run / "summary.json").read_text())
    cfg = presets.preset(summary["preset"])
    gt = evaluate.load_gt(Path(summary["provenance"]["dataset"]) / cfg.data.val_ann)
    slugs = {r.name: r.slug for r in ablation_def.load_ablation(
        Path(ablate.__file__).resolve().parents[1] / "ablations" / "table4.yaml").rows}
    records = []
    for row in ROWS:
        for seed in summary["seeds"]:
            dets = json.loads((run / slugs[row] / f"seed-{seed}" / "eval" / "heatmap" / "detections.json").read_text())
            scores = np.concatenate([np.asarray(d["keypoints"]).reshape(-1, 3)[:, 2] for d in dets])
            scores = scores[scores > 0]  # labelled joints; unlabelled ones sit at score 0
            records.append({"row": row, "seed": seed,
                            "AP": 100 * evaluate.evaluate(gt, dets, cfg.data.spec)["AP"],
                            "AP_every_score_1": 100 * evaluate.evaluate(
                                gt, [{**d, "score": 1.0} for d in dets], cfg.data.spec)["AP"],
                            "refined_share": float((scores > 0.05).mean())})
    frame = pd.DataFrame(records)
    print("\n(4, 5) heatmap quality per row: mean and seed SD\n",
          frame.groupby("row", sort=False)[["AP", "AP_every_score_1", "refined_share"]].agg(["mean", "std"]).round(3))
    wide = frame.pivot(index="seed", columns="row", values="AP_every_score_1")
    print("Δ seed SD with every score 1:", {b: round(float((wide[b] - wide[a]).std(ddof=1)), 2)
                                            for a, b in zip(ROWS, ROWS[1:])})


if __name__ == "__main__":
    main()
