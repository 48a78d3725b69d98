"""SynthPose whole scene: paint it (:func:`paint_scene`) and annotate it in COCO format
(:func:`annotate`: visibility from the label map, RLE silhouettes, crowd regions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arkpose.data.synth_render.paint_person import paint_person
from arkpose.data.synth_render.paint_scenery import paint_background, paint_object, post_process
from arkpose.data.synth_render.scene import (
    FIRST_PERSON_SLOT,
    OWN_TABLE,
    SLOT,
    TORSO,
    TORSO_JOINT_MASK,
    K,
    Scene,
    wrap_deg,
)


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
        OWN_TABLE[np.arange(K), part]
        | (TORSO_JOINT_MASK & (part == TORSO) & (kp_depth <= torso_near)))
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
                "rotation_deg": round(float(wrap_deg(p.rotation_deg)), 3),
                "height_px": round(float(p.height_px), 3),
                "facing": p.facing,
                "yaw_deg": round(float(wrap_deg(p.yaw_deg)), 3),
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
