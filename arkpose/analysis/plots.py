"""Figures of the analysis (matplotlib, Agg): the paper's Fig. 4 plots and the benchmarks.

Every function takes an :class:`~arkpose.analysis.report.AnalysisResult` (or several) and
returns the matplotlib Figure; :func:`save_all` writes them all as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from arkpose.analysis.breakdown import ISOLATED
from arkpose.analysis.errors import CLASSES, ERROR_TYPES
from arkpose.analysis.matching import REC_THRS
from arkpose.analysis.report import keypoint_groups
from arkpose.jsonio import atomic_path
from arkpose.spec import get_spec

STEP_STYLE = {  # coco-analyze's summarize(): label and fill colour of each cumulative step
    "baseline": ("Orig. Dts.", "white"),
    "miss": ("w/o Miss", "#F2E394"),
    "swap": ("w/o Swap", "#F2AE72"),
    "inversion": ("w/o Inv.", "#D96459"),
    "jitter": ("w/o Jit.", "#8C4646"),
    "score": ("Opt. Score", "#4F82BD"),
    "bckgd_false_pos": ("w/o Bkg. FP", "#8063A3"),
    "false_neg": ("w/o FN", "seagreen"),
}
ERR_LABEL = {"miss": "Miss", "swap": "Swap", "inversion": "Inversion", "jitter": "Jitter",
             "score": "Score", "bckgd_false_pos": "Bkg. FP", "false_neg": "FN", "good": "Good"}
CLASS_COLOR = {"good": "#1ED88B", "jitter": "#8C4646", "inversion": "#D96459",
               "swap": "#F2AE72", "miss": "#F2E394"}
ERR_COLOR = {e: STEP_STYLE[e][1] for e in ISOLATED}


def _fmt(v: float) -> str:
    return "  n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def plot_pr_breakdown(result, oks: float = 0.75, area: str = "all"):
    """Cumulative PR curves at one OKS: each step's gain filled in its colour, AP in legend."""
    t = int(np.argmin(np.abs(np.asarray(result.oks_thresholds) - oks)))
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    prev = None
    handles = []
    for step, per in result.cumulative["precision"].items():
        p = np.asarray(per[area][t], dtype=float)
        p = np.where(p < 0, np.nan, p)
        label, color = STEP_STYLE[step]
        ax.plot(REC_THRS, p, color="k", lw=1.2)
        if prev is not None:
            ax.fill_between(REC_THRS, prev, p, where=p >= prev, facecolor=color, interpolate=True)
        ap = result.cumulative["ap"][step][area][t]
        handles.append(matplotlib.patches.Patch(facecolor=color, edgecolor="k",
                                                label=f"{label:<12}: {_fmt(ap)}"))
        prev = p
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision",
           title=f"{result.name}: OKS {oks:.2f}, area {area}")
    ax.grid(True, alpha=0.4)
    ax.legend(handles=handles[::-1], loc="upper left", bbox_to_anchor=(1.01, 1),
              prop={"family": "monospace", "size": 9})
    fig.tight_layout()
    return fig


