"""What the adaptive units learned: per-pixel transforms read at persons (paper Fig. 3).

An adaptive unit predicts, at every grid pixel, a 2x2 matrix ``T = [[t0, t1], [t2, t3]]``
acting on the tap offsets ``(dy, dx)`` of its 3x3 kernel (arkpose.model.adaptive). If the
unit adapts to the person, T at the person's center should rotate with the body and grow
with its size. These functions read T at given points and split it into a rotation and a
scale in image terms (x right, y down, positive angles clockwise on screen: the convention
of SynthPose's ``rotation_deg``), so notebooks can set them against the ground truth.

:func:`probe` runs a model once on an image to read them; everything else is a pure tensor
function. No file I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from arkpose.data.coco import KeypointDataset
from arkpose.data.transforms import normalize, resize_for_test
from arkpose.model.adaptive import sampling_positions
from arkpose.progress import bar as progress_bar
from arkpose.spec import OUTPUT_STRIDE
from arkpose.stn_geometry import circular_corr
from arkpose.targets import person_centers


def values_at(maps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear read of ``maps`` at float grid points.

    maps: (C, h, w); points: (P, 2) grid (x, y), pixel centres at integers, clamped to the
    map. Returns (P, C).
    """
    _, h, w = maps.shape
    x = points[:, 0].clamp(0, w - 1)
    y = points[:, 1].clamp(0, h - 1)
    x0 = x.floor().long().clamp(max=w - 2) if w > 1 else x.floor().long()
    y0 = y.floor().long().clamp(max=h - 2) if h > 1 else y.floor().long()
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    fx = (x - x0.to(x.dtype))[:, None]
    fy = (y - y0.to(y.dtype))[:, None]
    top = maps[:, y0, x0].T * (1 - fx) + maps[:, y0, x1].T * fx
    bottom = maps[:, y1, x0].T * (1 - fx) + maps[:, y1, x1].T * fx
    return top * (1 - fy) + bottom * fy


