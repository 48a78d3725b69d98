"""Geometry of images and annotations: training augmentation and the test-time resize.

Coordinates follow docs/interfaces.md: x right, y down, **pixel centres at integer
coordinates**. Every transform is one 2x3 affine matrix ``A`` mapping source pixel
coordinates to destination pixel coordinates; the image is resampled with the same matrix
(Pillow, bilinear, which itself works with pixel corners: :func:`warp_affine` converts), so
a dot drawn at source point p lands at ``A @ p``. Keypoints, bbox corners and polygons are
all treated as points of that one frame.

Training (docs/method.md §4): :func:`sample_affine` draws rotation, scale, translation and flip;
:func:`augment` applies them to a raw sample (image, keypoints, bboxes, areas, ignore mask).
Test (docs/method.md §5.1): :func:`resize_for_test` and :class:`ResizeInfo` (``to_resized`` /
``to_original``, exact inverses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from arkpose.spec import OUTPUT_STRIDE, KeypointSpec

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_RESAMPLE = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


# ---------------------------------------------------------------------------------------
# Affine basics


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``a ∘ b`` (apply b first)."""
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    return np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to ``points (..., 2)`` (float64 out)."""
    pts = np.asarray(points, np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def warp_affine(
    array: np.ndarray,
    matrix: np.ndarray,
    out_size: tuple[int, int],
    *,
    resample: str = "bilinear",
    fill: int = 0,
) -> np.ndarray:
    """Resample ``array`` (H, W) or (H, W, 3) uint8 so that source point p lands at
    ``matrix @ p`` in an output of ``out_size = (height, width)``; outside is ``fill``.

    Pillow's AFFINE transform maps output *corner* coordinates to input corner coordinates;
    with centre coordinates ``c = corner - 0.5`` the inverse matrix M (out -> in) becomes
    ``M_lin · (X - 0.5) + M_t + 0.5``.
    """
    inv = invert_affine(matrix)
    lin, t = inv[:, :2], inv[:, 2]
    t_corner = t + 0.5 - lin @ np.array([0.5, 0.5])
    data = (lin[0, 0], lin[0, 1], t_corner[0], lin[1, 0], lin[1, 1], t_corner[1])
    img = Image.fromarray(np.ascontiguousarray(array))
    fillcolor = fill if img.mode == "L" else (fill,) * len(img.getbands())
    out = img.transform(
        (int(out_size[1]), int(out_size[0])), Image.AFFINE, data,
        resample=_RESAMPLE[resample], fillcolor=fillcolor,
    )
    return np.asarray(out)


def flip_matrix(width: int) -> np.ndarray:
    """Horizontal mirror of a ``width``-pixel image: x -> width - 1 - x (pixel 0 <-> W-1)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


# ---------------------------------------------------------------------------------------
# Annotations under an affine


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, spec: KeypointSpec | None = None,
    flipped: bool = False,
) -> np.ndarray:
    """``keypoints (P, K, 3)`` -> same shape; x, y mapped, v kept. When the matrix mirrors
    the image (``flipped``), joints are permuted with ``spec.flip_index`` (left <-> right)."""
    out = np.array(keypoints, np.float32, copy=True).reshape(-1, np.shape(keypoints)[-2], 3)
    out[..., :2] = transform_points(out[..., :2], matrix)
    if flipped:
        if spec is None:
            raise ValueError("flipping keypoints needs the spec's flip_index")
        out = out[:, list(spec.flip_index)]
    return out


