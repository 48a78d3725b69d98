"""The Table 4 report: the run root's summary (:func:`write_summary`: per-seed records, the
intervals of :mod:`arkpose.stats`, provenance), and what is drawn from it (ours with
intervals beside the paper, the Δ table with verdicts, the forest plot, the error bars over
seeds, markdown). The README's results block is :mod:`arkpose.publish`.

Numbers are AP points (0-100) where a table is meant for people, fractions in the files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arkpose import config as config_lib
from arkpose import provenance, stats, strata
from arkpose.ablate import QUALITIES, Ablation, AblationError, Job, pretrain_info
from arkpose.analysis import AnalysisResult
from arkpose.analysis.errors import ERROR_TYPES
from arkpose.data import split_paths
from arkpose.evaluate import MATCHING_FILE
from arkpose.jsonio import atomic_path, write_json
from arkpose.provenance import markdown_block, read_identity
from arkpose.stats import format_interval


def load_summary(run_root: str | Path) -> dict[str, Any]:
    """The run root's ``summary.json``; one written before seeds and intervals is refused."""
    path = Path(run_root) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `arkpose ablate` first "
                                f"(or point run_root at an ablation's run folder)")
    summary = json.loads(path.read_text())
    if summary.get("format") != 2:
        raise AblationError(f"{path} was written by an older arkpose (no seeds or intervals); "
                            "run `arkpose ablate` again into a new --runs folder")
    return summary


def paper_table(csv_path: str | Path, table: str = "T4") -> pd.DataFrame:
    """The paper's numbers as a (method x metric) table, in [0, 1] like ours."""
    numbers = pd.read_csv(csv_path)
    numbers = numbers[numbers["table"] == table]
    wide = numbers.pivot_table(index="method", columns="metric", values="value", sort=False)
    return wide / 100.0


def to_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub markdown table of ``table`` (index included), NaN shown as '–'."""
    frame = table.reset_index()
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    rows = ["| " + " | ".join(cell(v) for v in rec) + " |" for rec in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def _write(path: Path, data: Any) -> None:
    write_json(path, data, indent=2, default=float)


def _json_or_empty(path: Path) -> dict:
    """A run's own small json record (done.json, timing.json), or {} where it has none."""
    return json.loads(path.read_text()) if path.is_file() else {}


def _commit(done: dict) -> str:
    return f"{done.get('commit')}{' (dirty)' if done.get('dirty') else ''}"


def run_record(job: Job, metrics: dict[str, dict], eval_dir: Path, scorer: Path | None) -> dict[str, Any]:
    """One line of ``per_seed.csv``: the (row, seed)'s stats per quality, its wall seconds,
    whether it used a learned scorer, its units' initialisation and its digests."""
    record: dict[str, Any] = {"row": job.row.name, "seed": job.seed,
                              "paper_method": job.row.paper_name}
    for quality in QUALITIES:
        for key, value in metrics[quality].items():
            if isinstance(value, (int, float)):
                record[f"{quality}_{key}"] = float(value)
    seconds = {"train_s": job.folder / "done.json" if job.trains else None,
               "eval_s": eval_dir / "timing.json",
               "scorer_s": scorer.parent / "timing.json" if scorer else None}
    for key, path in seconds.items():
        record[key] = float(_json_or_empty(path).get(key, 0.0)) if path else 0.0
    record["learned_scoring"] = scorer is not None
    record["unit_init"] = job.cfg.model.unit_init
    record["train_digest"] = read_identity(job.train_folder)["digest"]
    record["eval_digest"] = read_identity(eval_dir)["digest"]
    return record


