"""Ablation runs: train every row of an ablation definition, evaluate, analyse, report.

An ablation definition (``ablations/table4.yaml``) lists rows; each row is a set of config
overrides applied on top of a preset, or reuses another row's checkpoint with learned pose
scoring. :func:`run_ablation` is resumable at every step: a row whose ``done.json`` exists
is not retrained, an interrupted training resumes from ``last.pt``, and evaluations and
analyses already written are read back instead of recomputed.

Layout (architecture.md): ``<runs>/<ablation>-<preset>/<row>/`` holds the training run,
``eval/<quality>/{detections.json, metrics.json}``, ``analysis/<quality>/analysis.json`` and,
for scoring rows, ``scorer.pt``; ``<runs>/<ablation>-<preset>/summary.csv`` collects the APs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from arkpose import config as config_lib
from arkpose.jsonio import write_json

QUALITIES = ("regression", "heatmap", "final")


class AblationError(ValueError):
    """A malformed ablation definition."""


@dataclass(frozen=True)
class Row:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    reuse: str | None = None  # evaluate this row's checkpoint instead of training
    learned_scoring: bool = False
    paper_method: str | None = None  # the row's name in paper_numbers.csv

    @property
    def slug(self) -> str:
        """Directory-safe name: ``+guidance`` -> ``plus-guidance``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name.replace("+", "plus-")).strip("-")


@dataclass(frozen=True)
class Ablation:
    name: str
    rows: tuple[Row, ...]
    description: str = ""
    paper_table: str | None = None


