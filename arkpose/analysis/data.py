"""Ground truth and detections as flat numpy arrays, laid out the way coco-analyze sees them.

coco-analyze (error_analysis.md §2) works on ``COCO`` objects: images in sorted id order,
each image's annotations in json order, detections kept to the 20 best per image
(run_analysis.py) and numbered 1..N in that order by ``loadRes``. Every later step indexes
these arrays, so this module fixes the orders once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arkpose.coco_check import check_detections, check_ground_truth
from arkpose.jsonio import read_json
from arkpose.spec import COCO, KeypointSpec

TOP_DETS = 20  # run_analysis.py keeps the 20 best detections per image before anything else


class AnalysisInputError(ValueError):
    """Ground truth or detections the analysis cannot read (names the field and the fix)."""


@dataclass
class AnalysisData:
    """Flat arrays for G ground-truth annotations and D detections over I images.

    Attributes:
        spec: keypoint layout (K keypoints).
        img_ids: (I,) image ids, sorted (COCOeval's ``params.imgIds``).
        gt_ids, gt_img, gt_kpts (G, K, 3), gt_scale (G,): the area OKS divides by
            (``area``, or 0.53 * bbox w * h when ``spec.use_area`` is False, as xtcocotools),
            gt_bbox (G, 4), gt_crowd (G,), gt_numkpts (G,) (the ``num_keypoints`` field),
            gt_ignore (G,): COCOeval's own ignore (crowd or no keypoints).
        dt_ids (D,) 1..D, dt_img, dt_kpts (D, K, 3), dt_score (D,), dt_area (D,):
            keypoint-bbox area (or bbox w*h when the results carry ``bbox``, as ``loadRes``).
        gidx (I, Gm): flat gt index of each image's annotations in json order, -1 padding.
        didx (I, Dm): flat dt index of each image's detections in input order, -1 padding.
        pair_d, pair_g (P,): every (detection, annotation) pair of the same image.
        images: the GT ``images`` entries by id (width/height/crowdIndex for reports).
    """

    spec: KeypointSpec
    img_ids: np.ndarray
    gt_ids: np.ndarray
    gt_img: np.ndarray
    gt_kpts: np.ndarray
    gt_scale: np.ndarray
    gt_bbox: np.ndarray
    gt_crowd: np.ndarray
    gt_numkpts: np.ndarray
    gt_ignore: np.ndarray
    dt_ids: np.ndarray
    dt_img: np.ndarray
    dt_kpts: np.ndarray
    dt_score: np.ndarray
    dt_area: np.ndarray
    gidx: np.ndarray
    didx: np.ndarray
    pair_d: np.ndarray
    pair_g: np.ndarray
    images: dict

    @property
    def num_images(self) -> int:
        return len(self.img_ids)

    @property
    def team_max_dets(self) -> int:
        """Most detections in one image (coco-analyze's ``teamMaxDets``)."""
        return int(self.didx.shape[1])


def _load_json(obj, what: str):
    if isinstance(obj, (str, Path)):
        return read_json(obj, f"{what} file", AnalysisInputError)
    return obj


def _padded_index(owner: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows, max count) flat indices grouped by ``owner`` row, stable order, -1 padding."""
    counts = np.bincount(owner, minlength=n_rows) if len(owner) else np.zeros(n_rows, int)
    width = int(counts.max()) if n_rows and len(owner) else 0
    out = -np.ones((n_rows, width), dtype=np.int64)
    if len(owner):
        order = np.argsort(owner, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(owner)) - starts[owner[order]]
        out[owner[order], slot] = order
    return out


def _kpts_array(entries: list, k: int, what: str) -> np.ndarray:
    if not entries:
        return np.zeros((0, k, 3))
    try:
        arr = np.array([e["keypoints"] for e in entries], dtype=np.float64)
    except KeyError:
        raise AnalysisInputError(f"{what}: an entry has no 'keypoints' field") from None
    except ValueError:
        raise AnalysisInputError(f"{what}: keypoint lists have different lengths") from None
    if arr.ndim != 2 or arr.shape[1] != 3 * k:
        raise AnalysisInputError(
            f"{what}: keypoints have {arr.shape[-1] if arr.ndim == 2 else '?'} values, the spec "
            f"expects 3 * {k}; pass the matching spec (--spec coco|crowdpose)"
        )
    return arr.reshape(len(entries), k, 3)


def load(gt, dt, spec: KeypointSpec = COCO, top_dets: int | None = TOP_DETS) -> AnalysisData:
    """Read a COCO keypoint GT (path or dict) and a results list (path or list).

    Detections of images missing from the GT are dropped; each image keeps its ``top_dets``
    best (stable sort by score, images in order of first appearance, as run_analysis.py).
    """
    gt_name = f"ground truth {gt}" if isinstance(gt, (str, Path)) else "ground truth"
    dt_name = f"detections {dt}" if isinstance(dt, (str, Path)) else "detections"
    gt = _load_json(gt, "ground truth")
    dt = _load_json(dt, "detections")
    if isinstance(dt, dict) and "annotations" in dt:
        dt = dt["annotations"]
    k = spec.num_keypoints
    check_ground_truth(gt, k, gt_name, AnalysisInputError)
    check_detections(dt, k, dt_name, AnalysisInputError)

    images = {im["id"]: im for im in gt["images"]}
    img_ids = np.array(sorted(images), dtype=np.int64)
    row_of = {int(i): r for r, i in enumerate(img_ids)}
    cats = sorted(c["id"] for c in gt.get("categories", []))
    cat = cats[0] if cats else None

    anns = [a for a in gt["annotations"] if a.get("image_id") in row_of
            and (cat is None or a.get("category_id", cat) == cat)]
    gt_kpts = _kpts_array(anns, k, "ground truth")
    gt_bbox = np.array([a.get("bbox", [0, 0, 0, 0]) for a in anns], dtype=np.float64).reshape(-1, 4)
    if spec.use_area:
        missing = [a.get("id") for a in anns if "area" not in a]
        if missing:
            raise AnalysisInputError(
                f"ground truth annotation {missing[0]} has no 'area'; COCO-style OKS needs it "
                "(use a spec with use_area=False, e.g. crowdpose, for area-less data)"
            )
        gt_scale = np.array([a["area"] for a in anns], dtype=np.float64)
    else:
        gt_scale = gt_bbox[:, 2] * gt_bbox[:, 3] * 0.53
    gt_crowd = np.array([int(a.get("iscrowd", 0)) for a in anns], dtype=np.int64)
    numk = [a.get("num_keypoints") for a in anns]
    gt_numkpts = np.array(
        [n if n is not None else int((gt_kpts[i, :, 2] > 0).sum()) for i, n in enumerate(numk)],
        dtype=np.int64,
    )
    gt_img = np.array([row_of[a["image_id"]] for a in anns], dtype=np.int64)
    gt_ids = np.array([a["id"] for a in anns], dtype=np.int64)

    # run_analysis.py: group by image (first appearance), best `top_dets` of each, in order.
    by_img: dict = {}
    for d in dt:
        if "image_id" not in d or "score" not in d:
            raise AnalysisInputError("every detection needs 'image_id', 'score' and 'keypoints'")
        if cat is not None and d.get("category_id", cat) != cat:
            continue
        by_img.setdefault(d["image_id"], []).append(d)
    if by_img and not set(by_img) & set(row_of):
        raise AnalysisInputError(
            f"{dt_name}: none of the image ids of its {len(dt)} detections (e.g. "
            f"{sorted(by_img)[:3]}) is an image of the {gt_name} (ids e.g. "
            f"{img_ids[:3].tolist()}); pass the detections made on these ground-truth images")
    kept = []
    for img, dets in by_img.items():
        if img in row_of:
            ranked = sorted(dets, key=lambda e: -e["score"])
            kept.extend(ranked[:top_dets] if top_dets else ranked)
    dt_kpts = _kpts_array(kept, k, "detections")
    dt_score = np.array([d["score"] for d in kept], dtype=np.float64)
    if kept and "bbox" in kept[0] and kept[0]["bbox"] != []:
        # loadRes takes the bbox branch when the first result has a bbox: area = w * h.
        if any(len(d.get("bbox") or ()) != 4 for d in kept):
            raise AnalysisInputError("the first detection has a 'bbox' but others do not; give "
                                     "every detection a bbox [x, y, w, h] or none at all")
        dt_area = np.array([d["bbox"][2] * d["bbox"][3] for d in kept], dtype=np.float64)
    elif kept:
        x, y = dt_kpts[:, :, 0], dt_kpts[:, :, 1]
        dt_area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
    else:
        dt_area = np.zeros(0)
    dt_img = np.array([row_of[d["image_id"]] for d in kept], dtype=np.int64)

    n_img = len(img_ids)
    gidx = _padded_index(gt_img, n_img)
    didx = _padded_index(dt_img, n_img)
    gcount = np.bincount(gt_img, minlength=n_img) if len(gt_img) else np.zeros(n_img, int)
    pair_d = np.repeat(np.arange(len(kept)), gcount[dt_img]) if len(kept) else np.zeros(0, int)
    if len(pair_d):
        per = gidx[dt_img[pair_d]]
        slot = np.arange(len(pair_d)) - np.repeat(np.cumsum(gcount[dt_img]) - gcount[dt_img],
                                                   gcount[dt_img])
        pair_g = per[np.arange(len(pair_d)), slot]
    else:
        pair_g = np.zeros(0, dtype=np.int64)

    return AnalysisData(
        spec=spec, img_ids=img_ids, gt_ids=gt_ids, gt_img=gt_img, gt_kpts=gt_kpts,
        gt_scale=gt_scale, gt_bbox=gt_bbox, gt_crowd=gt_crowd, gt_numkpts=gt_numkpts,
        gt_ignore=(gt_crowd > 0) | (gt_numkpts == 0),
        dt_ids=np.arange(1, len(kept) + 1, dtype=np.int64), dt_img=dt_img, dt_kpts=dt_kpts,
        dt_score=dt_score, dt_area=dt_area, gidx=gidx, didx=didx, pair_d=pair_d,
        pair_g=pair_g, images=images,
    )
