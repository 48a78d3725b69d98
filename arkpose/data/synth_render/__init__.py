"""SynthPose rendering: sample a scene from a numpy Generator, paint it, annotate it.

A person is a small 3D stick model (X = the person's left, Y = down, Z = the way the person
faces; unit = standing height) posed by joint angles, turned by a yaw about the vertical,
projected orthographically, rotated in the image plane, scaled and placed. Body parts are
flat shapes (capsules, polygons, circles) painted far to near, so self-occlusion and the
overlap order between persons come from the painting itself. Every painted pixel records
which (person, part) is on top in a label map; keypoint visibility is read from that map.

Everything random is drawn from the Generator passed in, in a fixed order, so a scene is a
pure function of its seed. Painting is a pure function of the scene.

The modules, in the order a scene goes through them: :mod:`.scene` (what a scene is),
:mod:`.sample` (drawing one), :mod:`.geometry` (a figure's 3D points and projection),
:mod:`.paint_person` and :mod:`.paint_scenery` (pixels), :mod:`.annotate` (the whole scene
painted and turned into COCO annotations). This package exports the names its users need.
"""

from arkpose.data.synth_render.annotate import (
    Rendered,
    annotate,
    crowd_index,
    paint_scene,
    rle_uncompressed,
    visibility,
)
from arkpose.data.synth_render.sample import sample_person, sample_pose, sample_scene
from arkpose.data.synth_render.scene import (
    BODY,
    FACINGS,
    FIRST_PERSON_SLOT,
    POSES,
    SLOT,
    Person,
    Scene,
)

__all__ = [
    "BODY", "FACINGS", "FIRST_PERSON_SLOT", "POSES", "SLOT", "Person", "Rendered", "Scene",
    "annotate", "crowd_index", "paint_scene", "rle_uncompressed", "sample_person",
    "sample_pose", "sample_scene", "visibility",
]
