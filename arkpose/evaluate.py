"""COCO / CrowdPose keypoint evaluation and the three qualities of Table 4 (docs/method.md §7).

Reported numbers come from the reference libraries, never from a re-implementation of
the OKS matching: pycocotools ``COCOeval(iouType="keypoints")`` for COCO-layout specs and
xtcocotools ``COCOeval(iouType="keypoints_crowd", sigmas, use_area=False)`` for
CrowdPose (AP easy / medium / hard by crowd index). Their console output is captured.

Qualities (see docs/inference.md):

- ``regression``: the regressed poses at the detected centers (docs/method.md §5.6), as is;
- ``heatmap``: keypoints found on the heatmaps, grouped with the ground-truth poses as
  the cue (:func:`arkpose.decode.heatmap_poses`: each labelled ground-truth joint takes
  the nearest heatmap candidate of its type, whatever the distance; no ground-truth
  position is ever copied into a prediction);
- ``final``: the whole pipeline (absorb, refinement, scoring).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pycocotools.coco
import pycocotools.cocoeval

from arkpose.coco_check import check_detections, check_ground_truth
from arkpose.jsonio import read_json, write_json
from arkpose.spec import KeypointSpec
from arkpose.stats import Matching, matching_from_cocoeval

if TYPE_CHECKING:  # torch: this module evaluates detection files without it
    import torch

    from arkpose.config import Config
    from arkpose.decode import ScoreFn

MATCHING_FILE = "matching.npz"

COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWDPOSE_STATS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")


class EvaluationError(ValueError):
    """Detections or ground truth that the evaluator cannot take."""


def stat_names(spec: KeypointSpec) -> tuple[str, ...]:
    """Names of the stats :func:`evaluate` returns for ``spec``, in the library's order."""
    return CROWDPOSE_STATS if spec.iou_type == "keypoints_crowd" else COCO_STATS


def _api(spec: KeypointSpec):
    """(COCO, COCOeval) classes: xtcocotools for CrowdPose, pycocotools otherwise."""
    if spec.iou_type == "keypoints_crowd":
        # lazy: xtcocotools.coco imports matplotlib (~0.5 s); only CrowdPose needs it
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval

        return COCO, COCOeval
    return pycocotools.coco.COCO, pycocotools.cocoeval.COCOeval


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _read_json(path: str | os.PathLike, what: str) -> Any:
    return read_json(path, what, EvaluationError)


def load_gt(gt: Any) -> dict:
    """Ground-truth json as a dict, from a path, a dict or a (py/xt)cocotools COCO object."""
    if hasattr(gt, "dataset") and hasattr(gt, "getImgIds"):
        gt = gt.dataset
    if isinstance(gt, (str, os.PathLike)):
        gt = _read_json(gt, "ground-truth annotation file")
    if not isinstance(gt, Mapping):
        raise EvaluationError(f"ground truth must be a COCO json object (or its path, or a COCO "
                              f"object), not a {type(gt).__name__}")
    data = dict(gt)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise EvaluationError(f"ground truth has no {key!r} list (not a COCO keypoint file)")
    return data


def _gt_api(data: dict, spec: KeypointSpec, image_ids: list[int] | None, tmp: Path):
    """The evaluator's COCO object for ``data`` restricted to ``image_ids``.

    xtcocotools splits easy/medium/hard by re-reading the ground-truth *file* (and over
    all its images), so CrowdPose ground truth always goes through a (filtered) file.
    """
    COCO, _ = _api(spec)
    if image_ids is not None:
        keep = set(image_ids)
        data = {**data, "images": [im for im in data["images"] if im["id"] in keep],
                "annotations": [a for a in data["annotations"] if a["image_id"] in keep]}
    if spec.iou_type == "keypoints_crowd":
        missing = [im["id"] for im in data["images"] if "crowdIndex" not in im]
        if missing:
            raise EvaluationError(
                f"CrowdPose evaluation needs each image's 'crowdIndex'; image {missing[0]} has none"
            )
        path = tmp / "gt.json"
        path.write_text(json.dumps(data))
        with _quiet():
            return COCO(str(path))
    coco = COCO()
    # COCOeval sets 'ignore' on each ground-truth annotation and changes nothing else: a
    # copy of each annotation dict keeps the caller's data intact (a deep copy took ~0.3 s).
    coco.dataset = {**data, "annotations": [dict(a) for a in data["annotations"]]}
    with _quiet():
        coco.createIndex()
    return coco