def decompose(transform: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rotation and scale of per-point transforms.

    transform: (..., 4) = (t0, t1, t2, t3), T acting on (dy, dx). In (dx, dy) order the
    matrix is M = [[t3, t2], [t1, t0]]; its closest rotation (polar decomposition) has angle
    atan2(m10 − m01, m00 + m11) = atan2(t1 − t2, t0 + t3).

    Returns ``rotation_deg`` (...) in (−180, 180], clockwise on screen positive;
    ``scale`` (...) = sqrt(|det T|), the area-preserving size factor of the sampling grid;
    ``anisotropy`` (...) = ratio of T's singular values (≥ 1; 1 for a similarity);
    ``reflection`` (...) bool, det T < 0.
    """
    t0, t1, t2, t3 = transform.unbind(-1)
    det = t0 * t3 - t1 * t2
    rotation = torch.rad2deg(torch.atan2(t1 - t2, t0 + t3))
    # Singular values of a 2x2 matrix from its Frobenius norm and determinant.
    fro2 = t0**2 + t1**2 + t2**2 + t3**2
    root = torch.sqrt(torch.clamp(fro2**2 - 4 * det**2, min=0))
    s_max = torch.sqrt((fro2 + root) / 2)
    s_min = torch.sqrt(torch.clamp((fro2 - root) / 2, min=0))
    return {
        "rotation_deg": rotation,
        "scale": det.abs().sqrt(),
        "anisotropy": s_max / s_min.clamp(min=1e-12),
        "reflection": det < 0,
    }


def taps_at(transform: torch.Tensor, points: torch.Tensor, dilation: int = 1) -> torch.Tensor:
    """The 9 sampling positions of an adaptive conv at given grid pixels (Fig. 3).

    transform: (4, h, w) one image's T map; points: (P, 2) grid (x, y), rounded to the
    nearest pixel (the positions belong to output pixels). Returns (P, 9, 2) grid (x, y).
    """
    _, h, w = transform.shape
    ys, xs = sampling_positions(transform[None], dilation)  # (1, h, w, 9) each
    px = points[:, 0].round().long().clamp(0, w - 1)
    py = points[:, 1].round().long().clamp(0, h - 1)
    return torch.stack([xs[0, py, px], ys[0, py, px]], -1)


def circular_correlation(a_deg: torch.Tensor, b_deg: torch.Tensor) -> float:
    """Circular correlation coefficient (Jammalamadaka-SenGupta) of two angle samples
    (:func:`arkpose.stn_geometry.circular_corr` on tensors)."""
    return float(circular_corr(a_deg.double().cpu().numpy(), b_deg.double().cpu().numpy()))


def _transforms(model: torch.nn.Module, image: np.ndarray, test_size: int):
    """Every adaptive unit's T map of one image after the test-time resize (no flip):
    ({unit: (4, h, w)}, the resize info)."""
    return _transforms_many(model, [image], test_size)[0]


@torch.no_grad()
def _transforms_many(model: torch.nn.Module, images: list[np.ndarray], test_size: int):
    """:func:`_transforms` of each image, with one forward pass for all of them when their
    resized shapes agree (equal-sized benchmark images: a few times less time per image on
    a CPU; a batched conv may round the last bit differently)."""
    resized = [resize_for_test(image, test_size) for image in images]
    device = next(model.parameters()).device
    if len({r.shape for r, _ in resized}) == 1:
        batches = [list(range(len(resized)))]
    else:
        batches = [[i] for i in range(len(resized))]
    out = [None] * len(resized)
    for batch in batches:
        x = torch.stack([normalize(resized[i][0]) for i in batch]).to(device)
        maps = model(x, return_transforms=True)["transforms"]
        for j, i in enumerate(batch):
            out[i] = ({k: v[j].float().cpu() for k, v in maps.items()}, resized[i][1])
    return out


def _unit_map(transforms: dict[str, torch.Tensor], unit: str) -> torch.Tensor:
    if unit not in transforms:
        raise KeyError(
            f"model has no adaptive unit {unit!r}; it has {sorted(transforms) or 'none'} "
            "(regular units have no transforms: was the model trained with model.adaptive=false?)"
        )
    return transforms[unit]


def _chunks(items, size: int = 16):
    """Lists of up to ``size`` consecutive items (itertools.batched arrives in 3.12)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@torch.no_grad()
def probe(
    model: torch.nn.Module,
    image: np.ndarray,
    points: torch.Tensor,
    *,
    unit: str = "regression.t1",
    dilation: int = 1,
    test_size: int = 512,
) -> dict[str, torch.Tensor]:
    """Read one adaptive unit's transforms at given points of an image.

    image: uint8 (H, W, 3); points: (P, 2) original-image pixels (x, y), e.g. person
    centers. The image goes through the test-time resize (docs/method.md §5.1), no flip.
    ``unit`` names a key of the model's ``transforms`` output (``"regression.t1"``,
    ``"heatmap.0.t2"``, ...); ``dilation`` is that unit's (1 for the regression unit).

    Returns ``transform`` (P, 4) (T bilinearly read at the points), ``taps`` (P, 9, 2)
    (the 9 sampling positions of the output pixel nearest each point, original pixels),
    and the :func:`decompose` fields (P,) each.
    """
    transforms, info = _transforms(model, image, test_size)
    t = _unit_map(transforms, unit)
    grid = info.to_resized(points.double()).float() / OUTPUT_STRIDE
    taps = info.to_original(taps_at(t, grid, dilation).double() * OUTPUT_STRIDE).float()
    values = values_at(t, grid)
    return {"transform": values, "taps": taps, **decompose(values)}


def person_transforms(
    model: torch.nn.Module,
    dataset: KeypointDataset,
    *,
    max_images: int = 200,
    unit: str = "regression.t1",
    test_size: int = 512,
    min_keypoints: int = 1,
    progress: bool = True,
):
    """One row per labelled person of ``dataset``: the learned T at its center next to the
    annotation's own geometry (SynthPose's ``synth`` record, when present).

    dataset: an :class:`arkpose.data.coco.KeypointDataset` (raw samples). Centers are the
    training centers (mean of the labelled keypoints). Returns a pandas DataFrame with
    ``image_id, ann_id, center_x, center_y, num_keypoints, rotation_deg, scale,
    anisotropy`` (learned) and, for SynthPose, ``true_rotation_deg, true_height_px,
    facing``.
    """
    rows = []
    for _, anns, centers, (transforms, info) in _persons_and_transforms(
            model, dataset, max_images, min_keypoints, test_size, progress):
        grid = info.to_resized(centers.double()).float() / OUTPUT_STRIDE
        found = decompose(values_at(_unit_map(transforms, unit), grid))
        for i, ann in enumerate(anns):
            synth = ann.get("synth", {})
            rows.append({
                "image_id": ann["image_id"],
                "ann_id": ann.get("id"),
                "center_x": float(centers[i, 0]),
                "center_y": float(centers[i, 1]),
                "num_keypoints": int(ann["num_keypoints"]),
                "rotation_deg": float(found["rotation_deg"][i]),
                "scale": float(found["scale"][i]),
                "anisotropy": float(found["anisotropy"][i]),
                "true_rotation_deg": synth.get("rotation_deg", np.nan),
                "true_height_px": synth.get("height_px", np.nan),
                "facing": synth.get("facing"),
            })
    return pd.DataFrame(rows)


def _labelled_persons(dataset: KeypointDataset, max_images: int, min_keypoints: int, progress: bool):
    """Per image of ``dataset`` (the first ``max_images``; all when <= 0) with labelled
    persons: (index, their annotations, their training centers (P, 2) original pixels)."""
    count = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    for index in progress_bar(range(count), desc="transforms", enabled=progress):
        anns = [
            a for a in dataset.annotations(index)
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) >= min_keypoints
        ]
        if anns:
            k = len(anns[0]["keypoints"]) // 3
            kps = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, k, 3)
            boxes = np.array([a["bbox"] for a in anns], np.float64)
            yield index, anns, torch.from_numpy(person_centers(kps, boxes))


