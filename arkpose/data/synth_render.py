"""SynthPose rendering: sample a scene from a numpy Generator, paint it, annotate it.

A person is a small 3D stick model (X = the person's left, Y = down, Z = the way the person
faces; unit = standing height) posed by joint angles, turned by a yaw about the vertical,
projected orthographically, rotated in the image plane, scaled and placed. Body parts are
flat shapes (capsules, polygons, circles) painted far to near, so self-occlusion and the
overlap order between persons come from the painting itself. Every painted pixel records
which (person, part) is on top in a label map; keypoint visibility is read from that map.

Everything random is drawn from the Generator passed in, in a fixed order, so a scene is a
pure function of its seed. Painting is a pure function of the scene.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

K = 17
# Part ids (label-map values within a person slot); 0 = nothing painted.
TORSO, NECK, HEAD = 1, 2, 3
UPPER_ARM = (4, 5)  # (left, right)
LOWER_ARM = (6, 7)
HAND = (8, 9)
THIGH = (10, 11)
SHIN = (12, 13)
FOOT = (14, 15)
EAR = (16, 17)
NOSE_PART, HAIR = 18, 19
EYE = (20, 21)
MOUTH = 22
OCCLUDER = 31  # part id of a non-person object painted in front of persons (slot 0)
SLOT = 32  # label = slot * SLOT + part; slot 0: occluders, 1: crowd cluster, 2+: persons
FIRST_PERSON_SLOT = 2

_HEAD_GROUP = (HEAD, HAIR, NOSE_PART, EYE[0], EYE[1], MOUTH, EAR[0], EAR[1])
# Parts whose pixels show keypoint k (COCO order) when they are on top at its position.
OWN_PARTS: tuple[frozenset, ...] = (
    frozenset(_HEAD_GROUP),  # nose
    frozenset(_HEAD_GROUP),  # left eye
    frozenset(_HEAD_GROUP),  # right eye
    frozenset(_HEAD_GROUP),  # left ear
    frozenset(_HEAD_GROUP),  # right ear
    frozenset({UPPER_ARM[0]}), frozenset({UPPER_ARM[1]}),  # shoulders (+torso if near side)
    frozenset(UPPER_ARM[:1] + LOWER_ARM[:1]), frozenset(UPPER_ARM[1:] + LOWER_ARM[1:]),
    frozenset(LOWER_ARM[:1] + HAND[:1]), frozenset(LOWER_ARM[1:] + HAND[1:]),
    frozenset({THIGH[0]}), frozenset({THIGH[1]}),  # hips (+torso if near side)
    frozenset(THIGH[:1] + SHIN[:1]), frozenset(THIGH[1:] + SHIN[1:]),
    frozenset(SHIN[:1] + FOOT[:1]), frozenset(SHIN[1:] + FOOT[1:]),
)
TORSO_JOINTS = (5, 6, 11, 12)
_OWN_TABLE = np.zeros((K, 32), bool)  # [k, part]: part shows keypoint k
for _k, _parts_k in enumerate(OWN_PARTS):
    _OWN_TABLE[_k, list(_parts_k)] = True
_TORSO_JOINT = np.isin(np.arange(K), TORSO_JOINTS)

POSES = ("standing", "walking", "running", "sitting", "arms_raised", "bending", "lying",
         "acrobatic")
FACINGS = ("front", "back", "profile")

# Body proportions as fractions of standing height (a ~7.5-head adult figure).
BODY = {
    "head_r": 0.065, "neck": 0.035, "torso": 0.30, "shoulder": 0.105, "hip": 0.065,
    "upper_arm": 0.165, "lower_arm": 0.145, "hand": 0.065, "thigh": 0.245, "shin": 0.24,
    "foot": 0.085, "chest_depth": 0.06,
}
WIDTH = {  # full widths, fractions of height
    "neck": 0.05, "upper_arm": 0.052, "lower_arm": 0.042, "hand": 0.045, "thigh": 0.085,
    "shin": 0.062, "foot": 0.045, "torso_shoulder": 0.125, "torso_waist": 0.09,
    "torso_hip": 0.105,
}

SKIN = np.array([
    (255, 224, 196), (241, 194, 158), (224, 172, 130), (198, 134, 94), (160, 102, 66),
    (120, 76, 50), (92, 58, 40), (232, 190, 172),
], np.float32)
HAIR_COLOURS = np.array([
    (20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 165, 100), (150, 150, 150),
    (140, 60, 30), (235, 225, 210),
], np.float32)


# ---------------------------------------------------------------------------------------
# Scene description


@dataclass
class Person:
    """One figure: where, how big, how turned, in which pose and clothes.

    ``center`` is the pelvis in image pixels; ``rotation_deg`` turns the body's up axis
    (pelvis to neck of an upright torso) to image direction (sin r, -cos r), i.e. positive
    is clockwise on screen; ``yaw_deg`` 0 faces the camera, +90 faces image right.
    ``angles``: bend, lean, nod, then (flexion, abduction, elbow) per arm and
    (flexion, abduction, knee) per leg, left before right, degrees.
    """

    center: tuple[float, float]
    height_px: float
    rotation_deg: float
    yaw_deg: float
    pose: str
    angles: tuple[float, ...]  # 15 numbers, see above
    proportions: tuple[float, ...]  # per BODY key, multiplicative (about 0.85-1.15)
    build: float = 1.0  # width factor
    skin: tuple[float, float, float] = (224.0, 172.0, 130.0)
    hair: tuple[float, float, float] = (40.0, 30.0, 20.0)
    shirt: tuple[float, float, float] = (60.0, 90.0, 160.0)
    trousers: tuple[float, float, float] = (50.0, 50.0, 60.0)
    shoes: tuple[float, float, float] = (30.0, 30.0, 30.0)
    long_sleeves: bool = True
    long_trousers: bool = True
    # (kind 0 none / 1 stripes / 2 checks, period in body units, angle deg, amplitude)
    shirt_pattern: tuple[float, float, float, float] = (0.0, 0.05, 0.0, 0.0)
    trouser_pattern: tuple[float, float, float, float] = (0.0, 0.05, 0.0, 0.0)

    @property
    def facing(self) -> str:
        a = abs(_wrap(self.yaw_deg))
        return "front" if a <= 45 else "back" if a >= 135 else "profile"


@dataclass
class Scene:
    """Everything needed to paint one image (no randomness left)."""

    size: int
    persons: list[Person]  # painted in list order: far to near
    background: dict = field(default_factory=lambda: {"kind": "flat", "color": (128, 128, 128)})
    distractors: list[dict] = field(default_factory=list)  # painted behind persons
    occluders: list[dict] = field(default_factory=list)  # painted in front of persons
    crowd: list[Person] = field(default_factory=list)  # tiny figures of an iscrowd region
    post: dict = field(default_factory=dict)  # lighting, blur, noise (with its own seed)


# ---------------------------------------------------------------------------------------
# Geometry


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def _v(*terms) -> tuple[float, float, float]:
    """Sum of scaled 3-vectors: _v((s1, a), (s2, b), ...) = s1 a + s2 b + ... (plain floats:
    far cheaper than numpy for a handful of 3-vectors)."""
    x = y = z = 0.0
    for s, a in terms:
        x += s * a[0]
        y += s * a[1]
        z += s * a[2]
    return (x, y, z)


def _limb(flex: float, abd: float, side: float) -> tuple[float, float, float]:
    """Unit limb direction in the body frame: flexion swings forward (+Z), abduction out."""
    f, a = math.radians(flex), math.radians(abd)
    ca = math.cos(a)
    return (side * math.sin(a), ca * math.cos(f), ca * math.sin(f))


# Order of the body-frame points after the 17 keypoints.
HELPERS = ("pelvis", "neck", "head", "hand0", "hand1", "toe0", "toe1", "hair", "mouth")
# Face points as multiples of the head radius along (forward, left, up) of the head.
_FACE = ((1.0, 0.0, -0.12),  # nose
         (0.78, 0.36, 0.12), (0.78, -0.36, 0.12),  # left, right eye
         (-0.12, 0.97, 0.02), (-0.12, -0.97, 0.02))  # left, right ear


def skeleton_3d(p: Person) -> dict:
    """Body-frame points (unit = standing height, pelvis at the origin).

    Returns ``points`` (17 + len(HELPERS), 3): the 17 keypoints, then the helper points
    the painter needs (pelvis, neck base, head centre, hand and toe ends, a point up and
    back from the head giving the hair direction, the mouth); ``kp`` = the first 17;
    the head axes ``head_up``, ``head_fwd``, ``lat``; the segment lengths ``L``.
    """
    L = {k: BODY[k] * f for k, f in zip(BODY, p.proportions)}
    bend, lean, nod = (math.radians(a) for a in p.angles[:3])
    cl, sl = math.cos(lean), math.sin(lean)
    up = (sl, -cl * math.cos(bend), cl * math.sin(bend))
    lat = (cl, sl, 0.0)  # towards the person's left
    hb = bend + nod
    hu = (sl, -cl * math.cos(hb), cl * math.sin(hb))
    # forward of the head = head_up x lat, normalised: (0, sin, cos) of the nod when upright
    fx, fy, fz = hu[1] * lat[2] - hu[2] * lat[1], hu[2] * lat[0] - hu[0] * lat[2], \
        hu[0] * lat[1] - hu[1] * lat[0]
    n = math.sqrt(fx * fx + fy * fy + fz * fz)
    hf = (fx / n, fy / n, fz / n)
    r = L["head_r"]
    origin = (0.0, 0.0, 0.0)
    neck = _v((L["torso"], up))
    head = _v((1.0, neck), (L["neck"] + r, hu))
    pts = [_v((1.0, head), (r * f, hf), (r * s, lat), (r * u, hu)) for f, s, u in _FACE]
    a = p.angles
    arm, leg, hand, toe = [[None, None] for _ in range(4)]
    for s, side in ((0, 1.0), (1, -1.0)):
        f, ab, el = a[3 + 3 * s: 6 + 3 * s]
        sh = _v((1.0, neck), (side * L["shoulder"], lat))
        lo = _limb(f + el, ab, side)
        elbow = _v((1.0, sh), (L["upper_arm"], _limb(f, ab, side)))
        wrist = _v((1.0, elbow), (L["lower_arm"], lo))
        arm[s] = (sh, elbow, wrist)
        hand[s] = _v((1.0, wrist), (L["hand"], lo))
        f, ab, kn = a[9 + 3 * s: 12 + 3 * s]
        hip = _v((side * L["hip"], lat))
        shin = _limb(f - kn, ab, side)  # the knee bends backwards
        knee = _v((1.0, hip), (L["thigh"], _limb(f, ab, side)))
        ankle = _v((1.0, knee), (L["shin"], shin))
        leg[s] = (hip, knee, ankle)
        toe[s] = _v((1.0, ankle), (0.035, shin), (L["foot"], _limb(f - kn + 90.0, ab, side)))
    for j in range(3):  # shoulders, elbows, wrists, hips, knees, ankles: left then right
        pts += [arm[0][j], arm[1][j]]
    for j in range(3):
        pts += [leg[0][j], leg[1][j]]
    hair = _v((1.0, head), (1.0, hu), (-0.7, hf))
    mouth = _v((1.0, head), (0.85 * r, hf), (-0.5 * r, hu))
    pts += [origin, neck, head, hand[0], hand[1], toe[0], toe[1], hair, mouth]
    points = np.array(pts)
    return {"points": points, "kp": points[:K], "head_up": hu, "head_fwd": hf, "lat": lat,
            "L": L}


def _project(p: Person, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame points (..., 3) -> image points (..., 2) and depth (...) in body units."""
    y = math.radians(p.yaw_deg)
    cy, sy = math.cos(y), math.sin(y)
    x = X[..., 0] * cy + X[..., 2] * sy
    depth = X[..., 0] * sy - X[..., 2] * cy
    r = math.radians(p.rotation_deg)
    cr, sr = math.cos(r), math.sin(r)
    h = p.height_px
    u = (x * cr - X[..., 1] * sr) * h + p.center[0]
    v = (x * sr + X[..., 1] * cr) * h + p.center[1]
    out = np.empty(u.shape + (2,))
    out[..., 0] = u
    out[..., 1] = v
    return out, depth