def plot_isolated(result):
    """Isolated AP improvement per error type: mean ± std over the OKS thresholds, per area."""
    areas = list(result.areas)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(ISOLATED)
    x = np.arange(len(areas))
    for i, err in enumerate(ISOLATED):
        m = [result.isolated["mean"][err][a] for a in areas]
        s = [result.isolated["std"][err][a] for a in areas]
        m = np.array([np.nan if v is None else v for v in m], dtype=float)
        s = np.array([np.nan if v is None else v for v in s], dtype=float)
        ax.bar(x - 0.4 + (i + 0.5) * width, np.nan_to_num(m), width, yerr=np.nan_to_num(s),
               color=ERR_COLOR[err], edgecolor="k", capsize=2, label=ERR_LABEL[err])
    ax.set_xticks(x, areas)
    ax.set(ylabel="AP improvement", xlabel="instance size (area range)",
           title=f"{result.name}: AP improvement if each error is fixed alone (OKS .50:.95)")
    ax.axhline(0, color="k", lw=0.8)
    ax.grid(True, axis="y", alpha=0.4)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def plot_keypoint_errors(result):
    """Overall pie of keypoint classes, per-keypoint stacked bars, per-group error shares."""
    ke = result.keypoint_errors
    names = result.keypoints
    fig = plt.figure(figsize=(15, 9))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    ax = fig.add_subplot(grid[0, 0])
    if ke["num_keypoints"]:
        vals = [ke["totals"][c] for c in CLASSES]
        ax.pie(vals, colors=[CLASS_COLOR[c] for c in CLASSES], wedgeprops={"edgecolor": "k", "lw": 0.5})
        ax.legend([f"{ERR_LABEL[c]:<9}: {ke['percent'][c]:.1f}%" for c in CLASSES],
                  loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2, fontsize=8,
                  prop={"family": "monospace", "size": 8})
    else:
        ax.text(0.5, 0.5, "no matched detections", ha="center", va="center")
        ax.axis("off")
    ax.set_title(f"{result.name}: keypoints of matched GTs")
    ax = fig.add_subplot(grid[0, 1:])
    per = {c: np.asarray(ke["per_keypoint"][c], dtype=float) for c in CLASSES}
    errs = sum(per[c] for c in ERROR_TYPES)
    bottom = np.zeros(len(names))
    for c in ("jitter", "inversion", "swap", "miss"):
        share = np.divide(per[c], errs, out=np.zeros_like(errs), where=errs > 0)
        ax.bar(np.arange(len(names)), share, bottom=bottom, color=CLASS_COLOR[c], edgecolor="k",
               lw=0.5, label=ERR_LABEL[c])
        bottom += share
    ax.set_xticks(np.arange(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="share of the keypoint's errors", ylim=(0, 1),
           title="error types per keypoint (each bar: one keypoint's errors)")
    ax.legend(ncol=4, fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.06))
    groups = keypoint_groups_from_names(result)
    for j, c in enumerate(ERROR_TYPES):
        ax = fig.add_subplot(grid[1, j])
        share = np.array([ke["groups"][c][g] if ke["groups"][c][g] is not None else np.nan
                          for g, _ in groups], dtype=float)
        if np.isfinite(share).any() and np.nansum(share) > 0:
            cols = [matplotlib.colors.to_rgba(CLASS_COLOR[c], 0.25 + 0.75 * i / max(1, len(groups) - 1))
                    for i in range(len(groups))]
            ax.pie(np.nan_to_num(share), colors=cols, wedgeprops={"edgecolor": "k", "lw": 0.5})
            ax.legend([f"{g:<9}: {100 * v:4.1f}%" for (g, _), v in zip(groups, np.nan_to_num(share))],
                      loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2,
                      prop={"family": "monospace", "size": 7})
        else:
            ax.text(0.5, 0.5, "none", ha="center", va="center")
            ax.axis("off")
        ax.set_title(f"{ERR_LABEL[c]}: share per keypoint type")
    fig.tight_layout()
    return fig


def keypoint_groups_from_names(result):
    try:
        spec = get_spec(result.spec)
    except KeyError:
        return [(n, [i]) for i, n in enumerate(result.keypoints)]
    return keypoint_groups(spec)


def _heat(ax, mat, rows, cols, title, cmap, fmt):
    mat = np.array([[np.nan if v is None else v for v in r] for r in np.asarray(mat, dtype=object)],
                   dtype=float)
    ax.imshow(np.nan_to_num(mat, nan=0.0), cmap=cmap, vmin=0)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, "–" if not np.isfinite(mat[i, j]) else fmt.format(mat[i, j]),
                    ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="num. keypoints", ylabel="num. overlaps (IoU>.1)", title=title)


def plot_occlusion(result):
    """Occlusion x crowding heat-maps: instances, keypoints, AP@.75 and the 4 error %."""
    occ = result.occlusion
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    rows, cols = occ["rows"], occ["cols"]
    _heat(axes[0, 0], occ["instances"], rows, cols, "instances", "Greens", "{:.0f}")
    _heat(axes[0, 1], occ["keypoints"], rows, cols, "keypoints of matched GTs", "Blues", "{:.0f}")
    _heat(axes[0, 2], occ["ap"]["baseline"], rows, cols, f"AP@{occ['oks']:.2f}", "Purples", "{:.3f}")
    _heat(axes[0, 3], occ["ap"]["score"], rows, cols, f"AP@{occ['oks']:.2f}, kpts+score fixed",
          "Purples", "{:.3f}")
    for ax, (c, cmap) in zip(axes[1], zip(("miss", "jitter", "swap", "inversion"),
                                           ("YlOrBr", "RdPu", "YlOrRd", "Reds"))):
        _heat(ax, occ["percent"][c], rows, cols, f"(%) {ERR_LABEL[c]}", cmap, "{:.1f}")
    fig.suptitle(f"{result.name}: occlusion x crowding")
    fig.tight_layout()
    return fig


