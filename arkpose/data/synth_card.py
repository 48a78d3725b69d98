"""The SynthPose dataset card: counts, histograms and a sample grid, written next to the data.

``write_card(root, cfg, splits, manifest)`` writes ``root/card/card.md`` and its PNG plots
from the annotation dicts already in memory (no image is re-rendered except the grid's).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from arkpose.data.synth_render import POSES
from arkpose.jsonio import atomic_path
from arkpose.spec import COCO

if TYPE_CHECKING:  # synth imports this module
    from arkpose.data.synth import SynthConfig

_LEFT = (255, 80, 40)
_RIGHT = (40, 160, 255)
_MID = (255, 230, 60)


# What the Table 4 components are for, as shares of a split's labelled persons (issue 17's
# benchmark floors in brackets): rotated beyond +-45 deg (>= 20%, the adaptive units), the
# 90th / 10th percentile ratio of person height (>= 2.5, scale), and box IoU >= 0.3 with
# another person of the image (>= 15%, grouping, guidance and scoring).
ROTATED_DEG = 45.0
OVERLAP_IOU = 0.3
BENCHMARK_FLOORS = {"rotated": 0.20, "height_p90_p10": 2.5, "overlapping": 0.15}


def max_box_iou(boxes: np.ndarray) -> np.ndarray:
    """``boxes (P, 4)`` COCO ``[x, y, w, h]`` -> ``(P,)`` each box's largest IoU with another
    box (0 for a lone box)."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    if len(boxes) < 2:
        return np.zeros(len(boxes))
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    iw = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = iw * ih
    area = boxes[:, 2] * boxes[:, 3]
    iou = inter / np.maximum(area[:, None] + area[None] - inter, 1e-12)
    np.fill_diagonal(iou, 0.0)
    return iou.max(1)


def benchmark_shares(data: dict) -> dict:
    """A split's shares of labelled, non-crowd persons that are rotated, its person-height
    spread and its share of overlapping persons (module constants); overlap counts every
    non-crowd person of the image as a possible partner."""
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    labelled = [a for a in anns if a["num_keypoints"] > 0]
    if not labelled:
        return {"persons": 0, "rotated": float("nan"), "height_p90_p10": float("nan"),
                "overlapping": float("nan")}
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    overlapping = 0
    for group in by_image.values():
        best = max_box_iou(np.array([a["bbox"] for a in group]))
        overlapping += int(sum(b >= OVERLAP_IOU for a, b in zip(group, best) if a["num_keypoints"] > 0))
    rotation = np.array([a["synth"]["rotation_deg"] for a in labelled], float)
    heights = np.array([a["synth"]["height_px"] for a in labelled], float)
    p10, p90 = np.percentile(heights, [10, 90])
    return {"persons": len(labelled),
            "rotated": float((np.abs(rotation) > ROTATED_DEG).mean()),
            "height_p90_p10": float(p90 / p10),
            "overlapping": overlapping / len(labelled)}


def format_shares(split: str, shares: dict) -> str:
    """One line: the three shares and whether each meets its floor."""
    def mark(key: str) -> str:
        return "" if shares[key] >= BENCHMARK_FLOORS[key] else " (below the floor)"

    return (f"{split}: {shares['persons']} labelled persons, {100 * shares['rotated']:.0f}% "
            f"rotated beyond +-{ROTATED_DEG:.0f} deg{mark('rotated')}, height P90/P10 "
            f"{shares['height_p90_p10']:.2f}{mark('height_p90_p10')}, "
            f"{100 * shares['overlapping']:.0f}% overlapping (box IoU >= {OVERLAP_IOU})"
            f"{mark('overlapping')}")