def _persons_and_transforms(model: torch.nn.Module, dataset: KeypointDataset, max_images: int,
                            min_keypoints: int, test_size: int, progress: bool):
    """:func:`_labelled_persons` with each image's :func:`_transforms`, 16 images per
    forward pass."""
    for chunk in _chunks(_labelled_persons(dataset, max_images, min_keypoints, progress)):
        found = _transforms_many(model, [dataset.load_image(i) for i, _, _ in chunk], test_size)
        for (index, anns, centers), result in zip(chunk, found):
            yield index, anns, centers, result


def unit_dilation(unit: str, heatmap_dilations: tuple[int, ...]) -> int:
    """The dilation of an adaptive unit: ``heatmap.<b>.*`` has branch b's, the regression
    unit has 1."""
    parts = unit.split(".")
    return int(heatmap_dilations[int(parts[1])]) if parts[0] == "heatmap" else 1


@torch.no_grad()
def unit_transforms(
    model: torch.nn.Module,
    dataset: KeypointDataset,
    *,
    heatmap_dilations: tuple[int, ...],
    max_images: int = 200,
    test_size: int = 512,
    min_keypoints: int = 1,
    progress: bool = True,
):
    """One row per (adaptive unit, labelled person) of ``dataset``: every unit's learned T
    at the person's center (one forward pass per image) next to SynthPose's true geometry.

    heatmap_dilations: ``cfg.model.heatmap_dilations`` of the model. Returns a pandas
    DataFrame with ``unit, dilation, image_id, ann_id, rotation_deg, scale, anisotropy``
    and ``true_rotation_deg, true_height_px`` (NaN where the annotations have no ``synth``
    record). No row when the model has no adaptive unit.
    """
    rows = []
    for _, anns, centers, (transforms, info) in _persons_and_transforms(
            model, dataset, max_images, min_keypoints, test_size, progress):
        grid = info.to_resized(centers.double()).float() / OUTPUT_STRIDE
        for unit, t in sorted(transforms.items()):
            found = decompose(values_at(t, grid))
            dilation = unit_dilation(unit, heatmap_dilations)
            for i, ann in enumerate(anns):
                synth = ann.get("synth", {})
                rows.append({
                    "unit": unit, "dilation": dilation, "image_id": ann["image_id"],
                    "ann_id": ann.get("id"), "rotation_deg": float(found["rotation_deg"][i]),
                    "scale": float(found["scale"][i]), "anisotropy": float(found["anisotropy"][i]),
                    "true_rotation_deg": synth.get("rotation_deg", np.nan),
                    "true_height_px": synth.get("height_px", np.nan),
                })
    columns = ["unit", "dilation", "image_id", "ann_id", "rotation_deg", "scale", "anisotropy",
               "true_rotation_deg", "true_height_px"]
    return pd.DataFrame(rows, columns=columns)