def face_visibility(p: Person) -> np.ndarray:
    """(17,) int: the facing rule for the head keypoints (2 shown, 1 hidden, 0 unlabelled).

    Back: nose and eyes unlabelled; profile: the far eye and ear labelled but hidden.
    Body keypoints get 2 here; occlusion is decided later from the label map.
    """
    v = np.full(K, 2, np.int64)
    facing = p.facing
    if facing == "back":
        v[:3] = 0
    elif facing == "profile":
        far = 0 if _wrap(p.yaw_deg) > 0 else 1  # facing image right shows the right side
        v[1 + far] = 1
        v[3 + far] = 1
    return v


# ---------------------------------------------------------------------------------------
# Painting


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
    xy, depth = _project(p, X)
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


def _rasterise(parts: list, size: int, box=None) -> tuple[np.ndarray | None, int, int]:
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
    ys = _wrap(p.yaw_deg)
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
    lab, x0, y0 = _rasterise(parts, size, box)
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
    lab, x0, y0 = _rasterise(parts, size)
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


# ---------------------------------------------------------------------------------------
# Painting and annotating a whole scene


@dataclass
class Rendered:
    """A painted scene: the image, the top label map and each person's geometry."""

    image: np.ndarray  # (S, S, 3) uint8 (before JPEG)
    label: np.ndarray  # (S, S) int32: slot * 32 + part of the topmost painted thing
    keypoints: list[np.ndarray]  # per person (17, 2) image pixels
    depths: list[np.ndarray]  # per person (17,) depth relative to the torso
    rules: list[np.ndarray]  # per person (17,) facing rule
    masks: list[np.ndarray | None]  # per person full silhouette (keep_masks) else None
    boxes: list[tuple[int, int, int, int]]  # per person crop (x0, y0, x1, y1) of its pixels
    crowd_box: tuple[int, int, int, int]  # the same for the crowd cluster


