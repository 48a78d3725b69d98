"""Shape and type checks of COCO keypoint documents before anything indexes them.

A ground truth (``images``, ``annotations``) or a results list that is damaged (a field of
the wrong type, a missing id, NaN, a negative area, the wrong number of keypoint values)
fails here in one line naming the entry, the field and what it should be, raised as the
caller's own error type, instead of as a ``KeyError`` or ``TypeError`` deep in numpy.
Negative coordinates stay valid: keypoints may lie just outside the image.
"""

from __future__ import annotations

import math
from typing import Any

Number = (int, float)
_PLAIN = {int, float}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(v)


def _all_numbers(v: list) -> bool:
    """Every item a finite number. Plain ints and floats are checked with builtin maps (a
    results file holds ~10^6 keypoint values: ~10x faster than a loop); anything else (a
    numpy scalar, a bool, a string) goes through :func:`_is_number` one by one."""
    if set(map(type, v)) <= _PLAIN:
        return all(map(math.isfinite, v))
    return all(_is_number(x) for x in v)


def _numbers(v: Any, n: int) -> bool:
    """A list of ``n`` finite numbers."""
    return isinstance(v, list) and len(v) == n and _all_numbers(v)


def _describe(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _field_problem(entry: dict, key: str, k: int) -> str | None:
    """What is wrong with ``entry[key]`` (None when it is fine or absent and optional)."""
    v = entry[key]
    if key in ("id", "image_id", "category_id"):
        return None if _is_int(v) else "must be an integer"
    if key == "keypoints":
        if not isinstance(v, list) or len(v) != 3 * k:
            n = len(v) if isinstance(v, list) else type(v).__name__
            return f"has {n} values; the layout needs {3 * k} (K={k} x (x, y, v)): pass the matching --spec"
        return None if _all_numbers(v) else "must hold finite numbers only"
    if key == "bbox":
        ok = _numbers(v, 4) and v[2] >= 0 and v[3] >= 0
        return None if ok else "must be [x, y, w, h], 4 finite numbers with w, h >= 0"
    if key == "area":
        return None if _is_number(v) and v >= 0 else "must be a finite number >= 0"
    if key == "score":
        return None if _is_number(v) else "must be a finite number"
    if key in ("iscrowd", "num_keypoints"):
        return None if isinstance(v, int) and v >= 0 else "must be an integer >= 0"
    return None


def _check_entry(entry: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...],
                 k: int, error: type[Exception]) -> None:
    if not isinstance(entry, dict):
        raise error(f"{where} is a {type(entry).__name__}, not a json object")
    for key in required:
        if key not in entry:
            raise error(f"{where} has no {key!r} field")
    for key in required + optional:
        if key in entry:
            problem = _field_problem(entry, key, k)
            if problem:
                raise error(f"{where}: {key!r} {problem} (got {_describe(entry[key])})")


def check_ground_truth(data: Any, k: int, what: str, error: type[Exception],
                       required: tuple[str, ...] = ()) -> None:
    """A COCO keypoint ground truth with ``k`` keypoints: a dict with ``images`` (each with
    an integer ``id``) and ``annotations`` (integer ``id`` and ``image_id``, ``keypoints``
    of 3k finite numbers; ``bbox``, ``area`` >= 0, ``iscrowd``, ``num_keypoints`` and
    ``category_id`` optional unless named in ``required``). Raises ``error`` naming the first
    problem."""
    if not isinstance(data, dict):
        raise error(f"{what} is a json {type(data).__name__}, not a COCO object with 'images' "
                    "and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise error(f"{what} has no {key!r} list (not a COCO keypoint file)")
    for i, im in enumerate(data["images"]):
        _check_entry(im, f"{what}: image entry {i}", ("id",), (), k, error)
    categories = data.get("categories", [])
    if not isinstance(categories, list):
        raise error(f"{what}: 'categories' must be a list of objects with an integer 'id'")
    for i, cat in enumerate(categories):
        _check_entry(cat, f"{what}: category entry {i}", ("id",), (), k, error)
    for i, ann in enumerate(data["annotations"]):
        name = ann.get("id", i) if isinstance(ann, dict) else i
        _check_entry(ann, f"{what}: annotation {name!r}",
                     ("id", "image_id", "keypoints", *required),
                     ("bbox", "area", "iscrowd", "num_keypoints", "category_id"), k, error)


def check_detections(dets: Any, k: int, what: str, error: type[Exception]) -> None:
    """A COCO keypoint results list with ``k`` keypoints: each entry with an integer
    ``image_id``, a finite ``score`` and ``keypoints`` of 3k finite numbers (optional
    ``bbox``, ``category_id``). Raises ``error`` naming the first problem."""
    if not isinstance(dets, list):
        raise error(f"{what} is a json {type(dets).__name__}, not a list of result objects "
                    "(COCO results format)")
    for i, d in enumerate(dets):
        # loadRes reads an empty bbox as none (keypoint-box areas instead).
        optional = ("category_id",) if isinstance(d, dict) and d.get("bbox") == [] else \
            ("bbox", "category_id")
        _check_entry(d, f"{what}: detection {i}", ("image_id", "score", "keypoints"), optional,
                     k, error)