def _stats(data: dict) -> dict:
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    labelled = [a for a in anns if a["num_keypoints"] > 0]
    v = np.array([a["keypoints"][2::3] for a in labelled], float).reshape(-1, 17)
    per_image = np.zeros(len(data["images"]), int)
    index = {im["id"]: i for i, im in enumerate(data["images"])}
    for a in anns:
        per_image[index[a["image_id"]]] += 1
    areas = np.array([a["area"] for a in labelled], float)
    return {
        "images": len(data["images"]),
        "persons": len(anns),
        "labelled": len(labelled),
        "crowd_regions": sum(a["iscrowd"] for a in data["annotations"]),
        "per_image": per_image,
        "heights": np.array([a["synth"]["height_px"] for a in anns], float),
        "rotations": np.array([a["synth"]["rotation_deg"] for a in anns], float),
        "crowd_index": np.array([im["crowdIndex"] for im in data["images"]], float),
        "occluded": float((v == 1).sum() / max((v > 0).sum(), 1)),
        "small": int((areas < 32**2).sum()),
        "medium": int(((areas >= 32**2) & (areas < 96**2)).sum()),
        "large": int((areas >= 96**2).sum()),
        "facing": {f: sum(a["synth"]["facing"] == f for a in anns)
                   for f in ("front", "back", "profile")},
        "poses": {p: sum(a["synth"]["pose"] == p for a in anns) for p in POSES},
        "lying_or_rotated": int((np.abs(np.array([a["synth"]["rotation_deg"] for a in anns]))
                                 > 45).sum()) if anns else 0,
    }


def _plots(card: Path, stats: dict) -> list[str]:
    # lazy: matplotlib (~0.5 s), only for the card's plots
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for split, st in stats.items():
        h = st["heights"]
        if h.size:
            axes[0].hist(h, bins=np.geomspace(max(h.min(), 1), h.max() + 1, 25), alpha=0.6,
                         label=split)
        axes[1].hist(st["per_image"], bins=np.arange(st["per_image"].max(initial=0) + 2) - 0.5,
                     alpha=0.6, label=split)
        axes[2].hist(st["rotations"], bins=np.linspace(-180, 180, 37), alpha=0.6, label=split)
        top = max(1.5, float(st["crowd_index"].max(initial=0)) + 0.1)
        axes[3].hist(st["crowd_index"], bins=np.linspace(0, top, 16), alpha=0.6, label=split)
    axes[0].set_xscale("log")
    for ax, title in zip(axes, ("person height (px)", "persons per image",
                                "in-plane rotation (deg)", "crowd index")):
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    with atomic_path(card / "histograms.png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    names.append("histograms.png")
    return names


def _scaled(ann: dict, zoom: int) -> dict:
    """A copy of an annotation with keypoints and bbox in a ``zoom`` times larger image
    (pixel centres at integers: x -> zoom * x + (zoom - 1) / 2)."""
    kp = np.asarray(ann["keypoints"], float).reshape(-1, 3).copy()
    off = (zoom - 1) / 2
    kp[:, :2] = np.where(kp[:, 2:] > 0, kp[:, :2] * zoom + off, 0)
    x, y, w, h = ann["bbox"]
    return {**ann, "keypoints": kp.reshape(-1).tolist(),
            "bbox": [x * zoom, y * zoom, w * zoom, h * zoom]}


def draw_skeleton(image: np.ndarray, anns: list[dict]) -> Image.Image:
    """Overlay keypoints and the COCO skeleton (left warm, right cool, v=1 hollow)."""
    img = Image.fromarray(image)
    d = ImageDraw.Draw(img)
    left = {i for i, n in enumerate(COCO.keypoints) if n.startswith("left")}
    right = {i for i, n in enumerate(COCO.keypoints) if n.startswith("right")}
    for a in anns:
        if a["iscrowd"]:
            x, y, w, h = a["bbox"]
            d.rectangle([x, y, x + w, y + h], outline=(255, 255, 255))
            continue
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        for i, j in COCO.skeleton:
            if kp[i, 2] > 0 and kp[j, 2] > 0:
                c = _LEFT if i in left and j in left else _RIGHT if i in right and j in right \
                    else _MID
                d.line([tuple(kp[i, :2]), tuple(kp[j, :2])], fill=c, width=1)
        for k, (x, y, v) in enumerate(kp):
            if v > 0:
                c = _LEFT if k in left else _RIGHT if k in right else _MID
                if v == 2:
                    d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=c)
                else:
                    d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], outline=c)
    return img