def paint_scene(scene: Scene, keep_masks: bool = False) -> Rendered:
    """Paint background, distractors, the crowd cluster, persons (far to near), occluders."""
    size = scene.size
    canvas = paint_background(scene.background, size)
    label = np.zeros((size, size), np.int32)
    for d in scene.distractors:
        paint_object(canvas, None, d)
    cb = [size, size, 0, 0]
    for p in scene.crowd:
        box = paint_person(canvas, label, p, 1)[3]
        if box[2] > box[0]:
            cb = [min(cb[0], box[0]), min(cb[1], box[1]), max(cb[2], box[2]),
                  max(cb[3], box[3])]
    kps, deps, rules, boxes, masks = [], [], [], [], []
    for i, p in enumerate(scene.persons):
        kp, dp, rule, box, m = paint_person(canvas, label, p, FIRST_PERSON_SLOT + i,
                                            keep_masks)
        kps.append(kp)
        deps.append(dp)
        rules.append(rule)
        boxes.append(box)
        masks.append(m)
    for d in scene.occluders:
        paint_object(canvas, label, d)
    image = post_process(canvas, scene.post)
    crowd_box = tuple(cb) if cb[2] > cb[0] else (0, 0, 0, 0)
    return Rendered(image, label, kps, deps, rules, masks, boxes, crowd_box)


