"""Keypoint layouts: the one description of a dataset's joints that every module reads.

A :class:`KeypointSpec` carries the keypoint names, the horizontal-flip permutation, the
limbs used by the learned pose scoring (docs/method.md §6), the drawing skeleton, the OKS sigmas
and the torso limbs that normalise the scoring features. ``COCO`` and ``CROWDPOSE`` are
built in; a user with another layout constructs one and passes it everywhere a spec goes.
It also holds :data:`OUTPUT_STRIDE`, the other fact that model, targets and decoding share.
"""

from __future__ import annotations

from dataclasses import dataclass

# The heads predict at 1/4 of the input: grid coordinate u is input coordinate 4u
# (docs/method.md §0). The model, the targets, the config checks and decoding read it here.
OUTPUT_STRIDE = 4

Pair = tuple[int, int]


class SpecError(ValueError):
    """A keypoint spec that contradicts itself (bad permutation, limb out of range, ...)."""


@dataclass(frozen=True)
class KeypointSpec:
    """Everything that depends on the keypoint layout.

    Attributes:
        name: short identifier, e.g. ``"coco"``.
        keypoints: K keypoint names in annotation order.
        flip_index: permutation of range(K); joint k of a mirrored image is joint
            ``flip_index[k]`` of the original (left <-> right).
        limbs: joint pairs (a, b), 0-based, used by the scoring features (Δ = p_a − p_b).
        skeleton: joint pairs, 0-based, drawn by the visualisation and written as the
            category skeleton (1-based) in COCO json.
        sigmas: K per-keypoint OKS constants (COCO's ``sigmas``, i.e. already divided by 10).
        torso: limbs whose mean length normalises the scoring features.
        iou_type: the evaluator's ``iouType``: ``"keypoints"`` (COCO, pycocotools) or
            ``"keypoints_crowd"`` (CrowdPose, xtcocotools).
        use_area: whether OKS uses the annotation area (COCO) or the bbox area (CrowdPose).
    """

    name: str
    keypoints: tuple[str, ...]
    flip_index: tuple[int, ...]
    limbs: tuple[Pair, ...]
    skeleton: tuple[Pair, ...]
    sigmas: tuple[float, ...]
    torso: tuple[Pair, ...]
    iou_type: str = "keypoints"
    use_area: bool = True

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        if k == 0:
            raise SpecError(f"spec {self.name!r}: no keypoints")
        if len(set(self.keypoints)) != k:
            raise SpecError(f"spec {self.name!r}: duplicate keypoint names")
        if sorted(self.flip_index) != list(range(k)):
            raise SpecError(
                f"spec {self.name!r}: flip_index must be a permutation of range({k}), "
                f"got {list(self.flip_index)}"
            )
        for i, j in enumerate(self.flip_index):
            if self.flip_index[j] != i:
                raise SpecError(
                    f"spec {self.name!r}: flip_index is not an involution "
                    f"({i} -> {j} -> {self.flip_index[j]})"
                )
        if len(self.sigmas) != k:
            raise SpecError(
                f"spec {self.name!r}: {len(self.sigmas)} sigmas for {k} keypoints"
            )
        if any(s <= 0 for s in self.sigmas):
            raise SpecError(f"spec {self.name!r}: sigmas must be positive")
        for field_name in ("limbs", "skeleton", "torso"):
            for a, b in getattr(self, field_name):
                if not (0 <= a < k and 0 <= b < k) or a == b:
                    raise SpecError(
                        f"spec {self.name!r}: {field_name} pair ({a}, {b}) is out of range "
                        f"for {k} keypoints"
                    )
        if not self.torso:
            raise SpecError(f"spec {self.name!r}: torso needs at least one limb")
        if self.iou_type not in ("keypoints", "keypoints_crowd"):
            raise SpecError(
                f"spec {self.name!r}: iou_type must be 'keypoints' or 'keypoints_crowd'"
            )

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def num_features(self) -> int:
        """Dimension of the learned-scoring feature: 3 per limb (Δx, Δy, length) + K scores."""
        return 3 * len(self.limbs) + self.num_keypoints

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(
                f"spec {self.name!r} has no keypoint {name!r}; it has {list(self.keypoints)}"
            ) from None

    def coco_category(self, category_id: int = 1) -> dict:
        """The COCO json ``categories`` entry for this layout (skeleton 1-based)."""
        return {
            "id": category_id,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(self.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton],
        }


COCO = KeypointSpec(
    name="coco",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_index=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    # docs/method.md §6: the 19 limbs of the official scoring features, in their order.
    limbs=(
        (0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 6), (5, 7), (5, 11),
        (6, 8), (6, 12), (7, 9), (8, 10), (11, 12), (11, 13), (12, 14), (13, 15), (14, 16),
    ),
    # COCO's own category skeleton (person_keypoints_*.json), converted to 0-based.
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    torso=((5, 11), (6, 12)),
)

CROWDPOSE = KeypointSpec(
    name="crowdpose",
    keypoints=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
    ),
    flip_index=(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13),
    # The official CrowdPose scorer's 15 limbs in its order: 3 * 15 + 14 = 59 features.
    limbs=(
        (12, 13), (13, 0), (13, 1), (0, 2), (1, 3), (2, 4), (3, 5), (0, 6), (1, 7), (6, 8),
        (7, 9), (8, 10), (9, 11), (6, 7), (0, 1),
    ),
    skeleton=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7),
        (6, 7), (6, 8), (8, 10), (7, 9), (9, 11),
    ),
    # real_fixtures/README.md: [.79,.79,.72,.72,.62,.62,1.07,1.07,.87,.87,.89,.89,.79,.79]/10
    sigmas=(
        0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
        0.087, 0.087, 0.089, 0.089, 0.079, 0.079,
    ),
    # Shoulder-to-hip on each side, the analogue of COCO's torso (the official CrowdPose
    # scorer picked other joints by a copy slip, docs/method.md §9).
    torso=((0, 6), (1, 7)),
    iou_type="keypoints_crowd",
    use_area=False,
)

SPECS = {"coco": COCO, "crowdpose": CROWDPOSE}


def get_spec(name: str) -> KeypointSpec:
    """The built-in spec called ``name`` (``"coco"`` or ``"crowdpose"``)."""
    try:
        return SPECS[name.lower()]
    except KeyError:
        raise KeyError(
            f"unknown keypoint spec {name!r}; built-in specs are {sorted(SPECS)}"
        ) from None
