"""arkpose.data: the COCO/CrowdPose dataset, its errors, and the training dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from arkpose.config import Config
from arkpose.data import build_dataset, build_train_dataset
from arkpose.data.coco import DatasetError, KeypointDataset
from arkpose.spec import COCO, CROWDPOSE


def _kps(points: dict[int, tuple[float, float]], k: int = 17) -> list[float]:
    out = np.zeros((k, 3))
    for j, (x, y) in points.items():
        out[j] = (x, y, 2)
    return out.ravel().tolist()


def write_tiny_coco(root: Path, *, crowd_index: bool = False, k: int = 17) -> Path:
    """Two images (64x48 and 40x56) with a labelled person, a keypoint-less person with a
    polygon, and a crowd RLE region. Returns the annotation file."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in (("a.png", (64, 48)), ("b.png", (40, 56))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / name)
    crowd = np.zeros((48, 64), np.uint8)
    crowd[30:40, 40:60] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode()
    images = [{"id": 11, "file_name": "a.png", "width": 64, "height": 48},
              {"id": 12, "file_name": "b.png", "width": 40, "height": 56}]
    if crowd_index:
        for im, c in zip(images, (0.2, 0.8)):
            im["crowdIndex"] = c
    anns = [
        {"id": 1, "image_id": 11, "category_id": 1, "iscrowd": 0, "num_keypoints": 2,
         "keypoints": _kps({0: (10.5, 12.0), 5: (20.0, 22.5)}, k), "bbox": [5, 5, 30, 30],
         "area": 700.0, "segmentation": [[5, 5, 35, 5, 35, 35, 5, 35]]},
        {"id": 2, "image_id": 11, "category_id": 1, "iscrowd": 0, "num_keypoints": 0,
         "keypoints": [0] * (3 * k), "bbox": [40, 2, 10, 12], "area": 120.0,
         "segmentation": [[40, 2, 50, 2, 50, 14, 40, 14]]},
        {"id": 3, "image_id": 11, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
         "keypoints": [0] * (3 * k), "bbox": [40, 30, 20, 10], "area": 200.0, "segmentation": rle},
        {"id": 4, "image_id": 12, "category_id": 1, "iscrowd": 0, "num_keypoints": 1,
         "keypoints": _kps({1: (20.0, 30.0)}, k), "bbox": [10, 20, 20, 30]},  # no area
    ]
    cat = (COCO if k == 17 else CROWDPOSE).coco_category()
    ann_file = root / "annotations" / "kp.json"
    ann_file.parent.mkdir(exist_ok=True)
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return ann_file


def edit(ann_file: Path, fn) -> Path:
    data = json.loads(ann_file.read_text())
    fn(data)
    ann_file.write_text(json.dumps(data))
    return ann_file


# ---------------------------------------------------------------------------------------
# Raw samples


def test_tiny_coco_sample_layout_and_ignore_mask(tmp_path):
    ds = KeypointDataset(write_tiny_coco(tmp_path), tmp_path / "images", COCO)
    assert len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (48, 64, 3) and s["image"].dtype == np.uint8
    assert s["keypoints"].shape == (3, 17, 3) and s["keypoints"].dtype == np.float32
    assert s["keypoints"][0, 0].tolist() == [10.5, 12.0, 2.0]
    np.testing.assert_array_equal(s["areas"], [700, 120, 200])
    np.testing.assert_array_equal(s["bboxes"][0], [5, 5, 30, 30])
    np.testing.assert_array_equal(s["iscrowd"], [0, 0, 1])
    np.testing.assert_array_equal(s["num_keypoints"], [2, 0, 0])
    assert s["image_id"] == 11 and s["file_name"] == "a.png" and "crowd_index" not in s
    ign = s["ignore_mask"]
    assert ign.shape == (48, 64) and ign.dtype == np.uint8
    assert np.all(ign[31:39, 41:59] == 0)  # crowd RLE
    assert np.all(ign[3:13, 41:49] == 0)  # keypoint-less person's polygon
    assert np.all(ign[6:34, 6:34] == 1)  # a labelled person is used
    assert ign[45, 2] == 1
    s = ds[1]
    assert s["areas"][0] == 600  # bbox area where the file has none
    assert np.all(s["ignore_mask"] == 1)


def test_crowdpose_through_xtcocotools_with_crowd_index_and_swapped_size(tmp_path):
    ann = write_tiny_coco(tmp_path, crowd_index=True, k=14)

    def swap(d):  # CrowdPose's files swap width and height for some images
        d["images"][1]["width"], d["images"][1]["height"] = 56, 40

    edit(ann, swap)
    ds = KeypointDataset(ann, tmp_path / "images", CROWDPOSE)
    assert type(ds.coco).__module__.startswith("xtcocotools")
    s = ds[1]
    assert s["image"].shape == (56, 40, 3) and s["ignore_mask"].shape == (56, 40)
    assert s["crowd_index"] == pytest.approx(0.8) and s["keypoints"].shape == (1, 14, 3)


