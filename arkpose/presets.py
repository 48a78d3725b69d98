"""Named presets: plain :class:`arkpose.config.Config` objects for SynthPose on a CPU and
for the paper's recipes on COCO / CrowdPose (``--preset NAME``; docs/training.md)."""

from __future__ import annotations

from arkpose.config import (
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
)


def _cpu(name: str, synth: str, epochs: int, backbone: str, size: int, batch: int) -> Config:
    cfg = Config(name=name)
    cfg.data = DataConfig(
        root=f"data/synthpose-{synth}",
        synth_preset=synth,
        input_size=size,
        # Both are stated for 512-px crops of COCO images; scale them to the smaller crops so
        # the same share of persons gets a center (at 128 px, 32² would drop 88% of SynthPose).
        max_translate=40.0 * size / 512,
        min_center_area=32.0**2 * (size / 512) ** 2,
        # Models trained for minutes on a CPU localise joints to ~2 output pixels; COCO's
        # tolerance then scores every Table 4 row ~0 (docs/synthpose.md, "Calibration").
        oks_sigma_scale=3.0,
    )
    # Head widths per CPU backbone (arkpose/model/hrnet.py gives the resulting sizes).
    heat, reg = {"nano-w16": (8, 24)}.get(backbone, (16, 48))
    cfg.model = ModelConfig(
        backbone=backbone, heatmap_channels=heat, regression_channels=reg
    )
    cfg.optim = OptimConfig(batch_size=batch, epochs=epochs)
    cfg.eval = EvalConfig(every=max(1, epochs // 2), val_images=200, test_size=size)
    return cfg


def _smoke() -> Config:
    cfg = _cpu("smoke", "smoke", 2, "nano-w16", 128, 16)
    cfg.ablation_seeds = 2
    cfg.data.train_subset = 64
    cfg.data.val_subset = 32  # `make test` runs the whole ablation on it, twice
    cfg.eval.every = 2
    cfg.eval.val_images = 16
    return cfg


def _quick() -> Config:
    cfg = _cpu("quick", "quick", 10, "tiny-w16", 128, 16)
    cfg.ablation_seeds = 3
    return cfg


def _laptop() -> Config:
    """The default ablation (issue 17): SynthPose `table4` (rotated, small and overlapping
    persons), every row fine-tuned from one shared backbone (docs/ablations.md, "Shared
    backbone"), calibrated in docs/synthpose.md, "Calibration of the laptop preset"."""
    # 4 epochs per row, not 2: on the +tradeoff/+adaptive pair, 5 seeds, the seed-to-seed
    # SD of the regression delta fell from 3.1 to 0.5 AP points, its CI half-width from 3.8
    # to 0.7 (docs/synthpose.md, "Calibration": the rows were under-trained, not noisy).
    cfg = _cpu("laptop", "table4", 4, "nano-w16", 128, 16)
    cfg.ablation_seeds = 5
    cfg.pretrain_epochs = 8
    cfg.optim.ema = 0.99
    cfg.eval.every = 0  # the ablation evaluates every run at its end
    cfg.eval.scorer_images = 600  # ~3x fewer than the training set: a minute less per seed
    # The first two of a seed's four epochs of batches (~1 GB each; all four would hold
    # ~4 GB of a laptop's memory): +guidance reuses the baseline's, +adaptive the
    # +tradeoff's (the tradeoff mask is a target).
    cfg.launch.batch_cache_gb = 2.5
    # Two 1-thread worker processes keep both cores busy (arkpose.pool): a seed's
    # baseline/+guidance pair in one, its +tradeoff/+adaptive/+scoring in the other.
    cfg.launch.launcher = "pool"
    cfg.launch.jobs = 2
    # Persons from 34 px: at 3x COCO's tolerance a baseline's final AP is ~13 (a floor
    # effect), at 5x ~30, the edge of the 30-70 the issue asks for (docs/synthpose.md).
    cfg.data.oks_sigma_scale = 6.0
    return cfg


def _full_cpu() -> Config:
    return _cpu("full-cpu", "full", 20, "tiny-w16", 256, 12)


def _coco_w32() -> Config:
    cfg = Config(name="coco-w32")
    cfg.data = DataConfig(
        dataset="coco",
        root="data/coco",
        synth_preset="",
        train_ann="annotations/person_keypoints_train2017.json",
        train_images="images/train2017",
        val_ann="annotations/person_keypoints_val2017.json",
        val_images="images/val2017",
        workers=4,
    )
    return cfg


def _coco_w48() -> Config:
    cfg = _coco_w32()
    cfg.name = "coco-w48"
    cfg.data.input_size = 640
    cfg.model.backbone = "w48"
    cfg.model.heatmap_channels = 48
    cfg.eval.test_size = 640
    return cfg


def _crowdpose_w32() -> Config:
    cfg = Config(name="crowdpose-w32")
    cfg.data = DataConfig(
        dataset="crowdpose",
        root="data/crowdpose",
        synth_preset="",
        train_ann="json/crowdpose_trainval.json",
        train_images="images",
        val_ann="json/crowdpose_test.json",
        val_images="images",
        workers=4,
    )
    cfg.optim = OptimConfig(batch_size=10, epochs=300, lr_drops=(200 / 300, 260 / 300))
    return cfg


PRESETS = {
    "smoke": _smoke,
    "quick": _quick,
    "laptop": _laptop,
    "full-cpu": _full_cpu,
    "coco-w32": _coco_w32,
    "coco-w48": _coco_w48,
    "crowdpose-w32": _crowdpose_w32,
}

# Presets whose data cannot be generated here: they need a --data directory from the user.
REAL_DATA_PRESETS = ("coco-w32", "coco-w48", "crowdpose-w32")


def preset(name: str) -> Config:
    """A fresh copy of the named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; presets are {sorted(PRESETS)}") from None
