"""SynthPose painting of one person: flat shapes (capsules, polygons, circles) painted far to
near into the canvas and the label map (slot * SLOT + part of the topmost thing).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from arkpose.data.synth_render.geometry import HELPERS, face_visibility, project, skeleton_3d
from arkpose.data.synth_render.scene import (
    EAR,
    EYE,
    FOOT,
    HAIR,
    HAND,
    HEAD,
    LOWER_ARM,
    MOUTH,
    NECK,
    NOSE_PART,
    SHIN,
    SLOT,
    THIGH,
    TORSO,
    UPPER_ARM,
    WIDTH,
    K,
    Person,
    wrap_deg,
)


def _parts(p: Person) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Flat shapes of one person in image pixels, sorted far to near.

    Returns (parts, keypoints (17, 2), keypoint depth relative to the torso (17,),
    face visibility rule (17,), a box (x0, y0, x1, y1) holding every part). A part is
    (part_id, kind, geometry) with kind "cap" (x0, y0, x1, y1, width), "poly"
    ([x, y, ...]), "circle" (x, y, r) or "chord" (x, y, r, start_deg, end_deg).
    """
    P = skeleton_3d(p)
    L = P["L"]
    h = p.height_px
    b = p.build
    names = HELPERS
    X = P["points"]
    xy, depth = project(p, X)
    kp_xy, kp_d = xy[:K], depth[:K]
    e = dict(zip(names, range(K, K + len(names))))
    torso_d = 0.5 * (depth[e["pelvis"]] + depth[e["neck"]])
    ys = math.radians(p.yaw_deg)
    front_view = abs(math.cos(ys))
    shown = face_visibility(p)

    items = []  # (depth, order, part, kind, geometry)
    P2 = xy.tolist()  # python floats: this function handles a few dozen scalars
    D = depth.tolist()

    def cap(part, i, j, width, bias, order, d=None):
        w = max(width * b * h, 1.0)
        dd = 0.5 * (D[i] + D[j]) if d is None else d
        items.append((dd + bias, order, part, "cap", (*P2[i], *P2[j], w)))

    for s in (0, 1):
        cap(THIGH[s], 11 + s, 13 + s, WIDTH["thigh"], 0.02, 1)
        cap(SHIN[s], 13 + s, 15 + s, WIDTH["shin"], 0.02, 1)
        cap(FOOT[s], 15 + s, e[f"toe{s}"], WIDTH["foot"], 0.02, 1)
        cap(UPPER_ARM[s], 5 + s, 7 + s, WIDTH["upper_arm"], 0.0, 3)
        cap(LOWER_ARM[s], 7 + s, 9 + s, WIDTH["lower_arm"], 0.0, 3)
        cap(HAND[s], 9 + s, e[f"hand{s}"], WIDTH["hand"], 0.0, 3)

    # Torso: a six-sided outline whose width is the projected chest cross-section.
    (nx, ny), (px, py) = P2[e["neck"]], P2[e["pelvis"]]
    n = math.hypot(nx - px, ny - py)
    if n > 1e-6 * h:
        perp = (-(ny - py) / n, (nx - px) / n)
    else:  # torso seen end-on: any perpendicular will do
        perp = (1.0, 0.0)
    # the person's left must stay on the side where the left shoulder projects
    if (P2[5][0] - P2[6][0]) * perp[0] + (P2[5][1] - P2[6][1]) * perp[1] < 0:
        perp = (-perp[0], -perp[1])
    depth_half = L["chest_depth"] * abs(math.sin(ys))
    centres = []
    for (cx, cy), wid in (((nx, ny), WIDTH["torso_shoulder"]),
                          ((0.45 * nx + 0.55 * px, 0.45 * ny + 0.55 * py), WIDTH["torso_waist"]),
                          ((px, py), WIDTH["torso_hip"])):
        half = max(math.hypot(wid * b * front_view, depth_half) * h, 0.6)
        centres.append((cx, cy, half))
    outline = []
    for cx, cy, half in centres:
        outline += [cx + half * perp[0], cy + half * perp[1]]
    for cx, cy, half in reversed(centres):
        outline += [cx - half * perp[0], cy - half * perp[1]]
    items.append((torso_d, 2, TORSO, "poly", outline))
    # Head: ears, skull, hair, face details; painted over the neck.
    hd = min(D[e["head"]], torso_d) - 0.02  # the head sits on the neck, over the torso
    cap(NECK, e["neck"], e["head"], WIDTH["neck"], 0.0, 2, d=min(torso_d - 0.001, hd + 0.005))
    hx, hy = P2[e["head"]]
    r = max(L["head_r"] * h, 0.8)
    for s in (0, 1):
        er = max(0.28 * r, 0.5)
        # a shown ear sits over skull and hair; the far ear of a profile hides behind them
        items.append((hd - 0.01 if shown[3 + s] == 2 else hd + 0.01, 4, EAR[s], "circle",
                      (*P2[3 + s], er)))
    items.append((hd, 5, HEAD, "circle", (hx, hy, r)))
    # Hair covers the back-top of the skull: a chord centred on the projection of
    # (up - 0.7 forward); seen from behind it covers the whole head.
    hang = math.degrees(math.atan2(P2[e["hair"]][1] - hy, P2[e["hair"]][0] - hx))
    # half-span: the hairline sits about a third of the radius above the eyes
    facing = p.facing
    span = 180.0 if facing == "back" else 72.0 if facing == "front" else 80.0
    items.append((hd - 0.001, 6, HAIR, "chord", (hx, hy, r * 1.06, hang - span, hang + span)))
    if shown[0] == 2 and r >= 2.5:
        nose_r = max(0.22 * r, 0.6) if facing == "profile" else max(0.12 * r, 0.5)
        items.append((hd - 0.002, 7, NOSE_PART, "circle", (*P2[0], nose_r)))
    if r >= 3.0:
        for s in (0, 1):
            if shown[1 + s] == 2:
                items.append((hd - 0.003, 8, EYE[s], "circle", (*P2[1 + s], max(0.13 * r, 0.5))))
        if facing == "front" and r >= 4.0:
            items.append((hd - 0.003, 8, MOUTH, "circle", (*P2[e["mouth"]], max(0.14 * r, 0.5))))
    items.sort(key=lambda t: (-t[0], t[1]))  # far (large depth) first
    parts = [(part, kind, geom) for _, _, part, kind, geom in items]
    # every shape lies within its defining points plus the widest half-width / hair radius
    pad = max(1.1 * r, 0.5 * max(WIDTH.values()) * b * h, 0.6 * h * (L["chest_depth"]
                                                                      + WIDTH["torso_shoulder"])) + 2
    body = xy[:e["hair"]]  # the hair point is a direction, far outside the figure
    lo, hi = body.min(0), body.max(0)
    box = (lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad)
    return parts, kp_xy, kp_d - torso_d, shown, box


