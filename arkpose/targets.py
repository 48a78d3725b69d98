"""Training targets (docs/method.md §2): heatmaps, center, tradeoff and ignore masks, offsets.

:func:`make_targets` turns the persons of one training sample, already in input-image
pixels (after augmentation), into the dense maps the loss reads. Everything is computed at
the output grid (stride ``image_size / output_size``, 4 by default): a keypoint at input
coordinate x sits at grid coordinate ``x * output_size / image_size`` (grid pixel centres
at integers, docs/interfaces.md).

Offset convention (arkpose): ``offset = keypoint - grid position`` in grid pixels, so a
prediction decodes as ``keypoint = position + offset``; channels ``[x0, y0, x1, y1, ...]``
in spec order. The official code stores the negation.

The functions are pure numpy/torch: no file I/O, no config objects. A loop over persons
remains (each person touches only a small window); nothing loops over pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from arkpose.spec import KeypointSpec

OFFSET_RADIUS = 4  # the 8x8 square range(int(cx) - 4, int(cx) + 4) (docs/method.md §2)
TRADEOFF_MASKS = ("union", "per_keypoint")
OFFSET_NORMALISERS = ("official", "paper")


class TargetError(ValueError):
    """Annotations or options that :func:`make_targets` cannot turn into targets."""


# ---------------------------------------------------------------------------------------
# Inputs


def _size(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``int`` or ``(height, width)`` -> ``(height, width)``."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if len(value) != 2:
        raise TargetError(f"{name} must be an int or (height, width), got {value!r}")
    return int(value[0]), int(value[1])


def persons_from_annotations(
    annotations: Sequence[Mapping[str, Any]] | Mapping[str, Any], num_keypoints: int
) -> dict[str, np.ndarray | list]:
    """COCO-style dicts (or a raw sample dict of arrays) -> arrays.

    Accepts either a list of annotation dicts (``keypoints`` flat ``3K`` list or ``(K, 3)``,
    ``bbox`` xywh, optional ``area``, ``iscrowd``, ``num_keypoints``, ``segmentation``) or one
    mapping holding ``keypoints (P, K, 3)``, ``bboxes (P, 4)`` and optionally ``areas (P,)``,
    ``iscrowd (P,)``, ``num_keypoints (P,)`` (the layout of a dataset sample).

    Returns ``keypoints (P, K, 3)`` float64, ``bboxes (P, 4)``, ``areas (P,)``,
    ``iscrowd (P,)`` bool, ``num_keypoints (P,)`` int and ``segmentations`` (list, None where
    absent). A missing area is the bbox area; a missing num_keypoints counts ``v > 0``.
    """
    k = num_keypoints
    if isinstance(annotations, Mapping):
        kps = np.asarray(annotations["keypoints"], dtype=np.float64).reshape(-1, k, 3)
        p = len(kps)
        bboxes = np.asarray(annotations.get("bboxes", np.zeros((p, 4))), np.float64).reshape(p, 4)
        areas = annotations.get("areas")
        iscrowd = annotations.get("iscrowd")
        nkp = annotations.get("num_keypoints")
        segs = list(annotations.get("segmentations", [None] * p))
        areas = bboxes[:, 2] * bboxes[:, 3] if areas is None else np.asarray(areas, np.float64)
        iscrowd = np.zeros(p, bool) if iscrowd is None else np.asarray(iscrowd).astype(bool)
        nkp = (kps[..., 2] > 0).sum(1) if nkp is None else np.asarray(nkp, np.int64)
        return {"keypoints": kps, "bboxes": bboxes, "areas": areas.reshape(p),
                "iscrowd": iscrowd, "num_keypoints": nkp, "segmentations": segs}

    p = len(annotations)
    kps = np.zeros((p, k, 3))
    bboxes = np.zeros((p, 4))
    areas = np.zeros(p)
    iscrowd = np.zeros(p, bool)
    nkp = np.zeros(p, np.int64)
    segs: list = []
    for i, ann in enumerate(annotations):
        raw = np.asarray(ann.get("keypoints", np.zeros(3 * k)), dtype=np.float64)
        if raw.size != 3 * k:
            raise TargetError(
                f"annotation {ann.get('id', i)}: {raw.size} keypoint values, expected {3 * k} "
                f"(K={k} x (x, y, v))"
            )
        kps[i] = raw.reshape(k, 3)
        if "bbox" in ann:
            bboxes[i] = np.asarray(ann["bbox"], np.float64)
        areas[i] = ann["area"] if "area" in ann else bboxes[i, 2] * bboxes[i, 3]
        iscrowd[i] = bool(ann.get("iscrowd", 0))
        nkp[i] = ann["num_keypoints"] if "num_keypoints" in ann else int((kps[i, :, 2] > 0).sum())
        segs.append(ann.get("segmentation"))
    return {"keypoints": kps, "bboxes": bboxes, "areas": areas, "iscrowd": iscrowd,
            "num_keypoints": nkp, "segmentations": segs}


def person_centers(keypoints: np.ndarray, bboxes: np.ndarray) -> np.ndarray:
    """Centers ``(P, 2)``: mean of the labelled (v > 0) keypoints, bbox center if none.

    keypoints: ``(P, K, 3)``; bboxes: ``(P, 4)`` xywh, same pixels as the keypoints.
    """
    vis = keypoints[..., 2] > 0
    n = vis.sum(1)
    mean = (keypoints[..., :2] * vis[..., None]).sum(1) / np.maximum(n, 1)[:, None]
    box = bboxes[:, :2] + bboxes[:, 2:4] / 2
    return np.where((n > 0)[:, None], mean, box)


# ---------------------------------------------------------------------------------------
# Gaussians


def _windows(
    points: np.ndarray, sigma: float, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable windowed Gaussians of the official generator (DEKR's HeatmapGenerator).

    points: ``(N, 3)`` grid x, y, flag; drawn when flag > 0 and the float position lies in
    the map (``0 <= x < width``, ``0 <= y < height``). The window is
    ``[floor(x - 3σ - 1), ceil(x + 3σ + 2))`` around the float x (likewise in y), clipped to
    the map, and the value inside it is ``exp(-((u - x)² + (v - y)²) / 2σ²)`` with u, v
    integer pixel centres.

    Returns ``gx (N, W)``, ``gy (N, H)`` (zero outside each window; the Gaussian is
    ``gy[:, :, None] * gx[:, None, :]``) and ``drawn (N,)`` bool.
    """
    x, y = points[:, 0], points[:, 1]
    drawn = (points[:, 2] > 0) & (x >= 0) & (y >= 0) & (x < width) & (y < height)
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)

    def axis(c: np.ndarray, grid: np.ndarray) -> np.ndarray:
        lo = np.floor(c - 3 * sigma - 1)[:, None]
        hi = np.ceil(c + 3 * sigma + 2)[:, None]
        inside = (grid[None] >= lo) & (grid[None] < hi) & drawn[:, None]
        return np.where(inside, np.exp(-((grid[None] - c[:, None]) ** 2) / (2 * sigma**2)), 0.0)

    return axis(x, cols), axis(y, rows), drawn