def plot_size(result):
    """Size sensitivity: AP@.75 per bucket ('all' dashed) and isolated improvements."""
    sz = result.size
    b = sz["buckets"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1, 2.2]})
    ap = np.array([np.nan if sz["ap"][k] is None else sz["ap"][k] for k in b], dtype=float)
    ax1.bar(range(len(b)), np.nan_to_num(ap), color="#4F82BD", edgecolor="k")
    for i, n in enumerate(b):
        ax1.text(i, np.nan_to_num(ap[i]) + 0.01, f"n={sz['counts'][n]}", ha="center", fontsize=8)
    if sz["ap"]["all"] is not None and np.isfinite(sz["ap"]["all"]):
        ax1.axhline(sz["ap"]["all"], color="r", ls="--", lw=2, label="all")
        ax1.legend()
    ax1.set_xticks(range(len(b)), b)
    ax1.set(ylim=(0, 1.05), ylabel="AP", title=f"AP@{sz['oks']:.2f} per size")
    width = 0.8 / len(b)
    for i, n in enumerate(b):
        vals = np.array([np.nan if sz["improvement"][e][n] is None else sz["improvement"][e][n]
                         for e in ISOLATED], dtype=float)
        ax2.bar(np.arange(len(ISOLATED)) - 0.4 + (i + 0.5) * width, np.nan_to_num(vals), width,
                color=plt.cm.Blues(0.35 + 0.6 * i / max(1, len(b) - 1)), edgecolor="k", label=n)
    for j, e in enumerate(ISOLATED):
        v = sz["improvement"][e]["all"]
        if v is not None and np.isfinite(v):
            ax2.plot([j - 0.4, j + 0.4], [v, v], "r--", lw=1.5)
    ax2.set_xticks(range(len(ISOLATED)), [ERR_LABEL[e] for e in ISOLATED])
    ax2.set(ylabel="AP improvement", title="error sensitivity over size (red: all)")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(True, axis="y", alpha=0.4)
    fig.suptitle(f"{result.name}: size sensitivity")
    fig.tight_layout()
    return fig


def plot_compare(results: dict, area: str = "all", errors=ERROR_TYPES, metric: str = "ap",
                 title: str | None = None):
    """Side by side error breakdown of several models: {name: AnalysisResult}.

    metric "ap": isolated AP improvement (mean ± std over OKS .50:.95, in AP points x100);
    "percent": % of the matched GTs' keypoints carrying each error. ``title`` replaces
    the default axes title.
    """
    names = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(errors) * max(1, len(names)) / 2), 4.5))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(errors))
    for i, name in enumerate(names):
        r = results[name]
        if metric == "ap":
            m = np.array([_num(r.isolated["mean"][e][area]) for e in errors]) * 100
            s = np.array([_num(r.isolated["std"][e][area]) for e in errors]) * 100
        else:
            m = np.array([_num(r.keypoint_errors["percent"][e]) for e in errors])
            s = None
        bars = ax.bar(x - 0.4 + (i + 0.5) * width, np.nan_to_num(m), width,
                      yerr=None if s is None else np.nan_to_num(s), capsize=2, edgecolor="k",
                      color=plt.cm.tab10(i % 10), label=name)
        for rect, v in zip(bars, m):
            ax.text(rect.get_x() + rect.get_width() / 2, rect.get_height(), f"{v:.1f}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [ERR_LABEL[e] for e in errors])
    ax.set_ylabel("AP improvement (points)" if metric == "ap" else "% of keypoints")
    ax.set_title(title or "error breakdown" + (f" (area {area})" if metric == "ap" else ""))
    ax.grid(True, axis="y", alpha=0.4)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _num(v) -> float:
    return np.nan if v is None else float(v)


def save_all(result, out_dir, formats=("png", "pdf"), oks=(0.5, 0.75, 0.95)) -> list[Path]:
    """Write every figure of ``result`` under ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {f"pr_breakdown_oks{round(t * 100)}_all": plot_pr_breakdown(result, t) for t in oks}
    figs["ap_improvement_isolated"] = plot_isolated(result)
    figs["keypoint_errors"] = plot_keypoint_errors(result)
    if result.occlusion is not None:
        figs["occlusion_crowding"] = plot_occlusion(result)
    if result.size is not None:
        figs["size_sensitivity"] = plot_size(result)
    paths = []
    for name, fig in figs.items():
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
            paths.append(path)
        plt.close(fig)
    return paths
