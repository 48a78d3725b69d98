"""SynthPose sampling: all randomness lives here. Everything is drawn from the Generator passed
in, in a fixed order, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import colorsys
import math
from typing import TYPE_CHECKING

import numpy as np

from arkpose.data.synth_render.scene import BODY, HAIR_COLOURS, POSES, SKIN, Person, Scene, wrap_deg

if TYPE_CHECKING:  # synth imports this package
    from arkpose.data.synth import SynthConfig


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()  # scalar random(): cheaper than _u()


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


def sample_person(rng: np.random.Generator, cfg: SynthConfig, center, height: float) -> Person:
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
        rotation_deg=rot, yaw_deg=wrap_deg(yaw), pose=kind, angles=angles, proportions=props,
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


def sample_background(rng: np.random.Generator, cfg: SynthConfig, size: int) -> dict:
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


def sample_scene(cfg: SynthConfig, rng: np.random.Generator) -> Scene:
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