def transform_bboxes(bboxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``bboxes (P, 4)`` xywh -> xywh: the box center is mapped exactly; w and h are scaled by
    the affine's scale factor (rotation does not change them). This is what the targets
    need: the center of unlabelled persons and the box size for the offset weights."""
    b = np.asarray(bboxes, np.float64).reshape(-1, 4)
    k = affine_scale(matrix)
    c = transform_points(b[:, :2] + b[:, 2:] / 2, matrix)
    wh = b[:, 2:] * k
    return np.concatenate([c - wh / 2, wh], 1).astype(np.float32)


def affine_scale(matrix: np.ndarray) -> float:
    """The uniform scale factor of a similarity transform (sqrt |det|)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def hflip(sample: dict[str, Any], spec: KeypointSpec) -> dict[str, Any]:
    """Mirror a raw sample (image, ignore_mask, keypoints with the flip permutation, bboxes).
    Flipping twice gives the sample back."""
    out = dict(sample)
    width = sample["image"].shape[1]
    m = flip_matrix(width)
    out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
    if "ignore_mask" in sample:
        out["ignore_mask"] = np.ascontiguousarray(sample["ignore_mask"][:, ::-1])
    out["keypoints"] = transform_keypoints(sample["keypoints"], m, spec, flipped=True)
    if "bboxes" in sample:
        b = np.asarray(sample["bboxes"], np.float32).reshape(-1, 4).copy()
        b[:, 0] = width - 1 - (b[:, 0] + b[:, 2])
        out["bboxes"] = b
    return out


# ---------------------------------------------------------------------------------------
# Training augmentation (docs/method.md §4)


@dataclass(frozen=True)
class AffineParams:
    """One draw of the training augmentation.

    rotation: degrees (counter-clockwise on screen); scale: the crop side as a multiple of
    the image's short side; shift: (dx, dy) of the crop center, as a fraction of the crop
    side; flip: mirror first.
    """

    rotation: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False


def sample_affine(
    rng: np.random.Generator,
    *,
    input_size: int,
    max_rotation: float = 30.0,
    min_scale: float = 0.75,
    max_scale: float = 1.5,
    max_translate: float = 40.0,
    flip_prob: float = 0.5,
) -> AffineParams:
    """Draw rotation U(-r, r), scale U(min, max), translation and flip (docs/method.md §4).

    Translation: the official code shifts the crop center by ``±max_translate · scale``
    original pixels with ``scale = crop side / 200``, i.e. ``±max_translate · 512/200``
    *crop* pixels at a 512 crop (±20% of the crop for 40). arkpose reads ``max_translate``
    as pixels at a 512 crop (the presets scale it with the input size) and draws the shift
    uniformly in ``±max_translate · 2.56 / input_size`` of the crop side, continuous rather
    than the official integer draw.
    """
    rotation = rng.uniform(-max_rotation, max_rotation)
    scale = rng.uniform(min_scale, max_scale)
    t = max_translate * (512.0 / 200.0) / input_size
    shift = tuple(float(v) for v in rng.uniform(-t, t, size=2))
    flip = bool(rng.random() < flip_prob)
    return AffineParams(float(rotation), float(scale), shift, flip)


def crop_matrix(width: int, height: int, output_size: int, params: AffineParams) -> np.ndarray:
    """The 2x3 matrix original pixels -> square crop of ``output_size`` pixels.

    The (mirrored, if ``params.flip``) image center ``(w/2, h/2)`` plus the shift goes to
    the crop center ``(S/2, S/2)`` (the official convention); a crop side of
    ``short side · scale`` original pixels spans the ``S`` output pixels; then the rotation.
    """
    side = min(width, height) * params.scale
    k = output_size / side
    a = np.deg2rad(params.rotation)
    cos, sin = np.cos(a) * k, np.sin(a) * k
    cx = width / 2 + params.shift[0] * side
    cy = height / 2 + params.shift[1] * side
    # y points down, so a counter-clockwise rotation on screen is [[cos, sin], [-sin, cos]].
    lin = np.array([[cos, sin], [-sin, cos]])
    m = np.concatenate([lin, (np.array([output_size / 2, output_size / 2]) - lin @ [cx, cy])[:, None]], 1)
    return compose(m, flip_matrix(width)) if params.flip else m


def augment(
    sample: dict[str, Any],
    spec: KeypointSpec,
    params: AffineParams,
    *,
    input_size: int,
    output_stride: int = OUTPUT_STRIDE,
) -> dict[str, Any]:
    """Apply one affine draw to a raw sample (docs/interfaces.md layout).

    Returns a dict with ``image`` uint8 ``(S, S, 3)``, ``keypoints (P, K, 3)``, ``bboxes``
    (see :func:`transform_bboxes`) and ``areas`` (× scale²) in input pixels, the
    ``ignore_mask`` warped straight to the output grid ``(S/stride, S/stride)`` (grid u =
    input ``stride·u``; outside the source image it is 0 = ignore, as the official code's
    zero border), the ``matrix`` (original -> input) and the ``scale`` factor. Other keys
    (iscrowd, num_keypoints, ids) pass through.
    """
    h, w = sample["image"].shape[:2]
    m = crop_matrix(w, h, input_size, params)
    k = affine_scale(m)
    out = {key: v for key, v in sample.items() if key not in ("image", "ignore_mask")}
    out["image"] = warp_affine(sample["image"], m, (input_size, input_size))
    grid = input_size // output_stride
    to_grid = compose(np.array([[1.0 / output_stride, 0, 0], [0, 1.0 / output_stride, 0]]), m)
    ignore = sample.get("ignore_mask")
    if ignore is None:
        ignore = np.ones((h, w), np.uint8)
    warped = warp_affine((np.asarray(ignore, np.uint8) > 0).astype(np.uint8) * 255, to_grid,
                         (grid, grid))
    out["ignore_mask"] = (warped > 127).astype(np.uint8)
    out["keypoints"] = transform_keypoints(sample["keypoints"], m, spec, flipped=params.flip)
    out["bboxes"] = transform_bboxes(sample["bboxes"], m)
    out["areas"] = (np.asarray(sample["areas"], np.float32) * k**2).astype(np.float32)
    out["matrix"] = m
    out["scale"] = k
    return out


def normalize(image: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` RGB -> float32 ``(3, H, W)`` ImageNet-normalised tensor."""
    x = (np.asarray(image, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalize`: ``(3, H, W)`` -> uint8 ``(H, W, 3)``."""
    x = tensor.detach().cpu().numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Test-time resize (docs/method.md §5.1) and back-projection (§5.9)


def _round_up(x: float, multiple: int) -> int:
    """The official ``int((x + 63) // 64 * 64)``: a round-up for integer x, but for a float
    less than 1 px above a multiple it rounds *down* (768.77 -> 768), kept for parity."""
    return int((x + multiple - 1) // multiple * multiple)


@dataclass(frozen=True)
class ResizeInfo:
    """How :func:`resize_for_test` mapped an image; back-projection for the predictions.

    Attributes (the official quantities):
        center: ``(c_x, c_y) = (int(w/2 + 0.5), int(h/2 + 0.5))`` in original pixels; it
            maps to ``(fuse_w/2, fuse_h/2)``.
        scale: ``(scale_x, scale_y)`` in units of 200 px (the official "scale").
        size: ``(fuse_w, fuse_h)``, the resized image's width and height.
        original_size: ``(w, h)`` of the original image.

    One factor ``k = scale_x · 200 / fuse_w`` (original pixels per resized pixel) serves
    both axes: ``x_o = c_x + (x - fuse_w/2)·k``, ``y_o = c_y + (y - fuse_h/2)·k``.
    """

    center: tuple[float, float]
    scale: tuple[float, float]
    size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def factor(self) -> float:
        """k: original pixels per resized pixel."""
        return self.scale[0] * 200.0 / self.size[0]

    @property
    def matrix(self) -> np.ndarray:
        """2x3 affine original -> resized pixels."""
        f = 1.0 / self.factor
        (cx, cy), (fw, fh) = self.center, self.size
        return np.array([[f, 0.0, fw / 2 - f * cx], [0.0, f, fh / 2 - f * cy]])

    def to_original(self, points: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Resized-image pixels ``(..., 2)`` -> original pixels ``(..., 2)`` (same type)."""
        k, (cx, cy), (fw, fh) = self.factor, self.center, self.size
        if isinstance(points, torch.Tensor):
            off = points.new_tensor([cx - fw / 2 * k, cy - fh / 2 * k])
            return points * k + off
        pts = np.asarray(points, np.float64)
        return pts * k + np.array([cx - fw / 2 * k, cy - fh / 2 * k])

    def to_resized(self, points: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Original pixels ``(..., 2)`` -> resized-image pixels ``(..., 2)`` (same type)."""
        k, (cx, cy), (fw, fh) = self.factor, self.center, self.size
        if isinstance(points, torch.Tensor):
            return (points - points.new_tensor([cx, cy])) / k + points.new_tensor([fw / 2, fh / 2])
        pts = np.asarray(points, np.float64)
        return (pts - np.array([cx, cy])) / k + np.array([fw / 2, fh / 2])


def resize_info(
    width: int, height: int, short_side: int = 512, multiple: int = 64,
    *, scale: float = 1.0, min_scale: float = 1.0,
) -> ResizeInfo:
    """The official ``get_multi_scale_size``: short side -> ``short_side·scale`` and the long
    side rounded up to a multiple of ``multiple`` (the extra is padding), aspect kept.
    The rounding is the official ``(x + 63) // 64 * 64`` (see :func:`_round_up`).

    With multi-scale testing the official code rounds at the smallest scale
    (``min_scale``): base = ``round_up(min_scale · short_side)``, short side
    ``int(base · scale / min_scale)``, long side ``int(round_up(base/short · long) · scale /
    min_scale)``. The defaults give the single-scale case.
    """
    base = _round_up(min_scale * short_side, multiple)
    center = (float(int(width / 2.0 + 0.5)), float(int(height / 2.0 + 0.5)))
    if width < height:
        w_r = int(base * scale / min_scale)
        h_r = int(_round_up(base / width * height, multiple) * scale / min_scale)
        sc = (width / 200.0, h_r / w_r * width / 200.0)
    else:
        h_r = int(base * scale / min_scale)
        w_r = int(_round_up(base / height * width, multiple) * scale / min_scale)
        sc = (w_r / h_r * height / 200.0, height / 200.0)
    return ResizeInfo(center=center, scale=sc, size=(w_r, h_r), original_size=(width, height))


def resize_for_test(
    image: np.ndarray, short_side: int = 512, multiple: int = 64,
    *, scale: float = 1.0, min_scale: float = 1.0,
) -> tuple[np.ndarray, ResizeInfo]:
    """Test-time resize (docs/method.md §5.1): uint8 ``(H, W, 3)`` -> uint8 ``(h_r, w_r, 3)``
    and the :class:`ResizeInfo` whose ``to_original`` back-projects predictions.

    Example: a 640x425 (w x h) image becomes 832x512: the short side 425 -> 512 (factor
    512/425), the long side 640·512/425 = 771.0 rounded up to 832; the center (320, 213)
    goes to (416, 256), so the padding (zeros) is split between both ends.
    """
    h, w = image.shape[:2]
    info = resize_info(w, h, short_side, multiple, scale=scale, min_scale=min_scale)
    resized = warp_affine(image, info.matrix, (info.size[1], info.size[0]))
    return resized, info
