"""SynthPose painting of everything but persons: background, distractor and occluder objects,
and the post-processing (lighting, blur, sensor noise).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from arkpose.data.synth_render.paint_person import rasterise
from arkpose.data.synth_render.scene import OCCLUDER


def _capsule_parts(d: dict) -> list:
    if d["kind"] == "blob":
        x, y, r = d["geom"]
        return [(1, "circle", (x, y, r))]
    if d["kind"] == "ring":
        return [(1, "poly", list(d["geom"]))]
    return [(1, "cap", tuple(g)) for g in d["geom"]]


def paint_object(canvas: np.ndarray, label: np.ndarray | None, d: dict) -> None:
    """Paint a distractor (sticks, limb pairs, blobs, polygons) of one colour, outlined."""
    size = canvas.shape[0]
    parts = _capsule_parts(d)
    lab, x0, y0 = rasterise(parts, size)
    if lab is None:
        return
    mask = lab > 0
    col = np.broadcast_to(np.array(d["color"], np.float32), lab.shape + (3,)).copy()
    edge = np.zeros_like(mask)
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    col[edge & mask] *= 0.55
    h, w = lab.shape
    cv = canvas[y0:y0 + h, x0:x0 + w]
    cv[mask] = col[mask]
    if label is not None:
        label[y0:y0 + h, x0:x0 + w][mask] = OCCLUDER


def paint_background(bg: dict, size: int) -> np.ndarray:
    """(S, S, 3) float32 background from its description (see ``sample_background``).

    The smooth parts (gradient, colour blotches) are mixed on a small grid and upsampled
    once: a bilinear upsampling of a linear gradient is the same gradient.
    """
    kind = bg["kind"]
    if kind == "flat":
        return np.broadcast_to(np.array(bg["color"], np.float32), (size, size, 3)).copy()
    n = 8
    if bg.get("blotch") is not None:
        n = len(bg["blotch"])
    g = np.linspace(0.0, 1.0, n, dtype=np.float32)
    a = math.radians(bg["angle"])
    t = g[:, None] * math.sin(a) + g[None, :] * math.cos(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = np.array(bg["c0"], np.float32), np.array(bg["c1"], np.float32)
    small = c0 + t[..., None] * (c1 - c0)
    if bg.get("blotch") is not None:  # low-frequency colour noise
        mix = bg["blotch_mix"]
        small = small * (1 - mix) + np.asarray(bg["blotch"], np.float32) * mix
    # align_corners-style upsampling: resize a grid whose corners are pixel centres
    pil = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.BILINEAR)
    if bg.get("stripes") is not None:
        per, ang, amp = bg["stripes"]
        b = math.radians(ang)
        pix = np.arange(size, dtype=np.float32) / per
        phase = (pix[:, None] * math.sin(b) + pix[None, :] * math.cos(b)).astype(np.int32)
        dark = Image.fromarray(((phase & 1) * 255).astype(np.uint8))
        shaded = Image.eval(pil, lambda v, f=1 - amp: int(v * f))
        pil = Image.composite(shaded, pil, dark)
    if bg.get("shapes"):
        dr = ImageDraw.Draw(pil)
        for kind, box, color in bg["shapes"]:
            color = tuple(int(c) for c in color)
            if kind == 0:
                dr.rectangle(box, fill=color)
            elif kind == 1:
                dr.ellipse(box, fill=color)
            else:
                dr.polygon(box, fill=color)
    return np.asarray(pil, np.float32)


_NOISE_BANKS: dict[int, np.ndarray] = {}


def _noise_bank(size: int) -> np.ndarray:
    """(2S, 2S, 3) float32 standard normal field, the same in every process.

    Images take a window of it at a random offset: far cheaper than fresh normals per
    image, and still a pure function of the scene.
    """
    bank = _NOISE_BANKS.get(size)
    if bank is None:
        rng = np.random.default_rng(np.random.SeedSequence([0x5EED, size]))
        bank = rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32)
        _NOISE_BANKS[size] = bank
    return bank


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 5-tap Gaussian blur of (S, S, 3) float32, edges replicated (sigma <= ~1.5;
    several times cheaper than PIL's GaussianBlur)."""
    w0, w1, w2 = np.exp(-np.array([0.0, 1.0, 4.0]) / (2.0 * sigma * sigma))
    norm = w0 + 2 * w1 + 2 * w2
    w0, w1, w2 = (np.float32(w / norm) for w in (w0, w1, w2))
    n = img.shape[0]
    for axis in (0, 1):
        pad = np.pad(img, [(2, 2) if a == axis else (0, 0) for a in range(3)], mode="edge")
        tap = [pad[i:i + n] if axis == 0 else pad[:, i:i + n] for i in range(5)]
        out = tap[2] * w0
        tmp = np.add(tap[1], tap[3])
        tmp *= w1
        out += tmp
        np.add(tap[0], tap[4], out=tmp)
        tmp *= w2
        out += tmp
        img = out
    return img


def post_process(img: np.ndarray, post: dict) -> np.ndarray:
    """Lighting, blur and sensor noise; (S, S, 3) float32 -> uint8."""
    size = img.shape[0]
    if post.get("light"):
        ang, strength, gain = post["light"]
        pix = np.linspace(-0.5, 0.5, size, dtype=np.float32)
        a = math.radians(ang)
        g = gain * (1.0 + strength * (pix[:, None] * math.sin(a) + pix[None, :] * math.cos(a)))
        img *= g[..., None]  # the canvas is ours to change
    if post.get("blur", 0) > 0:
        img = _blur(img, post["blur"])
    sigma = post.get("noise", 0)
    if sigma > 0:
        oy, ox = post["noise_offset"]
        img += sigma * _noise_bank(size)[oy:oy + size, ox:ox + size]
    return np.clip(img, 0, 255, out=img).astype(np.uint8)