def visibility(label: np.ndarray, slot: int, kp_xy: np.ndarray, kp_depth: np.ndarray,
               rule: np.ndarray, torso_near: float = 0.08) -> np.ndarray:
    """(17,) COCO visibility of one person's keypoints from the painted label map.

    0: outside the image or unlabelled by the facing rule; 1: labelled but hidden (by a
    nearer person, an occluder, or its own body); 2: its own part is on top at the pixel.
    A shoulder or hip also counts as shown on the torso when it is on the near side.
    """
    size = label.shape[0]
    x, y = kp_xy[:, 0], kp_xy[:, 1]
    inside = (x >= 0) & (x <= size - 1) & (y >= 0) & (y <= size - 1)
    ix = np.clip(np.rint(x), 0, size - 1).astype(np.intp)  # rint: half to even, as round()
    iy = np.clip(np.rint(y), 0, size - 1).astype(np.intp)
    lab = label[iy, ix]
    part = lab % SLOT
    own = (lab // SLOT == slot) & (
        _OWN_TABLE[np.arange(K), part]
        | (_TORSO_JOINT & (part == TORSO) & (kp_depth <= torso_near)))
    v = np.where(own, 2, 1)
    v[rule == 1] = 1
    v[(rule == 0) | ~inside] = 0
    return v