def sample_grid(root: Path, data: dict, split: str, n: int = 16, overlay: bool = True,
                cols: int = 4) -> Image.Image:
    """A grid of the first ``n`` images of a split, with skeleton overlays."""
    images = data["images"][:n]
    by_image: dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    tiles = []
    for im in images:
        tile = Image.open(root / "images" / split / im["file_name"]).convert("RGB")
        anns = by_image.get(im["id"], [])
        # small images are enlarged first so that the overlay stays legible
        zoom = max(1, 256 // max(tile.size))
        if zoom > 1:
            tile = tile.resize((tile.size[0] * zoom, tile.size[1] * zoom), Image.NEAREST)
            anns = [_scaled(a, zoom) for a in anns]
        tiles.append(draw_skeleton(np.asarray(tile), anns) if overlay else tile)
    if not tiles:
        return Image.new("RGB", (1, 1))
    s = tiles[0].size[0]
    rows = (len(tiles) + cols - 1) // cols
    grid = Image.new("RGB", (cols * (s + 2), rows * (s + 2)), (255, 255, 255))
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % cols) * (s + 2), (i // cols) * (s + 2)))
    return grid


def write_card(root: Path, cfg: SynthConfig, splits: dict, manifest: dict) -> Path:
    """Write ``root/card/card.md`` with plots and sample grids; returns the card path."""
    card = Path(root) / "card"
    card.mkdir(exist_ok=True)
    stats = {s: _stats(d) for s, d in splits.items()}
    plots = _plots(card, stats) if any(st["persons"] for st in stats.values()) else []
    grids = []
    for split, data in splits.items():
        if data["images"]:
            sample_grid(root, data, split, overlay=True).save(card / f"samples_{split}.png")
            sample_grid(root, data, split, overlay=False).save(card / f"raw_{split}.png")
            grids.append(split)
    lines = [
        "# SynthPose dataset card",
        "",
        (f"Generator {manifest['version']}, preset `{manifest['preset']}`, seed "
         f"{manifest['seed']}, images {cfg.size}x{cfg.size}. Regenerate with "
         f"`arkpose synth --preset {manifest['preset']} --seed {manifest['seed']} "
         f"--train {cfg.train} --val {cfg.val} --size {cfg.size}`."),
        "",
        ("| split | images | persons | with keypoints | crowd regions | small / medium / large"
         " | occluded keypoints | front / back / profile |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, st in stats.items():
        f = st["facing"]
        lines.append(
            f"| {split} | {st['images']} | {st['persons']} | {st['labelled']} | "
            f"{st['crowd_regions']} | {st['small']} / {st['medium']} / {st['large']} | "
            f"{100 * st['occluded']:.1f}% | {f['front']} / {f['back']} / {f['profile']} |")
    lines += ["", "| split | " + " | ".join(POSES) + " | rotated > 45 deg |",
              "|---|" + "---|" * (len(POSES) + 1)]
    for split, st in stats.items():
        lines.append(f"| {split} | " + " | ".join(str(st["poses"][p]) for p in POSES)
                     + f" | {st['lying_or_rotated']} |")
    lines += ["", ("What the Table 4 components are for (labelled persons; floors: >= 20% rotated, "
              "P90/P10 >= 2.5, >= 15% overlapping):"), ""]
    lines += [f"- {format_shares(split, benchmark_shares(data))}" for split, data in splits.items()
              if data["images"]]
    lines += ["", ("Occluded = share of labelled keypoints with v = 1 (hidden by another "
                   "person, an occluder, the own body, or the far side of a profile head)."), ""]
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    for split in grids:
        lines += [(f"Samples ({split}), skeleton overlay: left joints orange, right blue, "
                   "hidden joints hollow:"), "", f"![samples {split}](samples_{split}.png)",
                  "", f"![raw {split}](raw_{split}.png)", ""]
    lines += ["## Knobs", "", "| knob | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in dataclasses.asdict(cfg).items()]
    path = card / "card.md"
    path.write_text("\n".join(lines) + "\n")
    return path
