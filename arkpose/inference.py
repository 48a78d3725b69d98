"""Test-time inference: resize, flip test, multi-scale fusion, grouping, back-projection.

The pipeline of docs/method.md §5 for one image:

1. :func:`arkpose.data.transforms.resize_for_test` (short side ``test_size · s``, long side
   rounded up to a multiple of 64, rounded at the smallest scale so that all scales are
   proportional);
2. :func:`flip_test` per scale: the model on the image and on its mirror shifted by 3 px,
   averaged (heatmaps, center, absolute keypoint maps);
3. :func:`fuse_scales`: heatmaps upsampled to the reference (scale 1) 1x grid and averaged,
   each scale's center map and keypoint map kept (keypoints converted to reference grid px);
4. :func:`arkpose.decode.parse` (regression and final poses in 1x px) and, for the
   "heatmap" quality, :func:`arkpose.decode.heatmap_poses` with ground-truth cues;
5. back-projection with ``ResizeInfo.to_original`` and COCO result dicts.

Entry points, one per job, each taking the settings as one :class:`DecodeConfig` (usually
``cfg.eval.decode``) plus the resize's ``test_size``: :func:`infer_image` (one image ->
pose tensors per quality) and :func:`predict_dataset` (a dataset -> COCO detections per
quality). :func:`predict` is :func:`infer_image` formatted as COCO dicts, best first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from arkpose import decode
from arkpose.config import DEFAULT_DECODE, QUALITIES, DecodeConfig
from arkpose.data.transforms import ResizeInfo, normalize, resize_for_test
from arkpose.progress import bar as progress_bar
from arkpose.spec import OUTPUT_STRIDE, KeypointSpec

if TYPE_CHECKING:
    from arkpose.data.coco import KeypointDataset

ImageLike = np.ndarray | Image.Image | str | Path  # what load_image reads

FLIP_SHIFT = 3  # input pixels: aligns the flipped run's output pixel u with input 4u


# ---------------------------------------------------------------------------------------
# Flip test


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _run(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x)
    missing = {"heatmaps", "center", "offsets"} - set(out)
    if missing:
        raise KeyError(f"model output lacks {sorted(missing)}; expected heatmaps/center/offsets")
    return {k: out[k].float() for k in ("heatmaps", "center", "offsets")}


@torch.no_grad()
def flip_test(
    model: torch.nn.Module,
    x: torch.Tensor,
    flip_index: Sequence[int] | None = None,
    *,
    flip: bool = True,
) -> dict[str, torch.Tensor]:
    """The model's maps for ``x (N, 3, H, W)`` (normalised, H and W multiples of 4),
    averaged with those of the mirrored image when ``flip`` (docs/method.md §5.2).

    The mirrored run sees ``flipped[..., 3:]`` shifted left by 3 px (zeros on the right),
    so its output pixel u' shows input column ``W - 4 - 4u'`` = ``4 (w - 1 - u')``: the
    maps flip back exactly onto the grid. Heatmaps come back through ``flip_index`` (the
    spec's left/right permutation, ``spec.flip_index``; needed when ``flip``); offsets are
    first turned into absolute keypoint maps, then permuted, mirrored (``x -> w - 1 - x``)
    and flipped back.

    Returns (all on the stride-4 grid ``h = H/4, w = W/4``, float32):
        ``heatmaps (N, K, h, w)``, ``center (N, 1, h, w)`` (averages of the two runs) and
        ``keypoints (N, 2K, h, w)``: the averaged **absolute** keypoint map, position +
        offset, in grid px, channels ``[x0, y0, x1, y1, ...]``.
    """
    x = x.to(_device_of(model))
    out = _run(model, x)
    K = out["heatmaps"].shape[1]
    keypoints = torch.stack([decode.absolute_keypoints(o) for o in out["offsets"]])
    if not flip:
        return {"heatmaps": out["heatmaps"], "center": out["center"], "keypoints": keypoints}
    if flip_index is None:
        raise ValueError(f"the flip test needs flip_index (the keypoint spec's flip permutation, "
                         f"e.g. cfg.data.spec.flip_index) for the model's {K} keypoints")
    perm = torch.as_tensor(list(flip_index), dtype=torch.long, device=x.device)
    if perm.numel() != K:
        raise ValueError(f"flip_index has {perm.numel()} entries for {K} keypoints")
    mirrored = torch.zeros_like(x)
    mirrored[..., :-FLIP_SHIFT] = torch.flip(x, [3])[..., FLIP_SHIFT:]
    fout = _run(model, mirrored)
    w = fout["heatmaps"].shape[-1]
    f_heat = torch.flip(fout["heatmaps"], [3])[:, perm]
    f_center = torch.flip(fout["center"], [3])
    f_kp = torch.stack([decode.absolute_keypoints(o) for o in fout["offsets"]])
    f_kp = f_kp.reshape(x.shape[0], K, 2, *f_kp.shape[-2:])[:, perm]
    f_kp = torch.stack([w - 1 - f_kp[:, :, 0], f_kp[:, :, 1]], 2)
    f_kp = torch.flip(f_kp.reshape(x.shape[0], 2 * K, *f_kp.shape[-2:]), [3])
    return {
        "heatmaps": (out["heatmaps"] + f_heat) / 2,
        "center": (out["center"] + f_center) / 2,
        "keypoints": (keypoints + f_kp) / 2,
    }


# ---------------------------------------------------------------------------------------
# One image: resize, scales, fusion


def load_image(image: ImageLike) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB from an array, a PIL image or a file path."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} does not exist")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as err:
            raise ValueError(f"cannot read image {path}: {err}") from None
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {arr.dtype}")
    return arr


@dataclass
class FusedMaps:
    """What :func:`fuse_scales` gives :func:`arkpose.decode.parse`, plus the resize.

    ``heatmaps``: ``(K, h, w)`` reference-grid maps (single scale: upsampled lazily by the
    grouping) or ``(K, 4h, 4w)`` 1x maps (multi-scale average); ``centers``: per-scale
    ``(1, h_s, w_s)`` maps, reference first; ``keypoints``: per-scale ``(2K, h_s, w_s)``
    absolute keypoint maps in reference grid px; ``info``: the reference ResizeInfo.
    """

    heatmaps: torch.Tensor
    centers: list[torch.Tensor]
    keypoints: list[torch.Tensor]
    info: ResizeInfo


def _reference_scale(scales: Sequence[float]) -> float:
    if not scales:
        raise ValueError("scales must not be empty")
    if any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    return min(scales, key=lambda s: (abs(np.log(s)), s))


@torch.no_grad()
def fuse_scales(
    model: torch.nn.Module,
    image: np.ndarray,
    flip_index: Sequence[int] | None,
    settings: DecodeConfig = DEFAULT_DECODE,
    test_size: int = 512,
) -> FusedMaps:
    """Run :func:`flip_test` at every scale and fuse the maps (docs/method.md §5.3)."""
    scales = tuple(settings.scales)
    ref = _reference_scale(scales)
    order = [ref] + [s for s in scales if s != ref]
    min_scale = min(scales)
    heat_sum, centers, kmaps, ref_info = None, [], [], None
    ref_hw = None
    for s in order:
        resized, info = resize_for_test(
            image, test_size, 64, scale=s / ref, min_scale=min_scale / ref
        )
        x = normalize(resized)[None]
        maps = flip_test(model, x, flip_index, flip=settings.flip)
        heat, center, kp = maps["heatmaps"][0], maps["center"][0], maps["keypoints"][0]
        if ref_info is None:
            ref_info, ref_hw = info, tuple(heat.shape[-2:])
        else:
            # This scale's grid px -> its input px -> original -> reference input px -> grid.
            K = kp.shape[0] // 2
            pts = kp.reshape(K, 2, -1).permute(0, 2, 1) * OUTPUT_STRIDE
            pts = ref_info.to_resized(info.to_original(pts)) / OUTPUT_STRIDE
            kp = pts.permute(0, 2, 1).reshape(kp.shape).float()
        centers.append(center.cpu())
        kmaps.append(kp.cpu())
        if len(scales) > 1:
            up = decode.upsample_to(heat, (4 * ref_hw[0], 4 * ref_hw[1])).cpu()
            heat_sum = up if heat_sum is None else heat_sum + up
        else:
            heat_sum = heat.cpu()
    heatmaps = heat_sum / len(scales) if len(scales) > 1 else heat_sum
    return FusedMaps(heatmaps, centers, kmaps, ref_info)


@torch.no_grad()
def fuse_batch(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    flip_index: Sequence[int] | None,
    settings: DecodeConfig = DEFAULT_DECODE,
    test_size: int = 512,
) -> list[FusedMaps]:
    """:func:`fuse_scales` of several images, with one network call for all of them when
    there is one scale and their resized shapes agree (a benchmark of equal-sized images:
    ~3x less time per image on a CPU); one at a time otherwise. The maps equal those of
    :func:`fuse_scales` up to float rounding (a batched conv may sum in another order)."""
    if len(tuple(settings.scales)) != 1 or len(images) < 2:
        return [fuse_scales(model, im, flip_index, settings, test_size) for im in images]
    resized = [resize_for_test(im, test_size, 64, scale=1.0, min_scale=1.0) for im in images]
    if len({r.shape for r, _ in resized}) != 1:
        return [fuse_scales(model, im, flip_index, settings, test_size) for im in images]
    x = torch.stack([normalize(r) for r, _ in resized])
    maps = flip_test(model, x, flip_index, flip=settings.flip)
    return [FusedMaps(maps["heatmaps"][i].cpu(), [maps["center"][i].cpu()],
                      [maps["keypoints"][i].cpu()], info) for i, (_, info) in enumerate(resized)]


def _cues_to_1x(sample: dict, info: ResizeInfo) -> torch.Tensor:
    """Ground-truth poses of a raw sample usable as cues: ``(G, K, 3)`` in reference 1x px."""
    kps = np.asarray(sample.get("keypoints", np.zeros((0, 0, 3))), np.float64)
    if kps.size == 0:
        return torch.zeros(0, kps.shape[1] if kps.ndim == 3 else 0, 3)
    keep = (kps[..., 2] > 0).any(-1)
    if "iscrowd" in sample:
        keep &= np.asarray(sample["iscrowd"]) == 0
    kps = kps[keep]
    xy = info.to_resized(kps[..., :2])
    return torch.from_numpy(np.concatenate([xy, kps[..., 2:]], -1)).float()


def _to_original(poses: torch.Tensor, info: ResizeInfo) -> torch.Tensor:
    out = poses.clone()
    out[..., :2] = info.to_original(poses[..., :2].double()).to(poses.dtype)
    return out


def _check_qualities(qualities: Iterable[str]) -> tuple[str, ...]:
    qualities = tuple(qualities)
    bad = [q for q in qualities if q not in QUALITIES]
    if bad:
        raise ValueError(f"unknown quality {bad[0]!r}; choose from {QUALITIES}")
    return qualities


@torch.no_grad()
def infer_image(
    model: torch.nn.Module,
    image: ImageLike,
    spec: KeypointSpec,
    settings: DecodeConfig = DEFAULT_DECODE,
    *,
    test_size: int = 512,
    qualities: Iterable[str] = ("final",),
    sample: dict | None = None,
    score_fn: decode.ScoreFn | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Poses of one image for each requested quality, in original pixels.

    Returns ``{quality: (poses (P, K, 3) x/y/joint score, scores (P,))}``. "heatmap" needs
    ``sample`` (a raw dataset sample with ``keypoints``, optionally ``iscrowd``): its
    labelled ground-truth poses are the grouping cues (:func:`arkpose.decode.heatmap_poses`).
    ``spec``: the model's keypoint layout (``cfg.data.spec``), for the flip permutation.
    ``settings``: the decoding (``cfg.eval.decode``);
    ``test_size``: the short side at scale 1 (``cfg.eval.test_size``); ``score_fn``: the
    final poses' score (the learned scoring), default the mean joint score.
    """
    qualities = _check_qualities(qualities)
    fused = fuse_scales(model, load_image(image), spec.flip_index, settings, test_size)
    return decode_fused(fused, settings, qualities=qualities, sample=sample, score_fn=score_fn)


def decode_fused(
    fused: FusedMaps,
    settings: DecodeConfig = DEFAULT_DECODE,
    *,
    qualities: Iterable[str] = ("final",),
    sample: dict | None = None,
    score_fn: decode.ScoreFn | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The second half of :func:`infer_image`: an image's fused maps -> its poses per quality
    in original pixels (same arguments and result)."""
    return decode_fused_batch([fused], settings, qualities=qualities, samples=[sample],
                              score_fn=score_fn)[0]


def decode_fused_batch(
    fused: Sequence[FusedMaps],
    settings: DecodeConfig = DEFAULT_DECODE,
    *,
    qualities: Iterable[str] = ("final",),
    samples: Sequence[dict | None] | None = None,
    score_fn: decode.ScoreFn | None = None,
) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """:func:`decode_fused` of several images (``samples`` one per image, or None), with
    one Gaussian refinement for all of them (:func:`arkpose.decode.decode_many`): the same
    numbers; the fit, mostly per-call overhead, takes ~9x less time for 16 images."""
    qualities = _check_qualities(qualities)
    cues = None
    if "heatmap" in qualities:
        if samples is None or any(s is None for s in samples):
            raise ValueError("the 'heatmap' quality needs the ground-truth sample as cues")
        cues = [_cues_to_1x(s, f.info) for s, f in zip(samples, fused, strict=True)]
    found = decode.decode_many([(f.heatmaps, f.centers, f.keypoints) for f in fused], settings,
                               qualities=qualities, cues=cues, score_fn=score_fn)
    return [{q: (_to_original(poses, f.info), scores) for q, (poses, scores) in res.items()}
            for f, res in zip(fused, found)]


# ---------------------------------------------------------------------------------------
# COCO results


def to_coco(
    poses: torch.Tensor, scores: torch.Tensor, image_id: int, category_id: int = 1
) -> list[dict]:
    """COCO keypoint results: ``poses (P, K, 3)`` (x, y, joint score) original px.

    Each dict: ``image_id``, ``category_id``, ``keypoints`` (flat x, y, joint score),
    ``score`` and ``bbox`` = the keypoints' extent ``[x, y, w, h]``.
    """
    out = []
    p = poses.detach().double().cpu().numpy()
    s = scores.detach().double().cpu().numpy()
    for pose, score in zip(p, s):
        x0, y0 = pose[:, 0].min(), pose[:, 1].min()
        x1, y1 = pose[:, 0].max(), pose[:, 1].max()
        out.append({
            "image_id": int(image_id),
            "category_id": int(category_id),
            "keypoints": [float(v) for v in pose.reshape(-1)],
            "score": float(score),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        })
    return out


def predict(
    model: torch.nn.Module,
    image: ImageLike,
    spec: KeypointSpec,
    settings: DecodeConfig = DEFAULT_DECODE,
    *,
    test_size: int = 512,
    image_id: int = 0,
    quality: str = "final",
    score_fn: decode.ScoreFn | None = None,
) -> list[dict]:
    """Poses in one image as COCO result dicts (original pixels), best first.

    ``image``: uint8 ``(H, W, 3)`` RGB array, PIL image or file path; ``spec``,
    ``settings``, ``test_size``, ``score_fn`` as :func:`infer_image`.
    ``quality`` is "final" or "regression". No person found -> ``[]``.
    """
    if quality not in ("final", "regression"):
        raise ValueError(f"predict gives 'final' or 'regression' poses, not {quality!r}")
    poses, scores = infer_image(model, image, spec, settings, test_size=test_size,
                                qualities=(quality,), score_fn=score_fn)[quality]
    order = torch.argsort(-scores, stable=True)
    return to_coco(poses[order], scores[order], image_id)


def decode_dataset(
    model: torch.nn.Module,
    dataset: KeypointDataset,
    spec: KeypointSpec,
    settings: DecodeConfig = DEFAULT_DECODE,
    *,
    test_size: int = 512,
    qualities: Iterable[str] = ("final",),
    max_images: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    score_fn: decode.ScoreFn | None = None,
    desc: str = "inference",
) -> Iterator[tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """``(sample, {quality: (poses, scores)})`` of every image of a raw dataset (``dataset[i]``
    has ``image``, ``image_id`` and, for the "heatmap" quality, ``keypoints``/``iscrowd``), in
    original pixels; ``spec`` and the rest as :func:`infer_image`.

    Images go through the network ``batch_size`` at a time where their sizes agree
    (:func:`fuse_batch`), one at a time otherwise; each batch is decoded with one
    refinement (:func:`decode_fused_batch`). ``max_images > 0`` takes the first N.
    """
    qualities = _check_qualities(qualities)
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    was_training = model.training
    model.eval()
    bar = progress_bar(total=n, desc=desc, unit="img", enabled=progress)
    try:
        for start in range(0, n, batch_size):
            samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
            images = [load_image(sample["image"]) for sample in samples]
            fused = fuse_batch(model, images, spec.flip_index, settings, test_size)
            yield from zip(samples, decode_fused_batch(fused, settings, qualities=qualities,
                                                       samples=samples, score_fn=score_fn))
            bar.update(len(samples))
    finally:
        bar.close()
        model.train(was_training)


def predict_dataset(
    model: torch.nn.Module,
    dataset: KeypointDataset,
    spec: KeypointSpec,
    settings: DecodeConfig = DEFAULT_DECODE,
    *,
    qualities: Iterable[str] = ("final",),
    **options,
) -> tuple[dict[str, list[dict]], list[int]]:
    """COCO results of every image of a raw dataset: :func:`decode_dataset` (same arguments)
    -> ``({quality: detections}, image_ids)``."""
    qualities = _check_qualities(qualities)
    dets: dict[str, list[dict]] = {q: [] for q in qualities}
    ids: list[int] = []
    for sample, res in decode_dataset(model, dataset, spec, settings, qualities=qualities, **options):
        image_id = int(sample["image_id"])
        for q in qualities:
            dets[q].extend(to_coco(*res[q], image_id))
        ids.append(image_id)
    return dets, ids