def rle_uncompressed(crop: np.ndarray, box: tuple[int, int, int, int],
                     shape: tuple[int, int]) -> dict:
    """COCO uncompressed RLE (column-major runs, zeros first) of a (H, W) mask that is
    zero outside ``box`` = (x0, y0, x1, y1), given its ``crop`` (y1 - y0, x1 - x0) bool."""
    h, w = shape
    x0, y0, x1, y1 = box
    cols = np.zeros((x1 - x0, h), np.int8)
    cols[:, y0:y1] = crop.T
    flat = cols.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    counts[0] += x0 * h  # whole empty columns before and after the box
    tail = (w - x1) * h
    if tail:
        if flat.size and flat[-1] == 1:
            counts.append(tail)
        else:
            counts[-1] += tail
    return {"counts": counts, "size": [int(h), int(w)]}  # counts: python ints (tolist)


def _region(label_slots: np.ndarray, slot: int, box) -> tuple | None:
    """(crop mask, area, bbox xywh) of a slot's visible pixels within its box, or None."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return None
    crop = label_slots[y0:y1, x0:x1] == slot
    area = int(crop.sum())
    if area == 0:
        return None
    rows = np.flatnonzero(crop.any(1))
    cols = np.flatnonzero(crop.any(0))
    bbox = [float(x0 + cols[0]), float(y0 + rows[0]), float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1)]
    return crop, area, bbox


def annotate(scene: Scene, r: Rendered, tiny_px: float) -> list[dict]:
    """COCO annotations (without ids) for a painted scene, crowd region first.

    Segmentations are uncompressed RLE (as COCO's crowd regions; pycocotools and
    xtcocotools ``frPyObjects`` read them); ``area`` is the visible pixel count and
    ``bbox`` the visible silhouette's box. Persons fully hidden or off-image are dropped;
    persons shorter than ``tiny_px`` get ``num_keypoints = 0`` (as COCO annotates tiny
    people) but keep their silhouette.
    """
    anns = []
    shape = r.label.shape
    slots = r.label // SLOT
    reg = _region(slots, 1, r.crowd_box) if scene.crowd else None
    if reg is not None:
        crop, area, bbox = reg
        anns.append({
            "category_id": 1, "iscrowd": 1,
            "segmentation": rle_uncompressed(crop, r.crowd_box, shape),
            "area": float(area), "bbox": bbox, "keypoints": [0] * (3 * K),
            "num_keypoints": 0, "synth": {"crowd_figures": len(scene.crowd)},
        })
    for i, p in enumerate(scene.persons):
        slot = FIRST_PERSON_SLOT + i
        reg = _region(slots, slot, r.boxes[i])
        if reg is None:
            continue
        crop, area, bbox = reg
        v = visibility(r.label, slot, r.keypoints[i], r.depths[i], r.rules[i])
        if p.height_px < tiny_px:
            v[:] = 0
        xy = np.where(v[:, None] > 0, np.round(r.keypoints[i], 2), 0.0).tolist()
        kp = [c for (x, y), vis in zip(xy, v.tolist()) for c in (x, y, vis)]
        anns.append({
            "category_id": 1, "iscrowd": 0,
            "segmentation": rle_uncompressed(crop, r.boxes[i], shape),
            "area": float(area), "bbox": bbox, "keypoints": kp,
            "num_keypoints": int((v > 0).sum()),
            "synth": {
                "rotation_deg": round(float(_wrap(p.rotation_deg)), 3),
                "height_px": round(float(p.height_px), 3),
                "facing": p.facing,
                "yaw_deg": round(float(_wrap(p.yaw_deg)), 3),
                "pose": p.pose,
                "depth_order": i,
                "center": [round(float(p.center[0]), 3), round(float(p.center[1]), 3)],
            },
        })
    return anns


def crowd_index(anns: list[dict]) -> float:
    """CrowdPose crowd index: mean over persons of (others' joints in my box) / (my joints)."""
    people = [a for a in anns if not a["iscrowd"] and a["num_keypoints"] > 0]
    if not people:
        return 0.0
    pts = [np.asarray(a["keypoints"], float).reshape(-1, 3) for a in people]
    pts = [q[q[:, 2] > 0, :2] for q in pts]
    total = 0.0
    for i, a in enumerate(people):
        x, y, w, h = a["bbox"]
        n_b = 0
        for j, q in enumerate(pts):
            if j != i:
                n_b += int(((q[:, 0] >= x) & (q[:, 0] <= x + w)
                            & (q[:, 1] >= y) & (q[:, 1] <= y + h)).sum())
        total += n_b / len(pts[i])
    return total / len(people)


# ---------------------------------------------------------------------------------------
# Sampling (all randomness lives here)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()  # scalar random(): cheaper than uniform()


def sample_pose(rng: np.random.Generator, kind: str) -> tuple[float, ...]:
    """15 joint angles (degrees) from the pose prior for ``kind`` (see :class:`Person`)."""
    def n(s: float) -> float:
        return s * rng.standard_normal()

    bend, lean, nod = n(5), n(4), n(8)
    arms, legs = [], []
    if kind in ("standing", "lying"):
        for _ in range(2):
            arms.append((n(12), _u(rng, 4, 25), _u(rng, 0, 30)))
            legs.append((n(5), _u(rng, 1, 9), _u(rng, 0, 10)))
        if kind == "lying" and rng.random() < 0.5:  # one knee up, arms loose
            legs[0] = (_u(rng, 20, 70), _u(rng, 0, 15), _u(rng, 30, 100))
            arms[1] = (_u(rng, -30, 120), _u(rng, 10, 90), _u(rng, 0, 90))
    elif kind in ("walking", "running"):
        amp_a, amp_l, el, kn = ((_u(rng, 12, 35), _u(rng, 12, 30), (5, 40), (0, 35))
                                if kind == "walking" else
                                (_u(rng, 35, 70), _u(rng, 30, 55), (60, 110), (20, 110)))
        ph = math.sin(_u(rng, 0, 2 * math.pi))
        if kind == "running":
            bend = _u(rng, 5, 20)
        for s, sign in ((0, 1.0), (1, -1.0)):
            arms.append((sign * amp_a * ph + n(5), _u(rng, 3, 15), _u(rng, *el)))
            swing = -sign * amp_l * ph
            # the leg swinging back bends its knee
            legs.append((swing + n(4), _u(rng, 1, 8),
                         _u(rng, *kn) if swing < 0 or kind == "running" else _u(rng, 0, 12)))
    elif kind == "sitting":
        for _ in range(2):
            arms.append((_u(rng, 0, 50), _u(rng, 3, 20), _u(rng, 10, 80)))
            legs.append((_u(rng, 70, 100), _u(rng, 2, 20), _u(rng, 65, 105)))
    elif kind == "arms_raised":
        both = rng.random() < 0.7
        for s in range(2):
            if both or s == 0:
                if rng.random() < 0.5:
                    arms.append((n(15), _u(rng, 95, 175), _u(rng, 0, 45)))
                else:
                    arms.append((_u(rng, 110, 180), _u(rng, 5, 30), _u(rng, 0, 45)))
            else:
                arms.append((n(12), _u(rng, 4, 25), _u(rng, 0, 30)))
            legs.append((n(5), _u(rng, 2, 15), _u(rng, 0, 10)))
    elif kind == "bending":
        bend = _u(rng, 35, 95)
        nod = -_u(rng, 0, 40)
        for _ in range(2):
            arms.append((bend * _u(rng, 0.5, 1.1) + n(10), _u(rng, 0, 15), _u(rng, 0, 40)))
            legs.append((n(6), _u(rng, 1, 10), _u(rng, 0, 25)))
    else:  # acrobatic: anything a gymnast might do
        bend, lean, nod = _u(rng, -35, 90), _u(rng, -30, 30), n(20)
        for _ in range(2):
            arms.append((_u(rng, -60, 200), _u(rng, 0, 170), _u(rng, 0, 140)))
            legs.append((_u(rng, -45, 140), _u(rng, 0, 80), _u(rng, 0, 140)))
    return (bend, lean, nod, *arms[0], *arms[1], *legs[0], *legs[1])


def _colour(rng: np.random.Generator, sat=(0.2, 0.9), val=(0.25, 0.95)) -> tuple:
    r, g, b = colorsys.hsv_to_rgb(_u(rng, 0, 1), _u(rng, *sat), _u(rng, *val))
    return (255.0 * r, 255.0 * g, 255.0 * b)


def sample_person(rng: np.random.Generator, cfg, center, height: float) -> Person:
    """One person with pose, facing, rotation, proportions and clothes from ``cfg``."""
    kind = POSES[_pick(rng, cfg.pose_weights)]
    angles = sample_pose(rng, kind)
    facing = _pick(rng, cfg.facing_weights)
    if facing == 0:
        yaw = _u(rng, -40, 40)
    elif facing == 1:
        yaw = 180.0 + _u(rng, -40, 40)
    else:
        yaw = (1.0 if rng.random() < 0.5 else -1.0) * _u(rng, 60, 120)
    if rng.random() < cfg.upright_share:
        rot = _u(rng, -cfg.upright_range, cfg.upright_range)
    else:
        rot = _u(rng, -180, 180)
    if kind == "lying":  # lying is a standing pose turned by about 90 degrees
        rot = (1.0 if rng.random() < 0.5 else -1.0) * _u(rng, 70, 110)
    v = cfg.proportion_var
    props = tuple(float(x) for x in rng.uniform(1 - v, 1 + v, len(BODY)))
    build = _u(rng, 0.8, 1.25)
    shirt = _colour(rng)
    trousers = _colour(rng, sat=(0.05, 0.7), val=(0.15, 0.8))
    def pattern() -> tuple[float, float, float, float]:
        return (float(_pick(rng, (0.55, 0.3, 0.15))), _u(rng, 0.015, 0.05), _u(rng, -90, 90),
                _u(rng, 0.15, 0.45))

    return Person(
        center=(float(center[0]), float(center[1])), height_px=float(height),
        rotation_deg=rot, yaw_deg=_wrap(yaw), pose=kind, angles=angles, proportions=props,
        build=build,
        skin=tuple(float(c) for c in SKIN[int(rng.integers(len(SKIN)))]),
        hair=tuple(float(c) for c in HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))]),
        shirt=shirt, trousers=trousers, shoes=_colour(rng, sat=(0.0, 0.5), val=(0.05, 0.5)),
        long_sleeves=bool(rng.random() < 0.6), long_trousers=bool(rng.random() < 0.75),
        shirt_pattern=pattern(), trouser_pattern=pattern(),
    )