def _load_detections(detections: Any) -> list[dict]:
    if isinstance(detections, (str, os.PathLike)):
        detections = _read_json(detections, "detections file")
    if not isinstance(detections, list):
        raise EvaluationError("detections must be a list of COCO result dicts")
    # loadRes sets id, area and bbox on each detection and never changes its lists: a copy
    # of each dict keeps the caller's intact (a deep copy cost ~0.3 s per evaluation).
    return [dict(d) if isinstance(d, dict) else d for d in detections]


def _check_detections(dets: list[dict], known: set, spec: KeypointSpec) -> None:
    k3 = 3 * spec.num_keypoints
    for i, d in enumerate(dets):
        for key in ("image_id", "keypoints", "score"):
            if key not in d:
                raise EvaluationError(f"detection {i} has no {key!r} field")
        if d["image_id"] not in known:
            raise EvaluationError(
                f"detection {i} is for image_id {d['image_id']}, which the evaluated ground "
                "truth lacks"
            )
        if len(d["keypoints"]) != k3:
            raise EvaluationError(
                f"detection {i} has {len(d['keypoints'])} keypoint values; spec "
                f"{spec.name!r} needs {k3} (x, y, score per joint)"
            )
        d.setdefault("category_id", 1)


def _empty_results(gt):
    """A result set with no detection (``loadRes`` cannot take an empty list)."""
    res = type(gt)()
    res.dataset = {"images": list(gt.dataset["images"]), "annotations": [],
                   "categories": copy.deepcopy(gt.dataset["categories"])}
    with _quiet():
        res.createIndex()
    if hasattr(gt, "anno_file") and len(gt.anno_file) == 1:
        gt.anno_file.append(None)  # xtcocotools unpacks (gt file, result file)
    return res


def evaluate(
    gt: Any,
    detections: Any,
    spec: KeypointSpec,
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """All keypoint stats of ``detections`` against ``gt`` (see :func:`evaluate_matching`)."""
    return evaluate_matching(gt, detections, spec, image_ids=image_ids)[0]


def evaluate_matching(
    gt: Any,
    detections: Any,
    spec: KeypointSpec,
    *,
    image_ids: Iterable[int] | None = None,
) -> tuple[dict[str, float], Matching]:
    """All keypoint stats of ``detections`` against ``gt``, and the library's per-image
    matching behind them (:class:`arkpose.stats.Matching`, for the paired bootstrap).

    Args:
        gt: annotation file path, its json dict, or a COCO object.
        detections: list of COCO result dicts (``image_id``, ``keypoints`` 3K, ``score``,
            optional ``category_id``) or a json file of them. Empty: every AP/AR is 0
            where the ground truth has persons (the library's -1 where it has none).
        spec: picks the evaluator (``spec.iou_type``), the OKS sigmas and ``use_area``.
        image_ids: evaluate on these images only (e.g. the first N of a val set).

    Returns:
        (``{name: value}`` in the library's order: COCO ``AP, AP50, AP75, APm, APl, AR,
        AR50, AR75, ARm, ARl``; CrowdPose ``AP, AP50, AP75, AR, AR50, AR75, AP_easy,
        AP_medium, AP_hard``, the matching).
    """
    stats, matching, _ = evaluate_matchings(gt, detections, spec, {}, image_ids=image_ids)
    return stats, matching


def evaluate_matchings(
    gt: Any,
    detections: Any,
    spec: KeypointSpec,
    ignore: Mapping[str, set[int]],
    *,
    image_ids: Iterable[int] | None = None,
) -> tuple[dict[str, float], Matching, dict[str, Matching]]:
    """:func:`evaluate_matching` and :func:`matchings_ignoring` from one COCOeval (one OKS
    pass): ``(stats, matching, {name: matching with those persons ignored})``."""
    with _evaluated(gt, detections, spec, image_ids) as ev:
        # Before summarize(): xtcocotools' CrowdPose summary re-evaluates per crowd level
        # (and leaves its parameters on the last level).
        matching = matching_from_cocoeval(ev)
        by_name = _rematch_ignoring(ev, ignore)
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(stat_names(spec), ev.stats)}, matching, by_name