def write_summary(ablation: Ablation, preset: str, base: config_lib.Config, seeds: tuple[int, ...],
                  jobs: list[Job], records: list[dict], eval_dirs: dict, root: Path, *,
                  data_digest: str, max_val_images: int, n_boot: int, wall_s: float,
                  threads: int = 1) -> dict[str, Any]:
    """Paired bootstrap per quality, then every table of the run root (module doc).
    ``threads``: matchings bootstrapped at once."""
    row_names = [r.name for r in ablation.rows]
    row_tables, delta_tables = [], []
    for quality in QUALITIES:
        # One object per file: a row that reuses another's evaluation is bootstrapped once.
        loaded = {folder: stats.Matching.load(folder / MATCHING_FILE)
                  for folder in {eval_dirs[(r, s, quality)] for r in row_names for s in seeds}}
        matchings = {(r, s): loaded[eval_dirs[(r, s, quality)]] for r in row_names for s in seeds}
        result = stats.ablation_bootstrap(matchings, row_names, seeds, n_boot=n_boot, threads=threads)
        row_tables.append(result.rows.assign(quality=quality))
        delta_tables.append(result.deltas.assign(quality=quality))
    rows = pd.concat(row_tables, ignore_index=True)
    deltas = pd.concat(delta_tables, ignore_index=True)
    # The same intervals on strata of the validation persons (arkpose/strata.py).
    by_stratum = strata.strata_deltas(eval_dirs, row_names, seeds, QUALITIES, split_paths(base, "val")[0],
                                      base.data.spec, n_boot=n_boot, threads=threads)
    per_seed = pd.DataFrame.from_records(records)
    paper = {r.name: r.paper_name for r in ablation.rows}
    rows.insert(1, "paper_method", rows["row"].map(paper))
    deltas.insert(1, "paper_method", deltas["row"].map(paper))
    e = base.eval
    dones = [_json_or_empty(j.folder / "done.json") for j in jobs if j.trains]
    prov = {
        **provenance.environment(base),
        "preset": preset, "ablation": ablation.name, "seeds": list(seeds),
        "dataset": str(Path(base.data.root).resolve()), "dataset_digest": data_digest,
        "oks_sigma_scale": base.data.oks_sigma_scale,
        "evaluation": {"split": "val", "max_images": max_val_images, "flip": e.decode.flip,
                       "scales": list(e.decode.scales), "test_size": e.test_size,
                       "scoring_mode": e.scoring_mode},
        "unit_init": sorted({j.cfg.model.unit_init for j in jobs if j.trains}),
        "bootstrap": {"n_boot": n_boot, "level": 0.95, "resamples": "seeds and images, paired"},
        "wall_s_per_row": per_seed.assign(total=per_seed[["train_s", "eval_s", "scorer_s"]].sum(axis=1))
        .groupby("row", sort=False)["total"].sum().round(1).to_dict(),
        "wall_s_this_call": round(wall_s, 1),
        "pretrain": pretrain_info(root),  # the shared backbone, if the preset has one
        # The summary's own commit may be newer than the code that trained the runs it reuses.
        "train_commits": sorted({_commit(done) for done in dones}),
        "train_devices": sorted({str(done.get("device")) for done in dones}),
        # Threads per training (older runs did not record them: "?"); "threads" above is
        # the driver's, which pool workers divide (arkpose.pool).
        "train_threads": sorted({str(done.get("threads", "?")) for done in dones}),
        "launcher": {"launcher": base.launch.launcher, "jobs": base.launch.jobs},
    }
    for name, frame in (("per_seed", per_seed), ("rows", rows), ("deltas", deltas), ("strata", by_stratum)):
        frame.to_csv(root / f"{name}.csv", index=False)
    _write(root / "provenance.json", prov)
    summary = {
        "format": 2, "ablation": ablation.name, "preset": preset,
        "description": ablation.description, "paper_table": ablation.paper_table,
        "seeds": list(seeds),
        "rows": [{"row": r.name, "paper_method": r.paper_name, "slug": r.slug,
                  "reuse": r.reuse} for r in ablation.rows],
        "row_stats": rows.to_dict(orient="records"),
        "deltas": deltas.to_dict(orient="records"),
        "strata": by_stratum.to_dict(orient="records"),
        "per_seed": records,
        "provenance": prov,
        "config": config_lib.to_dict(base),
    }
    _write(root / "summary.json", summary)
    return summary


def rows_with_paper(summary: dict, paper_csv: str | Path) -> pd.DataFrame:
    """One line per row: per quality our mean AP, its CI, and the paper's AP (points)."""
    stats = pd.DataFrame.from_records(summary["row_stats"])
    paper = paper_table(paper_csv, summary.get("paper_table") or "T4")
    methods = {r["row"]: r["paper_method"] for r in summary["rows"]}
    table = pd.DataFrame(index=pd.Index([r["row"] for r in summary["rows"]], name="row"))
    for quality in QUALITIES:
        q = stats[stats["quality"] == quality].set_index("row")
        table[f"{quality}"] = 100 * q["AP"]
        table[f"{quality} ci_low"] = 100 * q["ci_low"]
        table[f"{quality} ci_high"] = 100 * q["ci_high"]
        metric = f"{quality}_AP"
        table[f"{quality} (paper)"] = [
            100 * paper.loc[m, metric] if m in paper.index and metric in paper else math.nan
            for m in table.index.map(methods)
        ]
    return table


