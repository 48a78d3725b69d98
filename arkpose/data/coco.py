"""COCO-format keypoint datasets (COCO, CrowdPose, SynthPose) as raw samples.

:class:`KeypointDataset` reads one annotation json (pycocotools; CrowdPose through
xtcocotools, which knows ``crowdIndex``) and an image folder, and returns per image the raw
sample of docs/interfaces.md: the decoded image, the persons as arrays and the ignore mask.
Augmentation and targets come later (:mod:`arkpose.data.transforms`,
:mod:`arkpose.targets`).

Bad input raises :class:`DatasetError` naming the file and the image/annotation id; with
``skip_invalid=True`` the images concerned are left out instead and counted in a warning.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.coco
import torch
from PIL import Image, UnidentifiedImageError

from arkpose.spec import KeypointSpec
from arkpose.targets import rasterize_region


class DatasetError(ValueError):
    """An annotation file, annotation or image that cannot be used (names file and id)."""


def _load_json(ann_file: Path) -> dict:
    if not ann_file.is_file():
        raise DatasetError(f"annotation file {ann_file} does not exist")
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{ann_file}: malformed json ({err})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: expected a json object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: missing or non-list '{key}' (a COCO keypoint file "
                               f"has 'images', 'annotations' and 'categories')")
    return data


def _coco_api(data: dict, crowd: bool):
    """A pycocotools (or xtcocotools) COCO object built from an already parsed dict."""
    if crowd:
        # lazy: xtcocotools.coco imports matplotlib (~0.5 s); only CrowdPose needs it
        from xtcocotools.coco import COCO
    else:
        COCO = pycocotools.coco.COCO
    api = COCO()
    api.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        api.createIndex()
    return api


class KeypointDataset(torch.utils.data.Dataset):
    """Images and person annotations of a COCO-format keypoint file.

    Args:
        ann_file: COCO keypoint json (COCO, CrowdPose or SynthPose).
        image_dir: folder holding the ``file_name`` of every image.
        spec: keypoint layout; every annotation must have ``3 * spec.num_keypoints`` values.
        skip_invalid: leave out images with a bad annotation or a missing file (a warning
            counts them) instead of raising :class:`DatasetError`.
        require_annotations: keep only images with at least one annotation (the official
            training set); False keeps every image (evaluation).
        subset: keep the first N images in file order (0 = all).

    ``dataset[i]`` is a dict: ``image`` uint8 ``(H, W, 3)`` RGB, ``keypoints`` float32
    ``(P, K, 3)``, ``areas (P,)`` (the file's ``area``, the segmentation area; bbox area
    where absent, as in CrowdPose), ``bboxes (P, 4)`` xywh, ``iscrowd (P,)``,
    ``num_keypoints (P,)``, ``ignore_mask`` uint8 ``(H, W)`` (1 = use, 0 = crowd regions and
    persons with ``num_keypoints == 0``; their bbox when they have no segmentation),
    ``image_id`` int, ``file_name`` str, and ``crowd_index`` float when the file has
    ``crowdIndex``. Width and height come from the decoded image: CrowdPose's files swap
    them for some images.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        spec: KeypointSpec,
        *,
        skip_invalid: bool = False,
        require_annotations: bool = False,
        subset: int = 0,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.spec = spec
        self.skip_invalid = skip_invalid
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder {self.image_dir} does not exist "
                               f"(annotations: {self.ann_file})")
        data = _load_json(self.ann_file)
        crowd = spec.iou_type == "keypoints_crowd" or any(
            "crowdIndex" in im for im in data["images"][:1])
        self.skipped: dict[int, str] = {}
        self.dropped_annotations = 0
        self._validate(data)
        self.coco = _coco_api(data, crowd)
        ids = [im["id"] for im in data["images"] if im["id"] not in self.skipped]
        if require_annotations:
            ids = [i for i in ids if self.coco.getAnnIds(imgIds=i, iscrowd=None)]
        if subset:
            ids = ids[:subset]
        self.ids: list[int] = ids
        if self.skipped or self.dropped_annotations:
            example = next(iter(self.skipped.values()), "an annotation of an unknown image")
            warnings.warn(f"{self.ann_file}: skipped {len(self.skipped)} invalid image(s) and "
                          f"{self.dropped_annotations} annotation(s) of unknown images, e.g. "
                          f"{example}", stacklevel=2)

    # -- validation -----------------------------------------------------------------------

    def _fail(self, image_id: int | None, message: str) -> None:
        if self.skip_invalid and image_id is not None:
            self.skipped.setdefault(image_id, message)
            return
        raise DatasetError(message)

    def _validate(self, data: dict) -> None:
        """Check every image entry, annotation and image file; raise or record skips.

        With ``skip_invalid`` an annotation pointing at an unknown image is dropped (counted
        in ``self.dropped_annotations``) and an image with a bad annotation or no file is
        recorded in ``self.skipped`` (image id -> reason).
        """
        k = self.spec.num_keypoints
        images: dict[Any, dict] = {}
        for im in data["images"]:
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise DatasetError(f"{self.ann_file}: image entry without 'id' or 'file_name': "
                                   f"{str(im)[:120]}")
            images[im["id"]] = im
        kept = []
        for ann in data["annotations"]:
            aid, iid = ann.get("id"), ann.get("image_id")
            if iid not in images:
                if not self.skip_invalid:
                    raise DatasetError(f"{self.ann_file}: annotation {aid} points at unknown "
                                       f"image_id {iid}")
                self.dropped_annotations += 1
                continue
            kept.append(ann)
            if not isinstance(ann.get("bbox"), list) or len(ann["bbox"]) != 4:
                self._fail(iid, f"{self.ann_file}: annotation {aid} (image {iid}) has no valid "
                                f"'bbox' (xywh)")
                continue
            kps = ann.get("keypoints")
            if kps is None and ann.get("iscrowd", 0):
                continue  # crowd regions need no keypoints
            if not isinstance(kps, list) or len(kps) != 3 * k:
                n = len(kps) if isinstance(kps, list) else type(kps).__name__
                self._fail(iid, f"{self.ann_file}: annotation {aid} (image {iid}) has {n} keypoint "
                                f"values; spec {self.spec.name!r} needs {3 * k} (K={k} x (x, y, v))")
        data["annotations"] = kept
        for iid, im in images.items():
            path = self.image_dir / im["file_name"]
            if not path.is_file():
                self._fail(iid, f"image {path} (image id {iid}, in {self.ann_file}) does not exist")

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    def annotations(self, index: int) -> list[dict]:
        """The raw annotation dicts of image ``index`` (file order)."""
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=self.ids[index], iscrowd=None))

    def image_info(self, index: int) -> dict:
        return self.coco.loadImgs(self.ids[index])[0]

    def load_image(self, index: int) -> np.ndarray:
        """Decoded RGB image uint8 ``(H, W, 3)``."""
        info = self.image_info(index)
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise DatasetError(f"image {path} (image id {info['id']}, in {self.ann_file}) "
                               f"does not exist") from None
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetError(f"image {path} (image id {info['id']}, in {self.ann_file}) "
                               f"cannot be decoded: {err}") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        info = self.image_info(index)
        image = self.load_image(index)
        h, w = image.shape[:2]
        stated = (info.get("height"), info.get("width"))
        # A swap is CrowdPose's slip: the decoded image wins. Anything else is an error.
        if stated not in ((h, w), (w, h), (None, None)):
            raise DatasetError(
                f"image {info['file_name']} (image id {info['id']}, in {self.ann_file}) "
                f"decodes to {w}x{h} but the file says {info.get('width')}x{info.get('height')}")
        anns = self.annotations(index)
        k = self.spec.num_keypoints
        p = len(anns)
        keypoints = np.zeros((p, k, 3), np.float32)
        bboxes = np.zeros((p, 4), np.float32)
        areas = np.zeros(p, np.float32)
        iscrowd = np.zeros(p, np.int64)
        num_kp = np.zeros(p, np.int64)
        ignore = np.ones((h, w), np.uint8)
        for i, ann in enumerate(anns):
            if ann.get("keypoints") is not None:
                keypoints[i] = np.asarray(ann["keypoints"], np.float32).reshape(k, 3)
            bboxes[i] = ann["bbox"]
            areas[i] = ann["area"] if ann.get("area") is not None else bboxes[i, 2] * bboxes[i, 3]
            iscrowd[i] = int(bool(ann.get("iscrowd", 0)))
            num_kp[i] = ann.get("num_keypoints", int((keypoints[i, :, 2] > 0).sum()))
            if iscrowd[i] or num_kp[i] == 0:
                seg = ann.get("segmentation")
                if isinstance(seg, dict) and tuple(seg.get("size", ())) != (h, w):
                    raise DatasetError(
                        f"{self.ann_file}: annotation {ann.get('id')} (image {info['id']}): RLE "
                        f"size {seg.get('size')} differs from the image's {[h, w]}")
                ignore[rasterize_region(seg, ann["bbox"], h, w) > 0] = 0
        sample = {
            "image": image,
            "keypoints": keypoints,
            "areas": areas,
            "bboxes": bboxes,
            "iscrowd": iscrowd,
            "num_keypoints": num_kp,
            "ignore_mask": ignore,
            "image_id": int(info["id"]),
            "file_name": info["file_name"],
        }
        if "crowdIndex" in info:
            sample["crowd_index"] = float(info["crowdIndex"])
        return sample