def matchings_ignoring(
    gt: Any,
    detections: Any,
    spec: KeypointSpec,
    ignore: Mapping[str, set[int]],
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[str, Matching]:
    """For each ``name: annotation ids``, the matching of :func:`evaluate_matching` with those
    persons ignored as COCOeval ignores an unlabelled one (a detection that matches one is
    neither a true nor a false positive; arkpose.strata). The OKS of every (detection, person)
    pair is computed once and each set only re-runs the greedy matching, so the sets cost
    little more than one evaluation; equal to evaluating a copy of ``gt`` with those persons'
    ``num_keypoints`` set to 0 (tests/test_strata.py)."""
    with _evaluated(gt, detections, spec, image_ids) as ev:
        return _rematch_ignoring(ev, ignore)


def _rematch_ignoring(ev, ignore: Mapping[str, set[int]]) -> dict[str, Matching]:
    """Per set of ``ignore``, the matching of the evaluated ``ev`` with those persons
    ignored: the OKS stays, only the greedy matching runs again. ``ev`` is left as it was
    found."""
    out, found = {}, ev.evalImgs
    p = ev.params
    cats = p.catIds if p.useCats else [-1]
    persons = [g for gts in ev._gts.values() for g in gts]
    always = [g["ignore"] for g in persons]  # crowd or no joint: ignored in every set
    for name, ids in ignore.items():
        for g, base in zip(persons, always):
            g["ignore"] = base or g["id"] in ids
        ev.evalImgs = [ev.evaluateImg(i, c, p.areaRng[0], p.maxDets[-1])
                       for c in cats for i in p.imgIds]
        out[name] = matching_from_cocoeval(ev)
    for g, base in zip(persons, always):
        g["ignore"] = base
    ev.evalImgs = found
    return out


@contextlib.contextmanager
def _evaluated(gt: Any, detections: Any, spec: KeypointSpec, image_ids: Iterable[int] | None):
    """The library's COCOeval of ``detections`` on ``gt`` after ``evaluate()`` (arguments as
    :func:`evaluate_matching`), its output silenced."""
    _, COCOeval = _api(spec)
    data = load_gt(gt)
    # COCOeval reads these of every annotation (area for the area ranges when use_area).
    needed = ("bbox", "num_keypoints", "category_id", "iscrowd") + (("area",) if spec.use_area else ())
    check_ground_truth(data, spec.num_keypoints, "ground truth", EvaluationError, needed)
    known = {im["id"] for im in data["images"]}
    ids = None
    if image_ids is not None:
        ids = sorted({int(i) for i in image_ids})
        unknown = set(ids) - known
        if unknown:
            raise EvaluationError(f"image ids {sorted(unknown)[:5]} are not in the ground truth")
    dets = _load_detections(detections)
    check_detections(dets, spec.num_keypoints, "detections", EvaluationError)
    _check_detections(dets, set(ids) if ids is not None else known, spec)
    sigmas = np.asarray(spec.sigmas, dtype=np.float64)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        coco_gt = _gt_api(data, spec, ids, Path(tmp))
        dt = coco_gt.loadRes(dets) if dets else _empty_results(coco_gt)
        if spec.iou_type == "keypoints_crowd":
            ev = COCOeval(coco_gt, dt, "keypoints_crowd", sigmas, use_area=spec.use_area)
        else:
            ev = COCOeval(coco_gt, dt, "keypoints")
            ev.params.kpt_oks_sigmas = sigmas
        ev.evaluate()
        yield ev


def stats_frame(results: Mapping[str, Mapping[str, float]]):
    """``{quality: stats}`` -> a pandas DataFrame, one row per quality."""
    return pd.DataFrame.from_dict({q: dict(s) for q, s in results.items()}, orient="index")


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table of :func:`stats_frame` (AP etc. as fractions, 4 decimals)."""
    return stats_frame(results).to_string(float_format=lambda v: f"{v:.4f}")


def evaluate_detections(
    gt: Any,
    detections: Mapping[str, list[dict]],
    spec: KeypointSpec,
    *,
    image_ids: Sequence[int] | None = None,
    out_dir: str | os.PathLike | None = None,
    extra: Mapping[str, Any] | None = None,
    strata: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate ``{quality: detections}``; with ``out_dir`` write
    ``out_dir/<quality>/detections.json``, ``matching.npz`` (:class:`arkpose.stats.Matching`)
    and ``metrics.json`` (stats plus ``extra``; written last, so its presence means done).
    ``strata`` (needs ``out_dir`` and ``gt`` as a file): also each stratum's matching
    (arkpose.strata), from the same COCOeval, where :func:`arkpose.strata.cached_strata_matchings`
    finds it."""
    from arkpose import strata as strata_lib  # lazy: arkpose.strata imports this module

    if strata and (out_dir is None or not isinstance(gt, (str, os.PathLike))):
        raise ValueError("strata=True needs out_dir and the ground truth as a file path")
    gt_path = gt
    gt = load_gt(gt)
    ignore, persons = strata_lib.ignore_sets(gt, image_ids) if strata else ({}, {})
    results = {}
    for quality, dets in detections.items():
        stats, matching, by_stratum = evaluate_matchings(gt, dets, spec, ignore, image_ids=image_ids)
        results[quality] = stats
        if out_dir is not None:
            d = Path(out_dir) / quality
            write_json(d / "detections.json", dets)
            matching.save(d / MATCHING_FILE)
            if strata:
                strata_lib.save_strata_matchings(d, Path(gt_path), spec, matching.image_ids,
                                                 by_stratum, persons)
            meta = {"quality": quality, "num_images": len(image_ids) if image_ids is not None
                    else len(gt["images"]), "num_detections": len(dets), **(extra or {})}
            write_json(d / "metrics.json", {**stats, "meta": meta})
    return results


def evaluate_model(
    model: torch.nn.Module,
    cfg: Config,
    *,
    split: str = "val",
    qualities: Sequence[str] = ("final",),
    max_images: int = 0,
    out_dir: str | os.PathLike | None = None,
    score_fn: ScoreFn | None = None,
    progress: bool = True,
    strata: bool = False,
) -> dict[str, dict[str, float]]:
    """Run ``model`` over ``cfg``'s ``split`` and evaluate each quality.

    The decoding is ``cfg.eval.decode``, the resize ``cfg.eval.test_size``.
    ``score_fn`` (learned scoring) ranks the final poses. ``max_images > 0`` evaluates
    the first N images only (on those images' ground truth). Returns
    ``{quality: {stat: value}}`` (see :func:`evaluate`); with ``out_dir`` writes
    ``out_dir/<quality>/detections.json`` and ``metrics.json`` (and with ``strata`` each
    stratum's matching, :func:`evaluate_detections`).
    """
    # lazy: torch (~1.3 s); evaluating a detections file needs no model
    from arkpose import inference
    from arkpose.data import build_dataset, split_paths

    ann_file, _ = split_paths(cfg, split)
    dataset = build_dataset(cfg, split)
    spec = dataset.spec
    settings = cfg.eval.decode
    dets, ids = inference.predict_dataset(
        model, dataset, spec, settings, test_size=cfg.eval.test_size, qualities=qualities,
        max_images=max_images, progress=progress, score_fn=score_fn,
    )
    extra = {"split": split, "annotations": str(ann_file), "flip": settings.flip,
             "scales": list(settings.scales), "test_size": cfg.eval.test_size,
             "learned_scoring": score_fn is not None,
             "oks_sigma_scale": cfg.data.oks_sigma_scale}
    return evaluate_detections(ann_file, dets, spec, image_ids=ids, out_dir=out_dir, extra=extra,
                               strata=strata)
