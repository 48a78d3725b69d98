"""Pictures of poses and training targets, as RGB uint8 arrays (and PNG files).

Every function takes an RGB uint8 ``(H, W, 3)`` image and returns a new one; nothing is
drawn in place. Maps at the output grid (stride 4) are upsampled to the image size with
grid u at image ``stride · u`` (docs/interfaces.md). Left joints and limbs are drawn in
blue, right ones in orange, the rest in green, so a left/right swap is visible at a glance.

Sections: poses (:func:`draw_skeleton`), maps (:func:`overlay_map` and its users), offsets,
masks, panels and files. The adaptive units' sampling positions (the per-pixel STN grids of
the regression head) get their own function next to :func:`draw_offsets`, which already
draws "a point and where it points to" on the stride-4 grid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

from arkpose.jsonio import atomic_path
from arkpose.spec import KeypointSpec

LEFT, RIGHT, MIDDLE = (40, 120, 255), (255, 140, 0), (40, 200, 80)
CENTER = (255, 40, 200)


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    a = _np(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, 2)
    if a.dtype != np.uint8:
        a = np.clip(a * (255 if a.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def side_color(name: str) -> tuple[int, int, int]:
    """Blue for ``left_*``, orange for ``right_*``, green otherwise."""
    return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else MIDDLE


def limb_color(spec: KeypointSpec, a: int, b: int) -> tuple[int, int, int]:
    ca, cb = side_color(spec.keypoints[a]), side_color(spec.keypoints[b])
    return ca if ca == cb else MIDDLE


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray | torch.Tensor,
    spec: KeypointSpec,
    *,
    min_score: float = 0.0,
    radius: int = 3,
    width: int = 2,
    centers: np.ndarray | None = None,
) -> np.ndarray:
    """Draw poses ``keypoints (P, K, 3)`` (x, y, v or score) with ``spec.skeleton``.

    A joint is drawn when its third value is > ``min_score``; a limb when both ends are.
    ``centers (P, 2)`` optionally adds a magenta cross per person. Returns uint8 (H, W, 3).
    """
    out = Image.fromarray(_rgb(image))
    draw = ImageDraw.Draw(out)
    kps = _np(keypoints).reshape(-1, spec.num_keypoints, 3)
    for person in kps:
        ok = person[:, 2] > min_score
        for a, b in spec.skeleton:
            if ok[a] and ok[b]:
                draw.line([tuple(person[a, :2]), tuple(person[b, :2])],
                          fill=limb_color(spec, a, b), width=width)
        for j in np.flatnonzero(ok):
            x, y = person[j, :2]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                         fill=side_color(spec.keypoints[j]), outline=(0, 0, 0))
    for cx, cy in ([] if centers is None else _np(centers).reshape(-1, 2)):
        r = radius + 2
        draw.line([(cx - r, cy), (cx + r, cy)], fill=CENTER, width=width)
        draw.line([(cx, cy - r), (cx, cy + r)], fill=CENTER, width=width)
    return np.asarray(out)


def _upsample(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(h, w)`` grid map at image size ``(H, W)`` (bilinear; grid u at image stride·u)."""
    h, w = grid_map.shape
    H, W = size
    t = torch.from_numpy(np.ascontiguousarray(grid_map, np.float32))[None, None]
    # align_corners=True maps grid 0 -> image 0 and grid h-1 -> image stride·(h-1).
    sh, sw = (h - 1) * H // h + 1, (w - 1) * W // w + 1
    up = torch.nn.functional.interpolate(t, size=(sh, sw), mode="bilinear", align_corners=True)
    up = torch.nn.functional.pad(up, (0, W - sw, 0, H - sh), mode="replicate")
    return up[0, 0].numpy()


def overlay_map(
    image: np.ndarray,
    grid_map: np.ndarray | torch.Tensor,
    *,
    alpha: float = 0.6,
    cmap: str = "jet",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
) -> np.ndarray:
    """Blend a single ``(h, w)`` map (heatmap, center map, mask) over the image with a
    colormap; the map's weight per pixel is ``alpha · normalised value``."""
    img = _rgb(image).astype(np.float32)
    m = _upsample(_np(grid_map).astype(np.float32), img.shape[:2])
    lo = m.min() if vmin is None else vmin
    hi = m.max() if vmax is None else vmax
    v = np.clip((m - lo) / max(hi - lo, 1e-12), 0, 1)
    color = colormaps[cmap](v)[..., :3] * 255
    a = alpha * v[..., None]
    return np.clip(img * (1 - a) + color * a, 0, 255).astype(np.uint8)


def draw_heatmaps(image: np.ndarray, heatmaps: np.ndarray | torch.Tensor,
                  *, alpha: float = 0.6) -> np.ndarray:
    """The max over keypoint channels ``heatmaps (K, h, w)`` (or (K+1, ...) minus the
    center: pass ``heatmaps[:-1]``) over the image."""
    return overlay_map(image, _np(heatmaps).max(0), alpha=alpha)


def draw_center_map(image: np.ndarray, center: np.ndarray | torch.Tensor,
                    *, alpha: float = 0.6) -> np.ndarray:
    """The center heatmap ``(h, w)`` or ``(1, h, w)`` over the image (magenta scale)."""
    return overlay_map(image, _np(center).reshape(_np(center).shape[-2:]), alpha=alpha,
                       cmap="magma")