def load_ablation(path: str | Path) -> Ablation:
    """Read and validate an ablation yaml (every override key is checked against Config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ablation definition {path} does not exist (see ablations/)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise AblationError(f"{path}: not valid yaml: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise AblationError(f"{path}: needs a top-level mapping with a non-empty 'rows' list")
    known = {"name", "set", "reuse", "learned_scoring", "paper_method"}
    rows = []
    for i, raw in enumerate(data["rows"]):
        if not isinstance(raw, dict) or "name" not in raw:
            raise AblationError(f"{path}: row {i} needs a 'name'")
        unknown = set(raw) - known
        if unknown:
            raise AblationError(
                f"{path}: row {raw['name']!r} has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(known)}"
            )
        overrides = dict(raw.get("set") or {})
        try:
            config_lib.apply_overrides(config_lib.Config(), overrides)
        except config_lib.ConfigError as err:
            raise AblationError(f"{path}: row {raw['name']!r}: {err}") from None
        rows.append(
            Row(
                name=str(raw["name"]),
                overrides=overrides,
                reuse=raw.get("reuse"),
                learned_scoring=bool(raw.get("learned_scoring", False)),
                paper_method=raw.get("paper_method"),
            )
        )
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise AblationError(f"{path}: row names must be unique, got {names}")
    trained = {r.name for r in rows if r.reuse is None}
    for r in rows:
        if r.reuse is not None and r.reuse not in trained:
            raise AblationError(
                f"{path}: row {r.name!r} reuses {r.reuse!r}, which is not a trained row "
                f"({sorted(trained)})"
            )
    return Ablation(
        name=str(data.get("name", path.stem)),
        rows=tuple(rows),
        description=str(data.get("description", "")).strip(),
        paper_table=data.get("paper_table"),
    )


def row_config(base: config_lib.Config, row: Row, extra: list[str] | None = None) -> config_lib.Config:
    """The preset ``base`` with the row's overrides, then the user's ``extra`` overrides."""
    cfg = config_lib.clone(base)
    cfg.name = row.name
    config_lib.apply_overrides(cfg, row.overrides)
    config_lib.apply_overrides(cfg, extra or [])
    cfg.eval.learned_scoring = row.learned_scoring
    return cfg


def ensure_data(cfg: config_lib.Config, *, progress: bool = True) -> Path:
    """The dataset root of ``cfg``. SynthPose data is generated when missing and checked
    against its preset when present (a dataset of an older preset version is refused, so
    a stale copy is never trained on silently)."""
    root = Path(cfg.data.root)
    if not cfg.data.synth_preset:
        if (root / cfg.data.val_ann).is_file() and (root / cfg.data.train_ann).is_file():
            return root
        raise FileNotFoundError(
            f"no dataset at {root} (expected {cfg.data.train_ann} and {cfg.data.val_ann}); "
            "point --data at your COCO/CrowdPose copy"
        )
    from arkpose.data import synth

    try:
        return Path(synth.generate(root, preset=cfg.data.synth_preset, seed=0, progress=progress))
    except synth.SynthError as err:
        raise synth.SynthError(
            f"{err}. To regenerate it for this preset: arkpose synth --out {root} "
            f"--preset {cfg.data.synth_preset} --force"
        ) from None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    write_json(path, data, indent=2, default=float)


def train_row(cfg: config_lib.Config, out: Path, *, progress: bool = True) -> Path:
    """Train one row (resuming an interrupted run); returns the final checkpoint path."""
    from arkpose import train

    done = out / "done.json"
    if not done.is_file():
        metrics = train.train(cfg, out, resume=(out / "last.pt").is_file(), progress=progress)
        _write_json(done, {"metrics": metrics})
    return out / "last.pt"


def evaluate_row(
    checkpoint: Path,
    out: Path,
    qualities: tuple[str, ...],
    *,
    scorer: Path | None = None,
    max_images: int = 0,
    progress: bool = True,
) -> dict[str, dict]:
    """Evaluate ``checkpoint`` for each quality, reusing results already on disk."""
    todo = [q for q in qualities if not (out / "eval" / q / "metrics.json").is_file()]
    if todo:
        from arkpose import checkpoint as ckpt
        from arkpose import evaluate

        model, cfg = ckpt.load_model(checkpoint)
        score_fn = None
        if scorer is not None:
            from arkpose import rescore

            score_fn = rescore.load_score_fn(scorer, cfg.data.spec, cfg.eval.scoring_mode)
        evaluate.evaluate_model(
            model,
            cfg,
            split="val",
            qualities=tuple(todo),
            max_images=max_images,
            out_dir=out / "eval",
            score_fn=score_fn,
            progress=progress,
        )
    return {q: _read_json(out / "eval" / q / "metrics.json") for q in qualities}


def analysis_compat(cfg: config_lib.Config) -> str:
    """coco-analyze's own numbers on COCO; its quirk-free mode elsewhere.

    The original tool's area range 'all' starts at 32² px: on SynthPose at 128 px that
    would leave out four persons in five, so synthetic data uses ``compat="fixed"``.
    """
    return "coco-analyze" if cfg.data.dataset == "coco" else "fixed"


def analyse_row(cfg: config_lib.Config, out: Path, qualities: tuple[str, ...]) -> None:
    """Ronchi-Perona analysis of each quality's detections (numbers only; plots in notebooks)."""
    from arkpose import analysis

    gt = Path(cfg.data.root) / cfg.data.val_ann
    for quality in qualities:
        target = out / "analysis" / quality / "analysis.json"
        if target.is_file():
            continue
        detections = out / "eval" / quality / "detections.json"
        result = analysis.analyze(
            str(gt), str(detections), spec=cfg.data.spec, compat=analysis_compat(cfg),
            name=f"{cfg.name} ({quality})",
        )
        _write_json(target, result.to_dict())  # NaN already written as null