def _geom_box(kind: str, g) -> tuple[float, float, float, float]:
    if kind == "cap":
        x0, y0, x1, y1, w = g
        m = w / 2 + 1
        return min(x0, x1) - m, min(y0, y1) - m, max(x0, x1) + m, max(y0, y1) + m
    if kind == "poly":
        xs, ys = g[0::2], g[1::2]
        return min(xs) - 1, min(ys) - 1, max(xs) + 1, max(ys) + 1
    x, y, r = g[:3]
    return x - r - 1, y - r - 1, x + r + 1, y + r + 1


def _draw(draw: ImageDraw.ImageDraw, kind: str, g, fill: int, ox: float, oy: float) -> None:
    """Rasterise one shape into a crop whose origin is image pixel (ox, oy).

    PIL puts pixel i's centre at i + 0.5; arkpose puts it at i (docs/interfaces.md), so
    shapes shift by half a pixel here. This keeps mirrored scenes mirror images.
    """
    ox, oy = ox - 0.5, oy - 0.5
    if kind == "cap":
        x0, y0, x1, y1, w = g
        x0, y0, x1, y1 = x0 - ox, y0 - oy, x1 - ox, y1 - oy
        r = w / 2
        if w < 2.0:
            draw.line([(x0, y0), (x1, y1)], fill=fill, width=1)
        else:  # a quad of the exact width: PIL's wide lines are not mirror-symmetric
            dx, dy = x1 - x0, y1 - y0
            n = math.hypot(dx, dy)
            if n > 1e-6:
                nx, ny = -dy / n * r, dx / n * r
                draw.polygon([(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny),
                              (x0 - nx, y0 - ny)], fill=fill)
        if r >= 0.75:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=fill)
            draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=fill)
    elif kind == "poly":
        pts = [(g[i] - ox, g[i + 1] - oy) for i in range(0, len(g), 2)]
        draw.polygon(pts, fill=fill)
    elif kind == "circle":
        x, y, r = g
        x, y = x - ox, y - oy
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    else:  # chord
        x, y, r, a0, a1 = g
        x, y = x - ox, y - oy
        draw.chord([x - r, y - r, x + r, y + r], a0, a1, fill=fill)


def rasterise(parts: list, size: int, box=None) -> tuple[np.ndarray | None, int, int]:
    """Parts -> (crop label array uint8 or None if off-image, x offset, y offset).

    ``box`` (x0, y0, x1, y1), when the caller knows one holding every part, saves the
    per-part bounds.
    """
    if box is None:
        boxes = np.array([_geom_box(k, g) for _, k, g in parts])
        box = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
    x0 = max(math.floor(box[0]), 0)
    y0 = max(math.floor(box[1]), 0)
    x1 = min(math.ceil(box[2]) + 1, size)
    y1 = min(math.ceil(box[3]) + 1, size)
    if x1 <= x0 or y1 <= y0:
        return None, 0, 0
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    d = ImageDraw.Draw(img)
    for part, kind, g in parts:
        _draw(d, kind, g, part, x0, y0)
    return np.asarray(img), x0, y0