def draw_mask(image: np.ndarray, mask: np.ndarray | torch.Tensor, *,
              color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """Tint where ``mask`` (grid ``(h, w)``/``(1, h, w)`` or image size) is *low*: for the
    ignore mask (1 = use) that marks the ignored regions; for the tradeoff mask the
    down-weighted background (tint ∝ 1 - value)."""
    img = _rgb(image).astype(np.float32)
    m = _np(mask).astype(np.float32)
    m = m.reshape(m.shape[-2:])
    if m.shape != img.shape[:2]:
        m = _upsample(m, img.shape[:2])
    a = alpha * np.clip(1 - m, 0, 1)[..., None]
    return np.clip(img * (1 - a) + np.array(color, np.float32) * a, 0, 255).astype(np.uint8)


def draw_offsets(
    image: np.ndarray,
    offsets: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor | None = None,
    spec: KeypointSpec | None = None,
    *,
    stride: int | None = None,
    every: int = 1,
    width: int = 1,
) -> np.ndarray:
    """Offset vectors ``(2K, h, w)`` (arkpose: keypoint - position, grid pixels) as lines
    from each grid position to the keypoint it points at, at positions where ``weights``
    (``(2K, h, w)``; default: offset nonzero) is positive. ``every`` subsamples positions.
    Colours follow the joint's side when ``spec`` is given."""
    img = _rgb(image)
    off = _np(offsets).astype(np.float32)
    k = off.shape[0] // 2
    s = stride or img.shape[0] / off.shape[1]
    wt = (np.abs(off[0::2]) + np.abs(off[1::2]) > 0) if weights is None else _np(weights)[0::2] > 0
    out = Image.fromarray(img)
    draw = ImageDraw.Draw(out)
    for j in range(k):
        ys, xs = np.nonzero(wt[j][::every, ::every])
        ys, xs = ys * every, xs * every
        color = side_color(spec.keypoints[j]) if spec else MIDDLE
        for y, x in zip(ys, xs):
            tx, ty = x + off[2 * j, y, x], y + off[2 * j + 1, y, x]
            draw.line([(x * s, y * s), (tx * s, ty * s)], fill=color, width=width)
            draw.point((x * s, y * s), fill=(255, 255, 255))
    return np.asarray(out)


def draw_sampling_positions(
    image: np.ndarray,
    taps: np.ndarray | torch.Tensor,
    centers: np.ndarray | torch.Tensor,
    *,
    radius: int = 2,
) -> np.ndarray:
    """The 9 sampling positions of an adaptive conv at each center (paper Fig. 3).

    taps: ``(P, 9, 2)`` image pixels (x, y), row-major 3x3 taps (arkpose.stn.probe);
    centers: ``(P, 2)``. The taps are joined as the deformed 3x3 grid (rows and columns),
    so rotation, scale and shear of the learned transform are visible at a glance; the
    first tap (top-left of the regular grid) is drawn larger to show the orientation.
    """
    img = Image.fromarray(_rgb(image))
    draw = ImageDraw.Draw(img)
    grid_taps = _np(taps).reshape(-1, 3, 3, 2)
    for person, c in zip(grid_taps, _np(centers).reshape(-1, 2)):
        for line in [*person, *person.transpose(1, 0, 2)]:  # rows, then columns
            draw.line([tuple(p) for p in line], fill=LEFT, width=1)
        for i, (x, y) in enumerate(person.reshape(9, 2)):
            r = radius + (1 if i == 0 else 0)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=RIGHT if i == 0 else LEFT)
        cx, cy = c
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=CENTER)
    return np.asarray(img)


def draw_targets(
    image: np.ndarray, targets: Mapping[str, np.ndarray | torch.Tensor], spec: KeypointSpec,
    keypoints: np.ndarray | None = None,
) -> np.ndarray:
    """A 2x2 panel of one training sample's targets: keypoint heatmaps (+ skeleton),
    center map, offsets, and the ignore (red) / tradeoff (grey) masks."""
    img = _rgb(image)
    heat = _np(targets["heatmaps"])
    a = draw_heatmaps(img, heat[:-1])
    if keypoints is not None:
        a = draw_skeleton(a, keypoints, spec)
    b = draw_center_map(img, heat[-1])
    c = draw_offsets(img, targets["offsets"], targets.get("offset_weights"), spec)
    d = draw_mask(img, _np(targets["tradeoff_mask"]).max(0), color=(90, 90, 90), alpha=0.6)
    d = draw_mask(d, targets["ignore_mask"], color=(255, 0, 0), alpha=0.6)
    return np.concatenate([np.concatenate([a, b], 1), np.concatenate([c, d], 1)], 0)


def grid(images: Sequence[np.ndarray], columns: int = 4, pad: int = 2) -> np.ndarray:
    """Tile uint8 images into one, each in the top-left corner of a cell as large as the
    largest (white padding: real images differ in size)."""
    if not images:
        raise ValueError("grid() needs at least one image")
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    rows = (len(images) + columns - 1) // columns
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top:top + im.shape[0], left:left + im.shape[1]] = _rgb(im)
    return out


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Write an RGB uint8 array as PNG, atomically (parent folders created); returns the path."""
    with atomic_path(path) as tmp:
        Image.fromarray(_rgb(image)).save(tmp)
    return os.fspath(path)