def test_size_mismatch_other_than_a_swap_raises(tmp_path):
    ann = edit(write_tiny_coco(tmp_path), lambda d: d["images"][0].update(width=65))
    with pytest.raises(DatasetError, match=r"a\.png.*image id 11.*64x48"):
        KeypointDataset(ann, tmp_path / "images", COCO)[0]


def test_subset_and_require_annotations(tmp_path):
    ann = edit(write_tiny_coco(tmp_path), lambda d: d["images"].append(
        {"id": 13, "file_name": "a.png", "width": 64, "height": 48}))
    assert len(KeypointDataset(ann, tmp_path / "images", COCO)) == 3
    ds = KeypointDataset(ann, tmp_path / "images", COCO, require_annotations=True)
    assert ds.ids == [11, 12]
    assert KeypointDataset(ann, tmp_path / "images", COCO, subset=1).ids == [11]


# ---------------------------------------------------------------------------------------
# Bad input: named errors that say which file and which id


def test_missing_image(tmp_path):
    ann = write_tiny_coco(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.png \(image id 12.*does not exist"):
        KeypointDataset(ann, tmp_path / "images", COCO)
    with pytest.warns(UserWarning, match="skipped 1 invalid image"):
        ds = KeypointDataset(ann, tmp_path / "images", COCO, skip_invalid=True)
    assert ds.ids == [11] and 12 in ds.skipped


def test_unreadable_image(tmp_path):
    ann = write_tiny_coco(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"not an image at all")
    ds = KeypointDataset(ann, tmp_path / "images", COCO)
    with pytest.raises(DatasetError, match=r"b\.png \(image id 12.*cannot be decoded"):
        ds[1]


def test_malformed_json(tmp_path):
    ann = write_tiny_coco(tmp_path)
    ann.write_text('{"images": [}')
    with pytest.raises(DatasetError, match=r"kp\.json: malformed json"):
        KeypointDataset(ann, tmp_path / "images", COCO)
    ann.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="annotations"):
        KeypointDataset(ann, tmp_path / "images", COCO)
    with pytest.raises(DatasetError, match="does not exist"):
        KeypointDataset(tmp_path / "nope.json", tmp_path / "images", COCO)


def test_annotation_of_unknown_image(tmp_path):
    ann = edit(write_tiny_coco(tmp_path), lambda d: d["annotations"][3].update(image_id=99))
    with pytest.raises(DatasetError, match=r"kp\.json: annotation 4 points at unknown image_id 99"):
        KeypointDataset(ann, tmp_path / "images", COCO)
    with pytest.warns(UserWarning, match="1 annotation"):
        ds = KeypointDataset(ann, tmp_path / "images", COCO, skip_invalid=True)
    assert ds.dropped_annotations == 1 and len(ds[1]["keypoints"]) == 0


def test_wrong_keypoint_length(tmp_path):
    ann = write_tiny_coco(tmp_path)
    with pytest.raises(DatasetError, match=r"annotation 1 \(image 11\) has 51 keypoint values; "
                                           r"spec 'crowdpose' needs 42"):
        KeypointDataset(ann, tmp_path / "images", CROWDPOSE)
    edit(ann, lambda d: d["annotations"][3].update(keypoints=[1, 2, 2]))
    with pytest.raises(DatasetError, match=r"kp\.json: annotation 4 \(image 12\) has 3 keypoint"):
        KeypointDataset(ann, tmp_path / "images", COCO)
    with pytest.warns(UserWarning):
        ds = KeypointDataset(ann, tmp_path / "images", COCO, skip_invalid=True)
    assert ds.ids == [11]


def test_missing_bbox(tmp_path):
    ann = edit(write_tiny_coco(tmp_path), lambda d: d["annotations"][2].pop("bbox"))
    with pytest.raises(DatasetError, match=r"annotation 3 \(image 11\) has no valid 'bbox'"):
        KeypointDataset(ann, tmp_path / "images", COCO)


def test_missing_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="image folder"):
        KeypointDataset(write_tiny_coco(tmp_path), tmp_path / "nowhere", COCO)


# ---------------------------------------------------------------------------------------
# From a Config


def tiny_config(root: Path, size: int = 32) -> Config:
    cfg = Config()
    cfg.data.dataset = "coco"
    cfg.data.root = str(root)
    cfg.data.train_ann = cfg.data.val_ann = "annotations/kp.json"
    cfg.data.train_images = cfg.data.val_images = "images"
    cfg.data.input_size = size
    cfg.data.max_translate = 40.0 * size / 512  # as the presets: 40 px at a 512 crop
    cfg.data.min_center_area = 16.0
    return cfg


