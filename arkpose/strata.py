"""Table 4 on strata of the validation persons: which component helps which persons.

Each counted validation person (not crowd, at least one labelled joint) falls on one side of
each of three pairs (:data:`PAIRS`): upright / rotated, small / large, isolated /
overlapping. A stratum's AP is COCOeval's AP with the persons outside the stratum marked
ignored (docs/ablations.md, "Strata"): a detection that matches one of them is neither a
true nor a false positive, and they do not count as persons to find. Detections that match
no person stay false positives in every stratum (nothing says which stratum a background
detection belongs to), so the two APs of a pair do not average to the overall AP.

The evaluator stays pycocotools / xtcocotools (:func:`arkpose.evaluate.evaluate_matching`);
each stratum gives a :class:`arkpose.stats.Matching` on the same images, so the paired
bootstrap of :func:`arkpose.stats.ablation_bootstrap` gives each component's ΔAP per stratum.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from arkpose import stats
from arkpose.data.synth_card import OVERLAP_IOU, ROTATED_DEG, max_box_iou
from arkpose.evaluate import MATCHING_FILE, load_gt, matchings_ignoring
from arkpose.provenance import digest, file_sha256
from arkpose.spec import KeypointSpec

# The definitions. Rotated (|true in-plane rotation| > ROTATED_DEG) and overlapping (box IoU
# >= OVERLAP_IOU with another non-crowd person of the image) are the benchmark's own
# (arkpose/data/synth_card.py), so the shares the dataset card prints are these strata.
# small / large: sqrt(area) below / at or above the median of the evaluated persons. The
# area is the OKS scale, so "small" means what COCOeval's tolerance sees as small; it does
# not shrink when a person lies down, as the box height would.
STRATA_VERSION = 1  # bump when a definition changes (cached strata matchings are keyed by it)

PAIRS = (("upright", "rotated"), ("small", "large"), ("isolated", "overlapping"))
STRATA = tuple(s for pair in PAIRS for s in pair)
PAIR_OF = {s: f"{a} / {b}" for a, b in PAIRS for s in (a, b)}
STRATA_KEY_FILE = "strata.json"
COLUMNS = ["component", "vs", "quality", "pair", "stratum", "delta", "ci_low", "ci_high",
           "p_improve", "verdict", "persons", "seeds"]  # strata.csv, summary.json's "strata"


def counted(ann: Mapping) -> bool:
    """A person COCOeval counts: not a crowd region and at least one labelled joint."""
    return not ann.get("iscrowd", 0) and ann.get("num_keypoints", 0) > 0


def person_table(data: Mapping, image_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """One line per counted person of ``data`` (a COCO dict) in ``image_ids`` (all images
    when None): ``ann_id, image_id, rotation_deg`` (SynthPose's true rotation, NaN where
    absent), ``size`` (sqrt(area)), ``max_iou`` (largest box IoU with another non-crowd
    person of its image, counted or not)."""
    keep = None if image_ids is None else {int(i) for i in image_ids}
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0) and (keep is None or a["image_id"] in keep):
            by_image.setdefault(a["image_id"], []).append(a)
    rows = []
    for image_id, anns in by_image.items():
        best = max_box_iou(np.array([a["bbox"] for a in anns], float))
        for i, a in enumerate(anns):
            if counted(a):
                rows.append({"ann_id": a["id"], "image_id": image_id,
                             "rotation_deg": float(a.get("synth", {}).get("rotation_deg", np.nan)),
                             "size": float(np.sqrt(max(a.get("area", 0.0), 0.0))),
                             "max_iou": float(best[i])})
    return pd.DataFrame(rows, columns=["ann_id", "image_id", "rotation_deg", "size", "max_iou"])


def assign_strata(persons: pd.DataFrame) -> dict[str, set]:
    """``{stratum: annotation ids}`` from :func:`person_table`. Each pair splits the persons
    exactly; the rotation pair is left out unless every person has a true rotation (real
    data has none)."""
    ids = persons["ann_id"].to_numpy()
    sides = {}
    if len(persons) and persons["rotation_deg"].notna().all():
        sides["rotated"] = persons["rotation_deg"].abs().to_numpy() > ROTATED_DEG
    if len(persons):
        sides["large"] = persons["size"].to_numpy() >= np.median(persons["size"])
    sides["overlapping"] = persons["max_iou"].to_numpy() >= OVERLAP_IOU
    out = {}
    for first, second in PAIRS:
        if second in sides:
            out[first] = set(ids[~sides[second]].tolist())
            out[second] = set(ids[sides[second]].tolist())
    return out


def ignore_outside(data: Mapping, keep: set) -> dict:
    """A copy of the COCO dict ``data`` where counted persons not in ``keep`` (annotation
    ids) are marked ignored the way COCOeval marks an unlabelled person: ``num_keypoints``
    0 (both pycocotools and xtcocotools' CrowdPose evaluation set ``ignore`` from it). Their
    keypoints stay, so a detection still matches them by OKS and is then ignored."""
    out = dict(data)
    out["annotations"] = [
        {**a, "num_keypoints": 0} if counted(a) and a["id"] not in keep else a
        for a in data["annotations"]
    ]
    return out


def ignore_sets(data: Mapping, image_ids: Sequence[int] | None
                ) -> tuple[dict[str, set], dict[str, int]]:
    """Per stratum of the counted persons of ``data`` (a COCO dict) on ``image_ids`` (all
    images when None): the annotation ids to ignore (everyone outside it), and its size."""
    members = assign_strata(person_table(data, image_ids))
    everyone = {a["id"] for a in data["annotations"] if counted(a)}
    return ({s: everyone - keep for s, keep in members.items()},
            {s: len(keep) for s, keep in members.items()})


def strata_matchings(gt: Any, detections: list[dict], spec: KeypointSpec,
                     image_ids: Sequence[int]) -> tuple[dict[str, stats.Matching], dict[str, int]]:
    """Every stratum's matching of ``detections`` on ``image_ids``, and its person count."""
    data = load_gt(gt)
    ignore, persons = ignore_sets(data, image_ids)
    return matchings_ignoring(data, detections, spec, ignore, image_ids=image_ids), persons


def _strata_key(quality_dir: Path, gt_path: Path, spec: KeypointSpec, image_ids: list[int]) -> str:
    """Everything a folder's strata matchings depend on: the detections' and ground truth's
    sha256, the images, the spec's evaluator and sigmas and the definitions."""
    return digest({
        "detections": hashlib.sha256((quality_dir / "detections.json").read_bytes()).hexdigest(),
        "ground_truth": file_sha256(gt_path), "image_ids": image_ids,
        "iou_type": spec.iou_type, "sigmas": list(spec.sigmas), "use_area": spec.use_area,
        "definitions": [STRATA_VERSION, ROTATED_DEG, OVERLAP_IOU, "sqrt(area) median"],
    })


def save_strata_matchings(quality_dir: Path, gt_path: Path, spec: KeypointSpec,
                          image_ids: Sequence[int], matchings: Mapping[str, stats.Matching],
                          persons: Mapping[str, int]) -> None:
    """Keep an evaluation folder's strata matchings (``matching_<stratum>.npz``, on
    ``image_ids``, the evaluated images) with ``strata.json``, their key, written last: it
    vouches for the files. The folder's ``detections.json`` must be written already."""
    quality_dir = Path(quality_dir)
    image_ids = [int(i) for i in image_ids]
    for stratum, m in matchings.items():
        m.save(quality_dir / f"matching_{stratum}.npz")
    key_file = quality_dir / STRATA_KEY_FILE
    tmp = key_file.with_name(key_file.name + ".tmp")
    tmp.write_text(json.dumps({"key": _strata_key(quality_dir, gt_path, spec, image_ids),
                               "persons": dict(persons)}, indent=2))
    tmp.replace(key_file)


def cached_strata_matchings(quality_dir: Path, gt_path: Path,
                            spec: KeypointSpec) -> tuple[dict[str, stats.Matching], dict[str, int]]:
    """:func:`strata_matchings` of an evaluation folder (``detections.json`` on the images
    of its ``matching.npz``), kept there by :func:`save_strata_matchings` (an ablation's
    evaluation writes them from its own COCOeval). Recomputed when the key
    (:func:`_strata_key`) changes."""
    quality_dir = Path(quality_dir)
    image_ids = [int(i) for i in stats.Matching.load(quality_dir / MATCHING_FILE).image_ids]
    key_file = quality_dir / STRATA_KEY_FILE
    if key_file.is_file():
        saved = json.loads(key_file.read_text())
        files = {s: quality_dir / f"matching_{s}.npz" for s in saved["persons"]}
        if (saved.get("key") == _strata_key(quality_dir, gt_path, spec, image_ids)
                and all(f.is_file() for f in files.values())):
            return {s: stats.Matching.load(f) for s, f in files.items()}, saved["persons"]
    detections = json.loads((quality_dir / "detections.json").read_text())
    matchings, persons = strata_matchings(gt_path, detections, spec, image_ids)
    save_strata_matchings(quality_dir, gt_path, spec, image_ids, matchings, persons)
    return matchings, persons


def strata_deltas(eval_dirs: Mapping[tuple[str, int, str], Path], rows: Sequence[str],
                  seeds: Sequence[int], qualities: Sequence[str], gt_path: Path,
                  spec: KeypointSpec, *, n_boot: int = 1000, threads: int = 1) -> pd.DataFrame:
    """Each component's Δ to the row above, per quality and stratum, with the paired
    bootstrap's interval (:func:`arkpose.stats.ablation_bootstrap`). One line per
    (component, quality, stratum): ``component, vs, quality, pair, stratum, delta, ci_low,
    ci_high, p_improve, verdict, persons, seeds`` (fractions of AP).

    eval_dirs: {(row, seed, quality): evaluation folder of that quality}; a folder two rows
    share (a reused evaluation) is read and bootstrapped once."""
    records = []
    for quality in qualities:
        folders = {(r, s): eval_dirs[(r, s, quality)] for r in rows for s in seeds}
        loaded = {f: cached_strata_matchings(f, gt_path, spec) for f in dict.fromkeys(folders.values())}
        found = {key: loaded[f] for key, f in folders.items()}
        persons = found[(rows[0], seeds[0])][1]
        for stratum in (s for s in STRATA if s in persons):
            matchings = {key: m[stratum] for key, (m, _) in found.items()}
            result = stats.ablation_bootstrap(matchings, rows, seeds, n_boot=n_boot, threads=threads)
            for d in result.deltas.to_dict(orient="records"):
                records.append({"component": d["row"], "vs": d["vs"], "quality": quality,
                                "pair": PAIR_OF[stratum], "stratum": stratum, "delta": d["delta"],
                                "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                                "p_improve": d["p_improve"], "verdict": d["verdict"],
                                "persons": persons[stratum], "seeds": len(seeds)})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def strata_display(strata: pd.DataFrame) -> pd.DataFrame:
    """:func:`strata_deltas` as text cells in AP points: one line per (component, quality),
    one column per stratum ("Δ [95% CI]"), the person count in the column name."""
    if strata.empty:  # a summary written before strata existed
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["component", "quality"]))
    cells = strata.assign(text=[stats.format_interval(100 * d, 100 * lo, 100 * hi) for d, lo, hi
                                in strata[["delta", "ci_low", "ci_high"]].to_numpy()])
    counts = strata.drop_duplicates("stratum").set_index("stratum")["persons"]
    table = cells.pivot(index=["component", "quality"], columns="stratum", values="text")
    order = [s for s in STRATA if s in table.columns]
    table = table[order].rename(columns={s: f"{s} ({counts[s]})" for s in order})
    components = list(dict.fromkeys(strata["component"]))
    qualities = list(dict.fromkeys(strata["quality"]))
    return table.reindex(pd.MultiIndex.from_product([components, qualities],
                                                    names=["component", "quality"]))


