"""SynthPose figure geometry: the 3D stick model of a :class:`Person` and its projection.

Body frame: X = the person's left, Y = down, Z = the way the person faces; unit = standing
height, pelvis at the origin. The projection is orthographic after a yaw about the vertical,
then rotated in the image plane, scaled and placed.
"""

from __future__ import annotations

import math

import numpy as np

from arkpose.data.synth_render.scene import BODY, K, Person, wrap_deg


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


def project(p: Person, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        far = 0 if wrap_deg(p.yaw_deg) > 0 else 1  # facing image right shows the right side
        v[1 + far] = 1
        v[3 + far] = 1
    return v