def run_ablation(
    ablation: Ablation,
    preset: str,
    *,
    runs_dir: str | Path = "runs/ablations",
    overrides: list[str] | None = None,
    data_root: str | None = None,
    max_val_images: int = 0,
    analyse: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Train, evaluate and analyse every row; returns (and writes) the summary table.

    The table has one row per ablation row and the columns ``<quality>_AP`` (plus
    ``<quality>_AP50`` ... where the evaluator reports them), in [0, 1].
    """
    base = config_lib.preset(preset)
    if data_root is not None:
        base.data.root = data_root
        base.data.synth_preset = ""
    config_lib.apply_overrides(base, overrides or [])
    ensure_data(base, progress=progress)
    root = Path(runs_dir) / f"{ablation.name}-{preset}"
    root.mkdir(parents=True, exist_ok=True)

    records = []
    by_name = {r.name: r for r in ablation.rows}
    for row in ablation.rows:
        cfg = row_config(base, row, overrides)
        out = root / row.slug
        out.mkdir(parents=True, exist_ok=True)
        config_lib.save_yaml(cfg, out / "ablation_row.yaml")
        if row.reuse is None:
            checkpoint = train_row(cfg, out, progress=progress)
            qualities = QUALITIES
            scorer = None
        else:
            source = root / by_name[row.reuse].slug
            checkpoint = source / "last.pt"
            # Learned scoring only reorders the final poses: the regression and heatmap
            # qualities are the reused row's (as in the paper's Table 4).
            qualities = ("final",)
            scorer = _ensure_scorer(checkpoint, source / "scorer.pt", progress=progress)
        stats = evaluate_row(
            checkpoint, out, qualities, scorer=scorer, max_images=max_val_images, progress=progress
        )
        if row.reuse is not None:
            reused = root / by_name[row.reuse].slug / "eval"
            for quality in QUALITIES:
                if quality not in stats:
                    stats[quality] = _read_json(reused / quality / "metrics.json")
        if analyse:
            analyse_row(cfg, out, qualities)
        record: dict[str, Any] = {"row": row.name, "paper_method": row.paper_method or row.name}
        for quality in QUALITIES:
            for key, value in stats[quality].items():
                if isinstance(value, (int, float)):
                    record[f"{quality}_{key}"] = float(value)
        records.append(record)

    table = pd.DataFrame.from_records(records)
    table.to_csv(root / "summary.csv", index=False)
    _write_json(
        root / "summary.json",
        {
            "ablation": ablation.name,
            "preset": preset,
            "description": ablation.description,
            "paper_table": ablation.paper_table,
            "rows": records,
            "config": config_lib.to_dict(base),
        },
    )
    return table


def _ensure_scorer(checkpoint: Path, target: Path, *, progress: bool) -> Path:
    if not target.is_file():
        from arkpose import rescore

        rescore.rescore(checkpoint, out=target, progress=progress)
    return target


def paper_table(csv_path: str | Path, table: str = "T4") -> pd.DataFrame:
    """The paper's numbers as a (method x metric) table, in [0, 1] like ours."""
    numbers = pd.read_csv(csv_path)
    numbers = numbers[numbers["table"] == table]
    wide = numbers.pivot_table(index="method", columns="metric", values="value", sort=False)
    return wide / 100.0


def compare_with_paper(run_root: str | Path, paper_csv: str | Path) -> pd.DataFrame:
    """Our APs next to the paper's, one row per ablation row, in AP points (0-100)."""
    run_root = Path(run_root)
    summary = _read_json(run_root / "summary.json")
    ours = pd.DataFrame.from_records(summary["rows"])
    paper = paper_table(paper_csv, summary.get("paper_table") or "T4")
    table = pd.DataFrame({"row": ours["row"]})
    for quality in QUALITIES:
        table[f"{quality} (ours)"] = 100 * ours[f"{quality}_AP"]
        metric = f"{quality}_AP"
        table[f"{quality} (paper)"] = [
            100 * paper.loc[m, metric] if m in paper.index and metric in paper else float("nan")
            for m in ours["paper_method"]
        ]
    return table.set_index("row")


def plot_qualities(table: pd.DataFrame, title: str = ""):
    """Grouped bars: each row's regression / heatmap / final AP, ours solid, paper hatched."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(table))
    width = 0.13
    colors = {"regression": "#4c72b0", "heatmap": "#dd8452", "final": "#55a868"}
    for i, quality in enumerate(QUALITIES):
        offset = (i - 1) * 2 * width
        ax.bar(x + offset - width / 2, table[f"{quality} (ours)"], width,
               color=colors[quality], label=f"{quality} (ours)")
        ax.bar(x + offset + width / 2, table[f"{quality} (paper)"], width, color="white",
               edgecolor=colors[quality], hatch="///", label=f"{quality} (paper, COCO)")
    ax.set_xticks(x, table.index)
    ax.set_ylabel("AP")
    ax.set_title(title)
    ax.legend(ncol=3, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12))
    fig.tight_layout()
    return fig


def execute_notebook(source: Path, target: Path, parameters: dict[str, Any]) -> Path:
    """Run ``source`` with papermill into ``target`` (.ipynb) and export it as HTML next to it."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    target.parent.mkdir(parents=True, exist_ok=True)
    declared = papermill.inspect_notebook(str(source))
    papermill.execute_notebook(
        str(source), str(target), parameters={k: v for k, v in parameters.items() if k in declared},
        progress_bar=False, cwd=str(Path.cwd()),
    )
    html, _ = HTMLExporter().from_notebook_node(nbformat.read(str(target), as_version=4))
    target.with_suffix(".html").write_text(html)
    return target


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