def _pick(rng: np.random.Generator, weights) -> int:
    """Index drawn with probability proportional to ``weights``."""
    u = rng.random() * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return len(weights) - 1


def sample_background(rng: np.random.Generator, cfg, size: int) -> dict:
    bg = {"kind": "gradient", "angle": _u(rng, 0, 360), "c0": _colour(rng, (0, 0.6), (0.2, 1)),
          "c1": _colour(rng, (0, 0.6), (0.2, 1)), "blotch": None, "stripes": None,
          "shapes": []}
    c = cfg.clutter
    if rng.random() < 0.3 + 0.5 * c:
        k = int(rng.integers(3, 9))
        bg["blotch"] = rng.integers(0, 256, (k, k, 3)).astype(np.uint8).tolist()
        bg["blotch_mix"] = _u(rng, 0.2, 0.7)
    if rng.random() < 0.35 * c:
        bg["stripes"] = (_u(rng, 4, 0.3 * size), _u(rng, 0, 180), _u(rng, 0.1, 0.35))
    for _ in range(int(rng.poisson(6 * c))):
        kind = int(rng.integers(3))
        x, y = rng.uniform(-0.1, 1.1, 2) * size
        w, h = rng.uniform(0.03, 0.4, 2) * size
        if kind < 2:
            box = [float(x), float(y), float(x + w), float(y + h)]
        else:
            box = [(float(a), float(b)) for a, b in
                   zip(x + rng.uniform(-1, 1, 3) * w, y + rng.uniform(-1, 1, 3) * h)]
        bg["shapes"].append((kind, box, _colour(rng)))
    return bg


