"""Synthetic keypoint GT and perturbed detections, for the analysis tests and benchmark.

Not a dataset: random people (a template pose scaled and shifted) whose detections carry
the four error types on purpose, so every branch of the analysis has work to do.
"""

from __future__ import annotations

import numpy as np

from arkpose.spec import COCO, KeypointSpec


def make_synthetic(num_images: int = 500, dets_per_image: float = 3.8, seed: int = 0,
                   spec: KeypointSpec = COCO) -> tuple[dict, list]:
    """(gt dict, detections list) with about ``dets_per_image`` detections per image."""
    rng = np.random.default_rng(seed)
    k = spec.num_keypoints
    template = rng.uniform(-0.5, 0.5, size=(k, 2))
    flip = np.asarray(spec.flip_index)
    images, anns, dets = [], [], []
    ann_id = 1
    for img in range(1, num_images + 1):
        images.append({"id": img, "width": 640, "height": 480, "file_name": f"{img:06d}.jpg",
                       "crowdIndex": float(rng.uniform(0, 1))})
        people = []
        for _ in range(int(rng.integers(0, 6))):
            size = rng.uniform(20, 250)
            centre = rng.uniform(100, 500, size=2)
            xy = centre + template * size + rng.normal(0, size * 0.02, size=(k, 2))
            v = np.where(rng.random(k) < 0.8, 2, np.where(rng.random(k) < 0.5, 1, 0))
            if rng.random() < 0.05:
                v[:] = 0                                  # a person without keypoints
            crowd = int(rng.random() < 0.03)
            x0, y0 = xy.min(0)
            w, h = xy.max(0) - xy.min(0)
            kp = np.concatenate([xy, v[:, None]], 1)
            kp[v == 0, :2] = 0
            anns.append({"id": ann_id, "image_id": img, "category_id": 1, "iscrowd": crowd,
                         "keypoints": kp.ravel().round(2).tolist(), "num_keypoints": int((v > 0).sum()),
                         "area": float(w * h * 0.6), "bbox": [float(x0), float(y0), float(w), float(h)]})
            people.append((xy, size))
            ann_id += 1
        n_det = rng.poisson(dets_per_image)
        for _ in range(n_det):
            if people and rng.random() < 0.85:
                xy, size = people[int(rng.integers(len(people)))]
                pred = xy + rng.normal(0, size * rng.choice([0.01, 0.03, 0.08]), size=(k, 2))
                kind = rng.random(k)
                pred[kind < 0.05] = pred[flip][kind < 0.05]                       # inversions
                far = kind > 0.95
                pred[far] += rng.normal(0, size * 0.5, size=(int(far.sum()), 2))  # misses
                if len(people) > 1 and rng.random() < 0.2:                       # swaps
                    other = people[int(rng.integers(len(people)))][0]
                    j = int(rng.integers(k))
                    pred[j] = other[j]
            else:
                pred = rng.uniform(50, 550, size=2) + template * rng.uniform(20, 200)
            score = float(rng.uniform(0, 1))
            dets.append({"image_id": img, "category_id": 1, "score": score,
                         "keypoints": np.concatenate([pred, np.ones((k, 1))], 1).ravel().round(2).tolist()})
    gt = {"images": images, "annotations": anns, "categories": [spec.coco_category(1)]}
    return gt, dets