def deltas_with_paper(summary: dict, paper_csv: str | Path) -> pd.DataFrame:
    """One line per (component, quality): our mean Δ with its CI, P(Δ > 0), the verdict and
    the paper's Δ (points)."""
    deltas = pd.DataFrame.from_records(summary["deltas"])
    paper = paper_table(paper_csv, summary.get("paper_table") or "T4")
    methods = {r["row"]: r["paper_method"] for r in summary["rows"]}
    out = []
    for rec in deltas.to_dict(orient="records"):
        metric = f"{rec['quality']}_AP"
        now, before = methods[rec["row"]], methods[rec["vs"]]
        known = all(m in paper.index for m in (now, before)) and metric in paper
        out.append({
            "component": rec["row"], "quality": rec["quality"], "delta": 100 * rec["delta"],
            "ci_low": 100 * rec["ci_low"], "ci_high": 100 * rec["ci_high"],
            "p_improve": rec["p_improve"], "verdict": rec["verdict"],
            "paper_delta": 100 * (paper.loc[now, metric] - paper.loc[before, metric]) if known else math.nan,
            "seeds": rec["seeds"],
        })
    return pd.DataFrame(out)


def rows_display(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`rows_with_paper` as text cells: per quality "ours" (mean [95% CI]) and "paper"."""
    shown = pd.DataFrame(index=rows.index)
    for quality in QUALITIES:
        shown[f"{quality} (ours)"] = [
            format_interval(m, lo, hi)
            for m, lo, hi in rows[[quality, f"{quality} ci_low", f"{quality} ci_high"]].to_numpy()]
        shown[f"{quality} (paper)"] = rows[f"{quality} (paper)"].map(lambda v: f"{v:.1f}")
    return shown


def deltas_display(deltas: pd.DataFrame) -> pd.DataFrame:
    """:func:`deltas_with_paper` as text cells, indexed by (component, quality)."""
    table = deltas.assign(**{
        "Δ ours [95% CI]": [format_interval(d, lo, hi)
                            for d, lo, hi in deltas[["delta", "ci_low", "ci_high"]].to_numpy()],
        "P(Δ>0)": deltas["p_improve"].map(lambda p: "–" if math.isnan(p) else f"{p:.2f}"),
        "Δ paper": deltas["paper_delta"].round(1),
    })
    columns = ["component", "quality", "Δ ours [95% CI]", "P(Δ>0)", "verdict", "Δ paper"]
    return table[columns].set_index(["component", "quality"])


def forest_plot(deltas: pd.DataFrame, title: str = ""):
    """Each component's ΔAP with its 95% CI (ours, one panel per quality) and the paper's Δ
    as a marker. ``deltas``: :func:`deltas_with_paper`."""
    import matplotlib.pyplot as plt  # lazy: matplotlib (~0.5 s); the report's tables need none

    components = list(dict.fromkeys(deltas["component"]))
    fig, axes = plt.subplots(1, len(QUALITIES), figsize=(4 * len(QUALITIES), 0.6 * len(components) + 1.6),
                             sharey=True)
    y = np.arange(len(components))[::-1]
    for ax, quality in zip(np.atleast_1d(axes), QUALITIES):
        d = deltas[deltas["quality"] == quality].set_index("component").reindex(components)
        low = (d["delta"] - d["ci_low"]).to_numpy()
        high = (d["ci_high"] - d["delta"]).to_numpy()
        known = ~np.isnan(low)
        ax.errorbar(d["delta"][known], y[known], xerr=[low[known], high[known]], fmt="o",
                    color="#4c72b0", capsize=3, label="ours, 95% CI")
        ax.plot(d["delta"][~known], y[~known], "o", mfc="white", color="#4c72b0",
                label="ours (1 seed: no CI)" if (~known).any() else None)
        ax.plot(d["paper_delta"], y, "D", color="#c44e52", ms=5, label="paper (COCO)")
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set(title=quality, xlabel="ΔAP vs the row above (points)")
        ax.set_yticks(y, components)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


FIGURE_FORMATS = ("png", "svg")  # PNG for the HTML pages, SVG for papers


def save_figure(fig, path: str | Path, prov: dict | None = None, dpi: int = 150,
                formats: tuple[str, ...] = FIGURE_FORMATS) -> Path:
    """Save ``fig`` as ``path`` with each suffix of ``formats`` (the PNG's path is returned),
    the provenance in each file's metadata, each through a temp file and a rename."""
    path = Path(path)
    meta = {"Description": json.dumps(prov, default=str)} if prov else None
    for fmt in formats:
        with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata=meta)
    return path.with_suffix(f".{formats[0]}")


def write_markdown(table: pd.DataFrame, path: str | Path, prov: dict | None = None,
                   digits: int = 1) -> Path:
    """``table`` as a markdown file, with the provenance block under it."""
    path = Path(path)
    text = to_markdown(table, digits) + (markdown_block(prov) if prov else "")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def row_folders(run_root: str | Path, summary: dict, row: str, seed: int) -> tuple[Path, dict[str, Path]]:
    """Where one (row, seed) of an ablation run lives: the training folder of its checkpoint
    (the reused row's for a reusing row) and each quality's evaluation folder (a reusing row
    evaluates the final quality only; its other qualities are the reused row's)."""
    rows = {r["row"]: r for r in summary["rows"]}
    if row not in rows:
        raise KeyError(f"row {row!r} is not in this run; its rows are {list(rows)}")
    if seed not in summary["seeds"]:
        raise KeyError(f"seed {seed} is not in this run; its seeds are {summary['seeds']}")
    own = Path(run_root) / rows[row]["slug"] / f"seed-{seed}"
    reused = rows[row]["reuse"]
    train = Path(run_root) / rows[reused]["slug"] / f"seed-{seed}" if reused else own
    evals = {q: own / "eval" / q if (own / "eval" / q / "detections.json").is_file()
             else train / "eval" / q for q in QUALITIES}
    return train, evals


def error_frame(run_root: str | Path, summary: dict) -> pd.DataFrame:
    """Every (row, seed, quality)'s Ronchi-Perona numbers, long format: ``metric``
    "percent" (% of the matched persons' keypoints per error type) or "ap" (AP points gained
    by fixing the error type alone, area all, mean over OKS .50:.95)."""
    records = []
    for row in summary["rows"]:
        for seed in summary["seeds"]:
            for quality in QUALITIES:
                path = Path(run_root) / row["slug"] / f"seed-{seed}" / "analysis" / quality / "analysis.json"
                if not path.is_file():
                    continue  # a reusing row analyses its own final quality only
                res = AnalysisResult.from_json(path)
                for error in ERROR_TYPES:
                    pct = res.keypoint_errors["percent"].get(error)
                    gain = res.isolated["mean"][error]["all"]
                    for metric, value in (("percent", pct), ("ap", None if gain is None else 100 * gain)):
                        records.append({"row": row["row"], "seed": seed, "quality": quality,
                                        "metric": metric, "error": error,
                                        "value": math.nan if value is None else float(value)})
    return pd.DataFrame.from_records(records)


def plot_errors_over_seeds(errors: pd.DataFrame, quality: str, metric: str, title: str = "",
                           ax=None):
    """Grouped bars, one group per error type, one bar per row: the mean over seeds, the
    error bar spanning the seeds' minimum to maximum. ``errors``: :func:`error_frame`. Draws
    into ``ax`` when given (returns its figure), else into a new figure."""
    import matplotlib.pyplot as plt  # lazy: matplotlib (~0.5 s), as forest_plot

    from arkpose.analysis.plots import ERR_LABEL  # lazy: it imports matplotlib

    data = errors[(errors["quality"] == quality) & (errors["metric"] == metric)]
    rows = list(dict.fromkeys(data["row"]))
    kinds = list(dict.fromkeys(data["error"]))
    stats = data.groupby(["row", "error"])["value"].agg(["mean", "min", "max"])
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 1.2 * len(kinds) * max(1, len(rows)) / 2), 4))
    fig = ax.figure
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(kinds))
    for i, row in enumerate(rows):
        s = stats.loc[row].reindex(kinds)
        ax.bar(x - 0.4 + (i + 0.5) * width, s["mean"], width, color=plt.cm.tab10(i % 10),
               edgecolor="k", label=row,
               yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], capsize=2)
    ax.set_xticks(x, [ERR_LABEL.get(k, k) for k in kinds])
    ax.set_ylabel("% of keypoints" if metric == "percent" else "AP gained by fixing it alone (points)")
    seeds = data["seed"].nunique()
    ax.set_title(title or f"{quality} quality (mean of {seeds} seed(s); bars span the seeds)")
    ax.grid(True, axis="y", alpha=0.4)
    ax.legend(fontsize=8)
    return fig
