"""SynthPose scene description: part ids, body proportions, palettes, :class:`Person` and
:class:`Scene` (a scene holds no randomness; ``sample`` draws one, ``paint_*`` paint it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
OWN_TABLE = np.zeros((K, 32), bool)  # [k, part]: part shows keypoint k
for _k, _parts_k in enumerate(OWN_PARTS):
    OWN_TABLE[_k, list(_parts_k)] = True
TORSO_JOINT_MASK = np.isin(np.arange(K), TORSO_JOINTS)

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




def wrap_deg(deg: float) -> float:
    """An angle in degrees wrapped to [-180, 180)."""
    return (deg + 180.0) % 360.0 - 180.0


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
        a = abs(wrap_deg(self.yaw_deg))
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