def test_build_train_dataset_collates_and_is_reproducible(tmp_path):
    write_tiny_coco(tmp_path)
    cfg = tiny_config(tmp_path)
    ds = build_train_dataset(cfg)
    batch = torch.utils.data.DataLoader(ds, batch_size=2)
    b = next(iter(batch))
    assert b["image"].shape == (2, 3, 32, 32) and b["image"].dtype == torch.float32
    assert b["heatmaps"].shape == (2, 18, 8, 8) and b["offsets"].shape == (2, 34, 8, 8)
    assert b["offset_weights"].shape == (2, 34, 8, 8) and b["ignore_mask"].shape == (2, 1, 8, 8)
    assert b["tradeoff_mask"].shape == (2, 1, 8, 8)
    assert b["image_id"].tolist() == [11, 12]
    ds.set_epoch(4)
    first = ds[0]
    ds.set_epoch(5)
    other = ds[0]
    again = build_train_dataset(cfg)
    again.set_epoch(4)
    same = again[0]
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not torch.equal(first["image"], other["image"])
    cfg.seed = 1
    assert not torch.equal(build_train_dataset(cfg).__getitem__(0)["image"],
                           build_train_dataset(tiny_config(tmp_path))[0]["image"])


def test_unaugmented_targets_sit_on_the_keypoints(tmp_path):
    write_tiny_coco(tmp_path)
    cfg = tiny_config(tmp_path, size=48)
    ds = build_train_dataset(cfg)
    ds.augment_data = False
    s = ds[0]
    # 64x48 image, short side 48 -> crop 48: x shifts by (48/2 - 64/2) = -8, y unchanged.
    # Keypoint 0 at (10.5, 12) -> input (2.5, 12) -> grid (0.625, 3): peak at row 3, col 1.
    heat = s["heatmaps"][0]
    assert tuple(np.unravel_index(heat.argmax().item(), heat.shape)) == (3, 1)
    assert s["ignore_mask"].min() == 0  # the keypoint-less person and the crowd region


def test_subsets_spec_choice_and_missing_data_messages(tmp_path):
    write_tiny_coco(tmp_path)
    cfg = tiny_config(tmp_path)
    cfg.data.val_subset = 1
    assert len(build_dataset(cfg, "val")) == 1
    cfg.data.train_subset = 1
    assert len(build_train_dataset(cfg)) == 1
    missing = Config()
    missing.data.root = str(tmp_path / "synth-data")
    with pytest.raises(DatasetError, match=r"arkpose synth --out .*synth-data --preset quick"):
        build_train_dataset(missing)
    missing.data.dataset = "crowdpose"
    with pytest.raises(DatasetError, match="crowdpose data not found"):
        build_dataset(missing, "val")
    with pytest.raises(DatasetError, match="unknown split"):
        build_dataset(cfg, "test")


# ---------------------------------------------------------------------------------------
# The real fixtures (../shared/real_fixtures)


@pytest.mark.needs_shared
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
def test_real_coco_fixtures_load_with_masks_over_keypointless_persons(real_fixtures):
    ds = KeypointDataset(real_fixtures / "coco" / "test_coco.json", real_fixtures / "coco", COCO)
    assert len(ds) == 4
    samples = [ds[i] for i in range(4)]
    assert sum(len(s["keypoints"]) for s in samples) == 14
    empty = 0
    for s, anns in zip(samples, (ds.annotations(i) for i in range(4))):
        assert s["image"].shape[:2] == s["ignore_mask"].shape
        for ann, nk in zip(anns, s["num_keypoints"]):
            if nk == 0:
                empty += 1
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(
                    ann["segmentation"], *s["image"].shape[:2])))
                assert m.sum() > 100 and np.all(s["ignore_mask"][m > 0] == 0)
        assert (s["ignore_mask"] == 0).sum() == sum(
            mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], *s["image"].shape[:2]))).sum()
            for a, nk in zip(anns, s["num_keypoints"]) if nk == 0)
    assert empty == 2
    assert {a["id"] for i in range(4) for a in ds.annotations(i) if a["num_keypoints"] == 0} == {1202706, 508900}


@pytest.mark.needs_shared
def test_real_crowdpose_fixtures_load(real_fixtures):
    ds = KeypointDataset(real_fixtures / "crowdpose" / "test_crowdpose.json",
                         real_fixtures / "crowdpose", CROWDPOSE)
    assert len(ds) == 2
    s = ds.__getitem__(ds.ids.index(106848))
    assert s["image"].shape == (425, 640, 3) and s["crowd_index"] == pytest.approx(0.33)
    assert s["keypoints"].shape == (3, 14, 3)
    # No area in CrowdPose files: the bbox area; no segmentation: the keypoint-less person
    # (id 131039) is masked over its bbox.
    anns = ds.annotations(ds.ids.index(106848))
    for a, area in zip(anns, s["areas"]):
        assert area == pytest.approx(a["bbox"][2] * a["bbox"][3], rel=1e-5)
    (empty,) = [a for a in anns if a["num_keypoints"] == 0]
    assert empty["id"] == 131039
    x, y, w, h = empty["bbox"]
    assert np.all(s["ignore_mask"][int(np.ceil(y)):int(y + h), int(np.ceil(x)):int(x + w)] == 0)
    rows, cols = np.nonzero(s["ignore_mask"] == 0)  # and nowhere else
    assert rows.min() >= np.floor(y) and rows.max() < np.ceil(y + h)
    assert cols.min() >= np.floor(x) and cols.max() < np.ceil(x + w)