def strata_plot(strata: pd.DataFrame, title: str = ""):
    """Forest plot per stratum pair (columns) and quality (rows): each component's ΔAP
    (points) with its 95% CI on both strata of the pair, side by side. ``strata``:
    :func:`strata_deltas`. A summary without strata gives one panel saying so."""
    import matplotlib.pyplot as plt  # lazy: matplotlib (~0.5 s), only for the plot

    if strata.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no strata in this run's summary", ha="center", va="center")
        ax.axis("off")
        return fig
    pairs = list(dict.fromkeys(strata["pair"]))
    qualities = list(dict.fromkeys(strata["quality"]))
    components = list(dict.fromkeys(strata["component"]))
    y = np.arange(len(components))[::-1].astype(float)
    fig, axes = plt.subplots(len(qualities), len(pairs), squeeze=False, sharey=True,
                             figsize=(4 * len(pairs), (0.5 * len(components) + 1.2) * len(qualities)))
    for (i, quality), (j, pair) in ((a, b) for a in enumerate(qualities) for b in enumerate(pairs)):
        ax = axes[i, j]
        for k, stratum in enumerate(pair.split(" / ")):
            d = strata[(strata["quality"] == quality) & (strata["stratum"] == stratum)]
            d = d.set_index("component").reindex(components)
            mean, low, high = (100 * d[c].to_numpy(float) for c in ("delta", "ci_low", "ci_high"))
            known = ~np.isnan(low)
            yy = y + (0.15 if k == 0 else -0.15)
            color = ("#4c72b0", "#dd8452")[k]
            ax.errorbar(mean[known], yy[known], xerr=[mean[known] - low[known], high[known] - mean[known]],
                        fmt="o", color=color, capsize=3, label=f"{stratum} ({int(d['persons'].max())})")
            ax.plot(mean[~known], yy[~known], "o", mfc="white", color=color)
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_yticks(y, components)
        ax.set_title(f"{quality}: {pair}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        if i == len(qualities) - 1:
            ax.set_xlabel("ΔAP vs the row above (points, 95% CI)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
