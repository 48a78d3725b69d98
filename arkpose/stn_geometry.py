"""Does T follow the body? The answer in numbers, for every adaptive unit over all seeds.

For each adaptive unit, at each validation person's center (:func:`arkpose.stn.unit_transforms`):
the circular correlation of T's rotation with the person's true in-plane rotation, and the
Spearman ρ of T's scale sqrt|det T| with the person's true height (SynthPose records both).
Each seed's model is its own measurement (seeds may settle on different rotation offsets,
which the circular correlation ignores within a seed but pooling would blur), so a unit's
number is the **mean over seeds of the per-seed coefficient**. Its 95% interval is a
percentile bootstrap over persons: persons drawn with replacement, the same draws for every
seed (they are the same validation persons), the coefficient recomputed per seed and
averaged. The bootstrap's generator is seeded, so the table is reproducible.

The numbers are reported whatever they are: nothing here feeds back into training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

TRUTH = ("true_rotation_deg", "true_height_px")
KEY = ["image_id", "ann_id"]  # a validation person, the same in every seed


def circular_corr(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Jammalamadaka-SenGupta circular correlation of paired angle samples, vectorised.

    a_deg, b_deg: (..., P) degrees. Returns (...); NaN where either sample has no spread
    around its circular mean.
    """
    a, b = np.deg2rad(np.asarray(a_deg, float)), np.deg2rad(np.asarray(b_deg, float))
    sa = np.sin(a - np.arctan2(np.sin(a).mean(-1), np.cos(a).mean(-1))[..., None])
    sb = np.sin(b - np.arctan2(np.sin(b).mean(-1), np.cos(b).mean(-1))[..., None])
    denom = np.sqrt((sa**2).sum(-1) * (sb**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 1e-12, (sa * sb).sum(-1) / denom, np.nan)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman ρ (Pearson of mid-ranks) of paired samples, vectorised. x, y: (..., P).
    Returns (...); NaN where either sample is constant."""
    from scipy.stats import rankdata  # lazy: scipy.stats costs ~1.3 s, only for this

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    denom = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 1e-12, (rx * ry).sum(-1) / denom, np.nan)


def has_true_geometry(frame: pd.DataFrame) -> bool:
    """Whether every person of ``frame`` has a true rotation and height (SynthPose)."""
    return len(frame) > 0 and all(c in frame and frame[c].notna().all() for c in TRUTH)


def seed_mean_with_ci(learned: np.ndarray, truth: np.ndarray, coefficient, *, n_boot: int,
                      level: float, rng: int) -> tuple[float, float, float]:
    """Mean over seeds of ``coefficient(learned[s], truth)`` and its percentile bootstrap
    interval over persons (the same draws for every seed).

    learned: (S, P); truth: (P,); coefficient: (..., P), (..., P) -> (...).
    Returns (value, low, high); NaN bounds when fewer than half the draws are defined.
    """
    value = float(np.mean(coefficient(learned, truth[None])))
    draws = np.random.default_rng(rng).integers(0, learned.shape[1], (n_boot, learned.shape[1]))
    boot = np.mean([coefficient(row[draws], truth[draws]) for row in learned], axis=0)  # (B,)
    finite = boot[np.isfinite(boot)]
    if len(finite) < n_boot / 2:
        return value, np.nan, np.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return value, float(low), float(high)


def geometry_correlations(frame: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95,
                          rng: int = 0) -> pd.DataFrame:
    """Per adaptive unit: T's rotation against the true rotation (circular correlation) and
    T's scale against the true height (Spearman ρ), each the mean over seeds with its
    bootstrap interval over persons (module doc).

    frame: :func:`arkpose.stn.unit_transforms` rows of every seed, with a ``seed`` column.
    Persons are those every seed saw. Returns one line per unit: ``unit, dilation, seeds,
    persons, rotation_circular_corr, rotation_ci_low, rotation_ci_high, scale_spearman,
    scale_ci_low, scale_ci_high``.
    """
    if not has_true_geometry(frame):
        raise ValueError("these persons have no true rotation and height (only SynthPose "
                         "annotations carry them): there is nothing to correlate T with")
    seeds = sorted(frame["seed"].unique())
    records = []
    for unit, rows in frame.groupby("unit", sort=True):
        wide = rows.pivot_table(index=KEY, columns="seed", values=["rotation_deg", "scale"]).dropna()
        truth = rows.drop_duplicates(KEY).set_index(KEY).loc[wide.index, list(TRUTH)]
        rot = seed_mean_with_ci(wide["rotation_deg"][seeds].to_numpy().T, truth[TRUTH[0]].to_numpy(),
                                circular_corr, n_boot=n_boot, level=level, rng=rng)
        size = seed_mean_with_ci(wide["scale"][seeds].to_numpy().T, truth[TRUTH[1]].to_numpy(),
                                 spearman, n_boot=n_boot, level=level, rng=rng)
        records.append({"unit": unit, "dilation": int(rows["dilation"].iloc[0]) if "dilation" in rows else 1,
                        "seeds": len(seeds), "persons": len(wide),
                        "rotation_circular_corr": rot[0], "rotation_ci_low": rot[1], "rotation_ci_high": rot[2],
                        "scale_spearman": size[0], "scale_ci_low": size[1], "scale_ci_high": size[2]})
    return pd.DataFrame.from_records(records)


def plot_geometry(frame: pd.DataFrame, numbers: pd.DataFrame | None = None, units: Sequence[str] | None = None):
    """One row of panels per unit: T's rotation against the true rotation and T's scale
    against the true height, every seed in its own color, the coefficients of ``numbers``
    (:func:`geometry_correlations`) in the titles. Without true geometry (real data): the
    histograms of T's rotation and scale at person centers instead. One figure."""
    import matplotlib.pyplot as plt  # lazy: matplotlib (~0.5 s), only for plots

    units = list(units or sorted(frame["unit"].unique()))
    truth = has_true_geometry(frame)
    fig, axes = plt.subplots(max(len(units), 1), 2, figsize=(9, 2.6 * max(len(units), 1)), squeeze=False)
    if not units:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no adaptive unit", ha="center", va="center")
            ax.axis("off")
    by_unit = numbers.set_index("unit") if numbers is not None and len(numbers) else None
    for (ax_rot, ax_scale), unit in zip(axes, units):
        rows = frame[frame["unit"] == unit]
        for k, (seed, part) in enumerate(rows.groupby("seed", sort=True) if "seed" in rows else [(0, rows)]):
            color = plt.cm.tab10(k % 10)
            if truth:
                ax_rot.scatter(part[TRUTH[0]], part["rotation_deg"], s=4, alpha=0.4, color=color, label=f"seed {seed}")
                ax_scale.scatter(part[TRUTH[1]], part["scale"], s=4, alpha=0.4, color=color)
            else:
                ax_rot.hist(part["rotation_deg"], bins=36, range=(-180, 180), alpha=0.5, color=color, label=f"seed {seed}")
                ax_scale.hist(part["scale"], bins=30, alpha=0.5, color=color)
        if truth:
            n = by_unit.loc[unit] if by_unit is not None and unit in by_unit.index else None
            ax_rot.set(xlabel="true rotation (deg)", ylabel="rotation of T (deg)",
                       title=f"{unit}: circ. corr {n['rotation_circular_corr']:.2f} "
                             f"[{n['rotation_ci_low']:.2f}, {n['rotation_ci_high']:.2f}]" if n is not None else unit)
            ax_scale.set(xscale="log", xlabel="true height (px)", ylabel="sqrt|det T|",
                         title=f"Spearman {n['scale_spearman']:.2f} [{n['scale_ci_low']:.2f}, "
                               f"{n['scale_ci_high']:.2f}]" if n is not None else "")
            ax_scale.xaxis.set_minor_formatter(plt.NullFormatter())  # log-axis minor labels collide
        else:
            ax_rot.set(xlabel="rotation of T at person centers (deg)", ylabel="persons", title=unit)
            ax_scale.set(xlabel="sqrt|det T| at person centers", ylabel="persons")
        ax_rot.title.set_fontsize(9)
        ax_scale.title.set_fontsize(9)
        ax_rot.legend(fontsize=6, markerscale=2)
    fig.tight_layout()
    return fig
