"""Damaged ground truth and detections (truncated, wrong types, NaN or negative numbers,
missing fields, wrong keypoint counts) reach the loaders; only arkpose's own error types may
come out (issue 14). Property-based: hypothesis draws the damage."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arkpose.analysis.data import AnalysisInputError
from arkpose.analysis.data import load as load_analysis
from arkpose.evaluate import EvaluationError
from arkpose.evaluate import evaluate as evaluate_coco
from arkpose.spec import COCO

K = COCO.num_keypoints
BAD_VALUES = [None, "x", "", [], {}, [1, 2], math.nan, math.inf, -1, -1e9, True, 0, 2**40]


def _person(i: int, image_id: int) -> dict:
    kps = []
    for j in range(K):
        kps += [10.0 + i * 20 + j, 12.0 + j, 2]
    return {"id": i + 1, "image_id": image_id, "category_id": 1, "keypoints": kps,
            "bbox": [5.0 + i * 20, 5.0, 30.0, 40.0], "area": 900.0, "iscrowd": 0,
            "num_keypoints": K}


def _documents() -> tuple[dict, list]:
    gt = {"images": [{"id": 1, "width": 100, "height": 80}, {"id": 2, "width": 100, "height": 80}],
          "annotations": [_person(0, 1), _person(1, 1), _person(2, 2)],
          "categories": [{"id": 1, "name": "person"}]}
    dt = [{"image_id": a["image_id"], "category_id": 1, "keypoints": list(a["keypoints"]),
           "score": 0.9 - 0.1 * i} for i, a in enumerate(gt["annotations"])]
    return gt, dt


def _containers(doc) -> list:
    """Every dict and list inside ``doc`` (itself included)."""
    found, stack = [], [doc]
    while stack:
        node = stack.pop()
        found.append(node)
        stack += [v for v in (node.values() if isinstance(node, dict) else node)
                  if isinstance(v, (dict, list))]
    return found


@st.composite
def damaged(draw) -> tuple[object, object]:
    """The two documents with 1 to 4 random damages."""
    gt, dt = _documents()
    docs = [gt, dt]
    for _ in range(draw(st.integers(1, 4))):
        which = draw(st.integers(0, 1))
        action = draw(st.sampled_from(["replace", "delete", "resize", "swap_root"]))
        if action == "swap_root":  # not a string: that would name a file
            docs[which] = copy.deepcopy(
                draw(st.sampled_from([v for v in BAD_VALUES if not isinstance(v, str)])))
        if not isinstance(docs[which], (dict, list)) or action == "swap_root":
            continue
        node = draw(st.sampled_from(_containers(docs[which])))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            continue
        key = draw(st.sampled_from(keys))
        if action == "replace":
            node[key] = copy.deepcopy(draw(st.sampled_from(BAD_VALUES)))
        elif action == "delete":
            del node[key]
        elif isinstance(node[key], list):  # wrong counts: drop or add values
            n = draw(st.integers(-3, 3))
            node[key] = node[key][:n] if n < 0 else node[key] + [0.0] * n
    return docs[0], docs[1]


FUZZ = settings(max_examples=int(os.environ.get("FUZZ_N", "60")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("load, own_error", [(load_analysis, AnalysisInputError),
                                             (evaluate_coco, EvaluationError)],
                         ids=["analysis-loader", "evaluation"])
@FUZZ
@given(docs=damaged())
def test_a_loader_raises_only_its_own_error(load, own_error, docs):
    gt, dt = docs
    try:
        load(gt, dt, COCO)
    except own_error:
        pass


@FUZZ
@given(docs=damaged(), cut=st.floats(0.0, 1.0), which=st.integers(0, 1))
def test_truncated_or_damaged_files_raise_only_own_errors(tmp_path, docs, cut, which):
    paths = []
    for i, doc in enumerate(docs):
        text = json.dumps(doc)
        if i == which:  # cut one file anywhere, down to 0 bytes
            text = text[: int(len(text) * cut)]
        path = tmp_path / f"doc{i}.json"
        path.write_text(text)
        paths.append(path)
    try:
        load_analysis(paths[0], paths[1], COCO)
    except AnalysisInputError:
        pass
    try:
        evaluate_coco(paths[0], paths[1], COCO)
    except EvaluationError:
        pass


def test_undamaged_documents_load():
    """The base documents are valid, so the damage above is what the loaders refuse."""
    gt, dt = _documents()
    data = load_analysis(gt, dt, COCO)
    assert data.gt_kpts.shape == (3, K, 3) and data.dt_kpts.shape == (3, K, 3)
    assert evaluate_coco(gt, dt, COCO)["AP"] == pytest.approx(1.0)