def sample_object(rng: np.random.Generator, size: int, scale: float) -> dict:
    """A limb-like distractor: a stick, a bent pair of sticks (an arm), or a blob."""
    kind = ("stick", "pair", "blob")[_pick(rng, (0.45, 0.35, 0.2))]
    color = (SKIN[int(rng.integers(len(SKIN)))].tolist() if rng.random() < 0.5
             else list(_colour(rng)))
    x, y = rng.uniform(0, 1, 2) * size
    if kind == "blob":
        return {"kind": "blob", "geom": (float(x), float(y), _u(rng, 0.04, 0.1) * scale),
                "color": color}
    segs = []
    ang = _u(rng, 0, 2 * math.pi)
    w = _u(rng, 0.04, 0.09) * scale
    for _ in range(1 if kind == "stick" else 2):
        ln = _u(rng, 0.12, 0.3) * scale
        x1, y1 = x + ln * math.cos(ang), y + ln * math.sin(ang)
        segs.append((float(x), float(y), float(x1), float(y1), max(w, 1.0)))
        x, y = x1, y1
        ang += _u(rng, -2.0, 2.0)
    return {"kind": kind, "geom": segs, "color": color}


def _log_uniform(rng, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(max(hi, lo * 1.0001)))))


def sample_scene(cfg, rng: np.random.Generator) -> Scene:
    """A random scene from the difficulty knobs of ``cfg`` (a SynthConfig)."""
    size = cfg.size
    bg = sample_background(rng, cfg, size)
    crowded = rng.random() < cfg.crowd_share
    if crowded:
        n = int(rng.integers(cfg.crowd_min_persons, cfg.crowd_max_persons + 1))
        hi = cfg.crowd_max_height * size
    else:
        n = 0 if rng.random() < cfg.empty_share else int(rng.integers(1, cfg.max_persons + 1))
        hi = cfg.max_height * size
    heights, closeup = [], []
    for _ in range(n):
        u = rng.random()
        closeup.append(u >= 1.0 - cfg.closeup_share)
        if u < cfg.tiny_share:
            heights.append(_u(rng, cfg.tiny_min_px, cfg.tiny_px))
        elif closeup[-1]:  # upper-body shots, cut by the image border (COCO's large persons)
            heights.append(_log_uniform(rng, hi, cfg.closeup_max_height * size))
        else:
            heights.append(_log_uniform(rng, cfg.min_height_px, hi))
    # Placement: some persons join an earlier one so that bodies overlap.
    centers: list[tuple[float, float]] = []
    for i, h in enumerate(heights):
        if closeup[i]:  # pelvis near the bottom edge so that head and torso show
            c = (_u(rng, 0.2, 0.8) * size, size + _u(rng, -0.15, 0.1) * h)
        elif centers and rng.random() < cfg.overlap:
            j = int(rng.integers(len(centers)))
            hj = heights[j]
            dx = (1.0 if rng.random() < 0.5 else -1.0) * _u(rng, 0.08, 0.35) * (hj + h) / 2
            dy = _u(rng, -0.15, 0.15) * (hj + h) / 2
            c = (centers[j][0] + dx, centers[j][1] + dy)
        else:
            m = cfg.margin
            c = tuple(float(x) for x in rng.uniform(-m, 1 + m, 2) * size)
        centers.append(c)
    persons = [sample_person(rng, cfg, c, h) for c, h in zip(centers, heights)]
    # Depth order: small persons tend to be far; painted far to near.
    keys = [math.log(p.height_px) + float(rng.normal(0, 0.4)) for p in persons]
    persons = [persons[i] for i in np.argsort(keys, kind="stable")]
    distractors = []
    n_d = int(rng.poisson(cfg.distractors))
    for _ in range(n_d):
        distractors.append(sample_object(rng, size, _log_uniform(rng, 0.1 * size, 0.8 * size)))
    occluders = []
    if rng.random() < cfg.occluder_share:
        for _ in range(int(rng.integers(1, 3))):
            occluders.append(sample_object(rng, size, _log_uniform(rng, 0.2 * size, size)))
    crowd = []
    if rng.random() < cfg.crowd_region_share:
        cx, cy = _u(rng, 0.2, 0.8) * size, _u(rng, 0.1, 0.6) * size
        w, hh = _u(rng, 0.15, 0.4) * size, _u(rng, 0.06, 0.15) * size
        for _ in range(int(rng.integers(8, 26))):
            c = (cx + _u(rng, -w / 2, w / 2), cy + _u(rng, -hh / 2, hh / 2))
            crowd.append(sample_person(rng, cfg, c, _u(rng, cfg.tiny_min_px, cfg.tiny_px)))
        crowd.sort(key=lambda q: q.center[1])
    post = {
        "light": (_u(rng, 0, 360), _u(rng, 0, 0.8) * cfg.lighting, _u(rng, 1 - 0.35 * cfg.lighting,
                                                                    1 + 0.25 * cfg.lighting)),
        "blur": _u(rng, 0.3, cfg.max_blur) if rng.random() < cfg.blur_share else 0.0,
        "noise": _u(rng, 0, cfg.max_noise),
        "noise_offset": (int(rng.integers(size)), int(rng.integers(size))),
        "jpeg_quality": int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)),
    }
    return Scene(size=size, persons=persons, background=bg, distractors=distractors,
                 occluders=occluders, crowd=crowd, post=post)