def _draw(
    gx: np.ndarray, gy: np.ndarray, persons: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Max-composite Gaussians over persons.

    gx ``(P*C, W)``, gy ``(P*C, H)`` in person-major order (person p, channel c at row
    ``p * C + c``). Returns ``heat (C, H, W)`` float32 (max over persons) and
    ``window (C, H, W)`` bool (inside any person's window).
    """
    h, w, c = gy.shape[1], gx.shape[1], channels
    if persons == 0:
        return np.zeros((c, h, w), np.float32), np.zeros((c, h, w), bool)
    gx32, gy32 = gx.astype(np.float32), gy.astype(np.float32)
    heat = (gy32[:, :, None] * gx32[:, None, :]).reshape(persons, c, h, w).max(0)
    win = ((gy > 0)[:, :, None] & (gx > 0)[:, None, :]).reshape(persons, c, h, w).any(0)
    return heat, win


# ---------------------------------------------------------------------------------------
# Masks


def _decode(rle: Any) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' C code trips numpy 2's copy= deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _sample_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """``mask (H0, W0)`` at ``(height, width)``: pixel (v, u) reads the nearest source pixel
    ``(round(v * H0 / height), round(u * W0 / width))``; at stride 4 that is ``mask[4v, 4u]``,
    the official identity warp of a full-resolution mask to the output grid."""
    if mask.shape == (height, width):
        return mask
    ys = np.clip(np.round(np.arange(height) * mask.shape[0] / height).astype(int), 0, mask.shape[0] - 1)
    xs = np.clip(np.round(np.arange(width) * mask.shape[1] / width).astype(int), 0, mask.shape[1] - 1)
    return np.ascontiguousarray(mask[np.ix_(ys, xs)])


def rasterize_region(
    segmentation: Any, bbox: Sequence[float] | None, height: int, width: int
) -> np.ndarray:
    """A COCO region as uint8 ``(height, width)`` (1 inside), at the annotation's pixels.

    ``segmentation``: polygons (rasterised and merged by pycocotools), an RLE or
    uncompressed RLE (decoded at its own ``size``, sampled to ``(height, width)`` when that
    differs), or empty/None, in which case the ``bbox`` (xywh) is filled: CrowdPose files
    have no segmentation.
    """
    if isinstance(segmentation, Mapping):
        seg = dict(segmentation)
        rle = seg if isinstance(seg.get("counts"), (str, bytes)) else \
            mask_utils.frPyObjects(seg, *seg["size"])
        return _sample_nearest(_decode(rle), height, width)
    m = np.zeros((height, width), np.uint8)
    if segmentation:
        polys = [[float(v) for v in p] for p in segmentation if len(p) >= 6]
        if polys:
            return _decode(mask_utils.merge(mask_utils.frPyObjects(polys, height, width)))
        return m
    if bbox is not None:
        x, y, bw, bh = (float(v) for v in bbox)
        c0, c1 = int(max(np.floor(x), 0)), int(max(np.ceil(x + bw), 0))
        r0, r1 = int(max(np.floor(y), 0)), int(max(np.ceil(y + bh), 0))
        m[r0:r1, c0:c1] = 1
    return m


def crowd_ignore_mask(persons: Mapping[str, Any], image_size: tuple[int, int],
                      output_size: tuple[int, int]) -> np.ndarray:
    """Ignore mask ``(h, w)`` float32 at the output grid: 0 on crowd regions and on the
    regions of non-crowd persons with ``num_keypoints == 0``, 1 elsewhere.

    As the official code: every region is rasterised at the input resolution (polygons
    merged by pycocotools, RLEs decoded at their own size), and the union is sampled at
    the grid (:func:`_sample_nearest`, input pixel ``stride * u``). A person with no
    segmentation is masked over its bbox (CrowdPose files have none).
    """
    (in_h, in_w), (h, w) = image_size, output_size
    ignored = np.zeros((in_h, in_w), bool)
    for i in np.flatnonzero(persons["iscrowd"] | (persons["num_keypoints"] == 0)):
        ignored |= rasterize_region(persons["segmentations"][i], persons["bboxes"][i], in_h, in_w) > 0
    return _sample_nearest(~ignored, h, w).astype(np.float32)


def _resize_ignore(mask: np.ndarray | torch.Tensor, output_size: tuple[int, int]) -> np.ndarray:
    """A given ignore mask at the output size, or at a multiple of it (sampled at stride·u)."""
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, np.float32)
    m = m.reshape(m.shape[-2:])
    h, w = output_size
    if m.shape == (h, w):
        return m
    if m.shape[0] % h or m.shape[1] % w:
        raise TargetError(
            f"ignore_mask of shape {m.shape} is neither the output size {(h, w)} nor a "
            f"multiple of it"
        )
    return np.ascontiguousarray(m[:: m.shape[0] // h, :: m.shape[1] // w])


# ---------------------------------------------------------------------------------------
# Offsets


def _offsets(
    keypoints: np.ndarray, centers: np.ndarray, has_center: np.ndarray, areas: np.ndarray,
    weights: np.ndarray, height: int, width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Offset maps with the official per-pixel ownership rule (docs/method.md §2).

    keypoints ``(P, K, 3)`` and centers ``(P, 2)`` in grid pixels; ``areas (P,)`` the
    ownership area; ``weights (P,)`` the per-person offset weight.

    Persons are written in order, joints 0..K-1. A write into a channel already holding a
    nonzero offset at a pixel is skipped when the pixel's stored area is smaller than this
    person's; otherwise it overwrites; each write stores the writer's area at the pixel.
    Within one person the first write at a pixel makes all its later joints write there
    too (the stored area is then its own), so the rule vectorises over joints as an
    inclusive cumulative OR of "may write" along the joint axis.

    Returns ``offsets (2K, H, W)`` (keypoint - position) and ``weights (2K, H, W)``.
    """
    k = keypoints.shape[1]
    off = np.zeros((k, 2, height, width), np.float32)
    wts = np.zeros((k, height, width), np.float32)
    area_map = np.zeros((height, width), np.float64)
    for i in np.flatnonzero(has_center):
        cx, cy = int(centers[i, 0]), int(centers[i, 1])
        x0, x1 = max(cx - OFFSET_RADIUS, 0), min(cx + OFFSET_RADIUS, width)
        y0, y1 = max(cy - OFFSET_RADIUS, 0), min(cy + OFFSET_RADIUS, height)
        if x0 >= x1 or y0 >= y1:
            continue
        kx, ky, kv = keypoints[i, :, 0], keypoints[i, :, 1], keypoints[i, :, 2]
        usable = (kv > 0) & (kx >= 0) & (ky >= 0) & (kx < width) & (ky < height)  # (K,)
        if not usable.any():
            continue
        win_off = off[:, :, y0:y1, x0:x1]  # views
        occupied = (win_off[:, 0] != 0) | (win_off[:, 1] != 0)  # (K, h, w)
        smaller = area_map[y0:y1, x0:x1] < areas[i]
        may = usable[:, None, None] & ~(occupied & smaller[None])
        write = np.logical_or.accumulate(may, axis=0) & usable[:, None, None]
        xs = np.arange(x0, x1, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)
        dx = (kx[:, None, None] - xs[None, None, :]).astype(np.float32)
        dy = (ky[:, None, None] - ys[None, :, None]).astype(np.float32)
        win_off[:, 0] = np.where(write, dx, win_off[:, 0])
        win_off[:, 1] = np.where(write, dy, win_off[:, 1])
        wts[:, y0:y1, x0:x1] = np.where(write, np.float32(weights[i]), wts[:, y0:y1, x0:x1])
        area_map[y0:y1, x0:x1] = np.where(write.any(0), areas[i], area_map[y0:y1, x0:x1])
    offsets = off.reshape(2 * k, height, width)
    return offsets, np.repeat(wts, 2, axis=0)


# ---------------------------------------------------------------------------------------
# The one entry point


def make_targets(
    annotations: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    image_size: int | Sequence[int],
    output_size: int | Sequence[int],
    spec: KeypointSpec,
    *,
    sigma: float = 2.0,
    center_sigma: float = 4.0,
    min_center_area: float = 32.0**2,
    background_weight: float = 0.1,
    tradeoff_mask: str = "union",
    offset_normaliser: str = "official",
    ignore_mask: np.ndarray | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Training targets of one sample (docs/method.md §2).

    Args:
        annotations: persons in input-image pixels: a list of COCO-style dicts
            (``keypoints`` 3K list, ``bbox`` xywh, ``area``, ``iscrowd``, ``num_keypoints``,
            optional ``segmentation``) or one mapping of arrays ``keypoints (P, K, 3)``,
            ``bboxes (P, 4)``, ``areas``, ``iscrowd``, ``num_keypoints`` (see
            :func:`persons_from_annotations`).
        image_size: input size, int (square) or ``(height, width)``.
        output_size: grid size, int or ``(height, width)``; stride = image / output.
        spec: the keypoint layout (K).
        sigma: keypoint Gaussian σ, grid pixels. center_sigma: center Gaussian σ.
        min_center_area: persons whose ``area`` (same units as the annotations, input
            pixels²) is below this get no center peak and no offsets.
        background_weight: tradeoff-mask value outside the Gaussian windows (0.1 official;
            1.0 turns the tradeoff off).
        tradeoff_mask: ``"union"`` (official: one mask, 1 inside any keypoint or center
            window) or ``"per_keypoint"`` (paper/DEKR: each channel its own windows).
        offset_normaliser: offset weight of a person, with bbox w, h in input pixels:
            ``"official"`` ``1 / sqrt(w * h)``; ``"paper"`` ``1 / sqrt(w² + h²)``.
        ignore_mask: ``(h, w)`` or input-size 1 = use / 0 = ignore; when None it is built
            from the annotations (crowd regions and persons with ``num_keypoints == 0``).

    Crowd annotations (``iscrowd=1``) only feed the ignore mask. A non-crowd person's center
    is the mean of its labelled keypoints (bbox center if none); keypoints and centers are
    drawn when ``v > 0`` and the float ``x, y`` lie in the grid, in the window
    ``[floor(x - 3σ - 1), ceil(x + 3σ + 2))`` (:func:`_windows`). Offsets: for a center with
    ``int(cx), int(cy)`` in the grid, every pixel of the 8x8 square
    ``range(int(cx)-4, int(cx)+4) x range(int(cy)-4, int(cy)+4)`` (clipped) gets
    ``keypoint - position`` for each labelled keypoint inside the grid, with the official
    per-pixel ownership rule (:func:`_offsets`); ownership compares bbox ``w * h`` (input
    pixels).

    Returns (float32 tensors):
        ``heatmaps (K+1, h, w)`` (center last), ``tradeoff_mask`` ``(1, h, w)`` (union) or
        ``(K+1, h, w)`` (per keypoint), ``ignore_mask (1, h, w)``, ``offsets (2K, h, w)``
        ``[x0, y0, x1, y1, ...]`` = keypoint - position in grid pixels, and
        ``offset_weights (2K, h, w)`` (0 where no offset target).
    """
    if tradeoff_mask not in TRADEOFF_MASKS:
        raise TargetError(f"tradeoff_mask must be one of {TRADEOFF_MASKS}, got {tradeoff_mask!r}")
    if offset_normaliser not in OFFSET_NORMALISERS:
        raise TargetError(
            f"offset_normaliser must be one of {OFFSET_NORMALISERS}, got {offset_normaliser!r}"
        )
    k = spec.num_keypoints
    in_h, in_w = _size(image_size, "image_size")
    h, w = _size(output_size, "output_size")
    sx, sy = w / in_w, h / in_h
    persons = persons_from_annotations(annotations, k)

    people = ~persons["iscrowd"]
    kps = persons["keypoints"][people].copy()
    kps[..., 0] *= sx
    kps[..., 1] *= sy
    bboxes = persons["bboxes"][people]
    grid_boxes = bboxes * [sx, sy, sx, sy]
    centers = person_centers(kps, grid_boxes)
    has_center = persons["areas"][people] >= min_center_area
    p = len(kps)

    # Keypoint and center Gaussians, then max over persons per channel.
    gx, gy, _ = _windows(kps.reshape(-1, 3), sigma, h, w)
    heat, window = _draw(gx, gy, p, k)
    cgx, cgy, _ = _windows(
        np.column_stack([centers, has_center.astype(np.float64)]), center_sigma, h, w
    )
    cheat, cwindow = _draw(cgx, cgy, p, 1)
    heat = np.concatenate([heat, cheat])
    window = np.concatenate([window, cwindow])
    # A center outside the grid gets no offsets either. The official offset generator tests
    # the truncated center, int(c) in the map, where the heatmap tests the float one: a center
    # at x = -0.5 gets offsets but no peak.
    inside = np.trunc(centers)
    has_center &= (inside >= 0).all(1) & (inside[:, 0] < w) & (inside[:, 1] < h)

    if tradeoff_mask == "union":
        trade = np.where(window.any(0, keepdims=True), 1.0, background_weight)
    else:
        trade = np.where(window, 1.0, background_weight)

    if ignore_mask is None:
        ignore = crowd_ignore_mask(persons, (in_h, in_w), (h, w))
    else:
        ignore = _resize_ignore(ignore_mask, (h, w))

    bw, bh = bboxes[:, 2], bboxes[:, 3]  # input pixels
    if offset_normaliser == "official":
        size = np.sqrt(np.maximum(bw * bh, 1e-6))
    else:
        size = np.sqrt(np.maximum(bw**2 + bh**2, 1e-6))
    offsets, weights = _offsets(kps, centers, has_center, bw * bh, 1.0 / size, h, w)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return {
        "heatmaps": t(heat),
        "tradeoff_mask": t(trade),
        "ignore_mask": t(ignore[None]),
        "offsets": t(offsets),
        "offset_weights": t(weights),
    }