def _pattern(shape: tuple[int, int], x0: int, y0: int, pat, scale: float) -> np.ndarray | None:
    """Brightness modulation (h, w) for a clothing pattern, or None for plain cloth."""
    kind, period, angle, amp = pat
    if kind == 0 or amp == 0:
        return None
    per = max(period * scale, 2.0)
    ys = np.arange(y0, y0 + shape[0], dtype=np.float32)[:, None] / per
    xs = np.arange(x0, x0 + shape[1], dtype=np.float32)[None, :] / per
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    m = np.floor(xs * ca + ys * sa).astype(np.int32) & 1
    if kind == 2:
        m ^= np.floor(ys * ca - xs * sa).astype(np.int32) & 1
    return 1.0 - amp * m.astype(np.float32)


def _person_lut(p: Person) -> tuple[np.ndarray, np.ndarray]:
    """(32, 3) colour per part and (32,) pattern index (0 none, 1 shirt, 2 trousers)."""
    black = (0.0, 0.0, 0.0)
    col = [black] * SLOT
    pat = [0] * SLOT
    sleeve = p.shirt if p.long_sleeves else p.skin
    leg = p.trousers if p.long_trousers else p.skin
    for parts, c, k in (
        ((HEAD, NECK, *EAR, *HAND), p.skin, 0),
        ((NOSE_PART,), tuple(0.82 * v for v in p.skin), 0),
        ((HAIR,), p.hair, 0),
        (EYE, (25.0, 20.0, 20.0), 0),
        ((MOUTH,), (150.0, 60.0, 60.0), 0),
        ((TORSO, *UPPER_ARM), p.shirt, 1),
        (LOWER_ARM, sleeve, 1 if p.long_sleeves else 0),
        (THIGH, p.trousers, 2),
        (SHIN, leg, 2 if p.long_trousers else 0),
        (FOOT, p.shoes, 0),
    ):
        for part in parts:
            col[part] = c
            pat[part] = k
    return np.array(col, np.float32), np.array(pat, np.int8)


def _shade_side(p: Person, lut: np.ndarray) -> None:
    """Darken the far side's limbs a little: a depth cue that does not name left/right."""
    ys = wrap_deg(p.yaw_deg)
    if abs(ys) < 20 or abs(ys) > 160:
        return
    # yaw > 0 shows the right side; the far (left) limbs get darker
    far = 0 if (0 < ys < 180) else 1
    for parts in (UPPER_ARM, LOWER_ARM, HAND, THIGH, SHIN, FOOT):
        lut[parts[far]] *= 0.8


def paint_person(canvas: np.ndarray, label: np.ndarray, p: Person, slot: int,
                 keep_mask: bool = False):
    """Paint one person over ``canvas`` (S, S, 3) float32 and ``label`` (S, S) int32.

    Returns (keypoints (17, 2), keypoint depth rel. torso (17,), face rule (17,),
    crop box (x0, y0, x1, y1) holding all its pixels, full-image mask of the person's own
    silhouette or None).
    """
    size = canvas.shape[0]
    parts, kp_xy, kp_d, shown, box = _parts(p)
    lab, x0, y0 = rasterise(parts, size, box)
    if lab is None:
        return (kp_xy, kp_d, shown, (0, 0, 0, 0),
                np.zeros((size, size), bool) if keep_mask else None)
    lut, pat = _person_lut(p)
    _shade_side(p, lut)
    # one brightness factor per pixel: cloth patterns times dark outlines
    shade = None
    patl = None
    for idx, pattern in ((1, p.shirt_pattern), (2, p.trouser_pattern)):
        m = _pattern(lab.shape, x0, y0, pattern, p.height_px)
        if m is not None:
            patl = pat[lab] if patl is None else patl
            term = np.where(patl == idx, m, np.float32(1.0))
            shade = term if shade is None else shade * term
    mask = lab > 0
    if p.height_px >= 36:  # outlines separate same-coloured overlapping parts
        edge = np.zeros_like(mask)
        edge[:, 1:] = lab[:, 1:] != lab[:, :-1]
        edge[1:, :] |= lab[1:, :] != lab[:-1, :]
        edge &= mask
        term = np.where(edge, np.float32(0.55), np.float32(1.0))
        shade = term if shade is None else shade * term
    col = lut[lab]
    if shade is not None:
        col *= shade[..., None]
    h, w = lab.shape
    np.copyto(canvas[y0:y0 + h, x0:x0 + w], col, where=mask[..., None])
    np.copyto(label[y0:y0 + h, x0:x0 + w], lab.astype(np.int32) + slot * SLOT, where=mask)
    full = None
    if keep_mask:
        full = np.zeros((size, size), bool)
        full[y0:y0 + h, x0:x0 + w] = mask
    return kp_xy, kp_d, shown, (x0, y0, x0 + w, y0 + h), full
