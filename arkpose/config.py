"""Configuration: plain dataclasses, ``key=value`` overrides, yaml io; the named presets are in
:mod:`arkpose.presets`.

One :class:`Config` describes a training run and its evaluation. Every Table 4 component
is one boolean: ``model.guidance``, ``loss.tradeoff``, ``model.adaptive`` and
``eval.learned_scoring``. A notebook parameter or a ``--set section.field=value`` flag
maps to exactly one field; an unknown key fails with the list of valid keys.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arkpose.spec import KeypointSpec, get_spec


class ConfigError(ValueError):
    """A configuration key or value that does not fit the schema."""


# data.dataset -> the built-in keypoint spec it is annotated with.
DATASET_SPECS = {"synth": "coco", "coco": "coco", "crowdpose": "crowdpose"}


@dataclass
class DataConfig:
    """Where the data lives and how training samples are made (docs/method.md §2, §4)."""

    dataset: str = "synth"  # "synth" | "coco" | "crowdpose": picks the keypoint spec
    root: str = "data/synthpose-quick"
    synth_preset: str = "quick"  # SynthPose preset that generates `root` when missing; "" = real data
    train_ann: str = "annotations/person_keypoints_train.json"
    train_images: str = "images/train"
    val_ann: str = "annotations/person_keypoints_val.json"
    val_images: str = "images/val"
    input_size: int = 512  # square training crop, pixels
    max_rotation: float = 30.0  # degrees, U(-r, r)
    min_scale: float = 0.75
    max_scale: float = 1.5
    max_translate: float = 40.0  # pixels at a 512 crop; scaled with input_size
    flip_prob: float = 0.5
    sigma: float = 2.0  # keypoint heatmap sigma, grid pixels
    center_sigma: float = 4.0
    min_center_area: float = 32.0**2  # persons smaller get no center and no offsets
    workers: int = 0  # DataLoader workers; 0 on shared 2-core CPUs
    train_subset: int = 0  # 0 = all images
    val_subset: int = 0  # 0 = all images
    # OKS tolerance: the dataset's sigmas times this. 1 = the dataset's own (COCO, CrowdPose);
    # the CPU SynthPose presets use 3 (docs/synthpose.md: at CPU scale every AP is ~0 at 1).
    oks_sigma_scale: float = 1.0

    @property
    def spec(self) -> KeypointSpec:
        """The keypoint layout of this dataset (SynthPose uses COCO's 17 keypoints), with
        its OKS sigmas multiplied by ``oks_sigma_scale``."""
        try:
            spec = get_spec(DATASET_SPECS[self.dataset])
        except KeyError:
            raise ConfigError(
                f"unknown data.dataset {self.dataset!r}; choose one of {sorted(DATASET_SPECS)}"
            ) from None
        if not self.oks_sigma_scale > 0:
            raise ConfigError(f"data.oks_sigma_scale must be > 0, got {self.oks_sigma_scale!r}")
        if self.oks_sigma_scale == 1.0:
            return spec
        sigmas = tuple(s * self.oks_sigma_scale for s in spec.sigmas)
        return dataclasses.replace(spec, sigmas=sigmas)


@dataclass
class ModelConfig:
    """Network shape and the two model-side Table 4 switches (docs/method.md §1)."""

    backbone: str = "w32"  # "w32" | "w48" | "tiny-w16" | "nano-w16"
    guidance: bool = True  # Table 4: regression head sees the heatmaps
    adaptive: bool = True  # Table 4: adaptive (pixel-wise STN) units vs regular ones
    heatmap_channels: int = 32  # width of the heatmap head's branches
    regression_channels: int = 256  # width of the regression head's unit
    heatmap_dilations: tuple[int, ...] = (1, 2, 3)
    channels_last: bool = True
    # The units' 3x3 convs: "official" (regular N(0, 0.001²), adaptive uniform ±1/sqrt(9C)),
    # "normal" or "uniform" for both, so the adaptive switch need not change the init too.
    unit_init: str = "official"
    # How the adaptive convs sample when training on a CPU (arkpose.model.adaptive): "auto"
    # (padded from 16 channels, grid_sample below), "padded", "embedding_bag", "grid_sample".
    # Same function, different float rounding, so it is part of a run's identity.
    cpu_sampler: str = "auto"
    # Backbone overrides; an empty tuple keeps the preset's value (arkpose.model.BACKBONES).
    backbone_widths: tuple[int, ...] = ()  # 4 branch widths
    backbone_modules: tuple[int, ...] = ()  # HR modules in stages 2, 3, 4
    backbone_blocks: tuple[int, ...] = ()  # BasicBlocks per branch in stages 2, 3, 4
    # A checkpoint whose backbone weights replace the initial ones ("" = none); run digests
    # hold the file's sha256, not its path (arkpose.train.pretrained).
    init_backbone: str = ""


@dataclass
class LossConfig:
    """Heatmap and offset losses (docs/method.md §2-3)."""

    tradeoff: bool = True  # Table 4: down-weight the background of the heatmap loss
    tradeoff_bg_weight: float = 0.1  # background weight when tradeoff is on (1.0 when off)
    tradeoff_mask: str = "union"  # "union" (official) | "per_keypoint" (paper, DEKR)
    offset_normaliser: str = "official"  # "official" 1/sqrt(w*h) | "paper" 1/sqrt(H^2+W^2)
    offset_weight: float = 0.01  # lambda
    smooth_l1_beta: float = 1.0 / 9.0

    @property
    def background_weight(self) -> float:
        return self.tradeoff_bg_weight if self.tradeoff else 1.0


@dataclass
class OptimConfig:
    """Optimiser and schedule (docs/method.md §4)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 12  # per process
    epochs: int = 140
    # The paper drops at epochs 90 and 120 of 140; CPU presets keep the same fractions.
    lr_drops: tuple[float, ...] = (90 / 140, 120 / 140)
    lr_factor: float = 0.1
    amp: str = "none"  # "none" | "bf16" | "fp16" (CUDA only)
    grad_clip: float = 0.0  # 0 = off
    # Decay per step of an average of the weights (arkpose.train.ema); 0 = off. On, the
    # average is what validation, the checkpoints' `model` and every evaluation use.
    ema: float = 0.0


# The three Table 4 qualities an evaluation reports (docs/method.md §7), in table order.
QUALITIES = ("regression", "heatmap", "final")


@dataclass(frozen=True)
class DecodeConfig:
    """Every test-time setting from the network's input to the poses (docs/method.md §5), given
    whole to :mod:`arkpose.inference` and :func:`arkpose.decode.parse`; ``--set
    eval.decode.<field>=...``. Frozen: one object describes one decoding."""

    flip: bool = True  # §5.2 flip test
    scales: tuple[float, ...] = (1.0,)  # §5.3 test scales, fused on the scale-1 grid
    max_people: int = 30  # §5.4-5.5 centers kept per scale, and poses after the pose NMS
    center_threshold: float = 0.01  # §5.4 a center's score must exceed it
    scale_decrease: float = 0.001  # §5.3 weight of the other scales' centers
    nms_distance: float = 10.0  # §5.5 joints closer than this (1x px) coincide ...
    nms_overlap: int = 10  # ... and more than this many coinciding joints make a duplicate
    candidates: int = 30  # §5.7 keypoint candidates per type ...
    candidate_kernel: int = 5  # ... local maxima in this window of the 1x heatmaps ...
    keypoint_threshold: float = 0.01  # ... values not above it count 0
    max_distance: float = 75.0  # §5.7 absorb radius, 1x px
    refine: bool = True  # §5.8 the Gaussian-fit refinement
    refine_threshold: float = 0.05  # joints scoring above it are refined ...
    refine_window: int = 13  # ... on this square window of the 1x heatmap ...
    refine_sigma: float = 2.0  # ... starting from this sigma


DEFAULT_DECODE = DecodeConfig()  # the official decoding; a default argument needs one instance


# Keys of decoding settings before they moved into eval.decode: configs stored by older
# versions (config.yaml, checkpoints) still load (:func:`from_dict`).
MOVED_KEYS = {f"eval.{name}": f"eval.decode.{name}"
              for name in ("flip", "scales", "max_people", "center_threshold")}
# Keys that are no longer settings, with the only value they could hold.
RETIRED_KEYS = {"data.output_stride": 4}  # now arkpose.spec.OUTPUT_STRIDE


@dataclass
class EvalConfig:
    """Test-time options (docs/method.md §5) and the validation during training."""

    every: int = 1  # validate every N epochs (0 = never)
    val_images: int = 0  # validation subset during training; 0 = all
    test_size: int = 512  # short side of the test-time resize
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    learned_scoring: bool = False  # Table 4: rank poses by the learned OKS predictor
    scorer_images: int = 0  # `arkpose ablate`: training images the scorer learns from; 0 = all
    scoring_mode: str = "official"  # "official": predicted OKS x mean joint score | "paper"
    qualities: tuple[str, ...] = QUALITIES


@dataclass
class LaunchConfig:
    """Where `arkpose ablate` runs its trainings (arkpose.launch; docs/cluster.md). Not part of
    a run's identity: where a run trained does not change what it is."""

    # "inprocess" | "pool" (worker processes of the driver, arkpose.pool) | "local" (submitit
    # processes) | "slurm" (job array)
    launcher: str = "inprocess"
    jobs: int = 2  # at once: pool workers, local processes, or the SLURM array's parallelism
    wait: bool = True  # wait for the jobs, then evaluate; false: submit and return
    partition: str = ""  # SLURM partition ("" = the cluster's default)
    gpus_per_job: int = 1  # one training per job; > 1 runs it as DDP with one task per GPU
    cpus_per_job: int = 8  # per task
    time_min: int = 24 * 60  # a job's time limit; at its end the job saves, requeues, resumes
    mem_gb: int = 64
    account: str = ""
    qos: str = ""
    max_requeues: int = 20  # timeouts and preemptions per job before it is given up
    # In-process runs (and each pool worker) keep the last data settings' training batches
    # in memory up to this many GB, so the next row of the same seed takes them instead of
    # augmenting again (arkpose.train.loader.BatchCache: the same batches, bit for bit). 0 = off.
    batch_cache_gb: float = 0.0

    @property
    def submitted(self) -> bool:
        """Whether trainings run as submitit jobs ("local", "slurm": arkpose.launch.train_all),
        separate processes sharing nothing with the driver; "inprocess" and "pool" train in
        the driver or its workers (arkpose.pool)."""
        return self.launcher in ("local", "slurm")


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    # How many seeds `arkpose ablate` runs each row with by default (seeds 0..N-1); says how
    # many runs to make, not how one is made, so run digests leave it out (arkpose.provenance).
    ablation_seeds: int = 1
    # `arkpose ablate`: first train one run of the first row for this many epochs, whose
    # backbone every row and seed starts from (model.init_backbone; the CPU presets' stand-in
    # for the paper's ImageNet weights). 0 = every run starts from scratch. Like
    # ablation_seeds it says how an ablation is run: the rows' digests hold the backbone.
    pretrain_epochs: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    # Also write TensorBoard event files beside metrics.jsonl (the `tensorboard` extra);
    # logging only, so not part of a run's identity (arkpose.provenance.NOT_IN_DIGEST).
    tensorboard: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


# ---------------------------------------------------------------------------------------
# Overrides and io


def valid_keys(cfg: Any = None, prefix: str = "") -> list[str]:
    """All ``section.field`` (``eval.decode.field``, top-level) keys :func:`apply_overrides` takes."""
    cfg = Config() if cfg is None else cfg
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _field_type(owner: Any, name: str) -> Any:
    return typing.get_type_hints(type(owner))[name]


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true/false)")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn ``value`` (a string from the command line, or a yaml scalar/list) into ``hint``."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            return value if isinstance(value, bool) else _parse_bool(str(value))
        if hint is int:
            if isinstance(value, bool):
                raise ValueError("boolean given")
            return int(value) if not isinstance(value, str) else int(value.strip())
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            if isinstance(value, str):
                parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
            else:
                parts = list(value)
            return tuple(_coerce(p, item, key) for p in parts)
        if origin in (typing.Union, types.UnionType):
            return value
    except ValueError as err:
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(hint, '__name__', hint)}: {err}")
    raise ConfigError(f"{key}: unsupported field type {hint}")


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set ``cfg.<key>`` (``"model.adaptive"``, ``"seed"``) from a string or a python value."""
    if _with_value(cfg, key.split("."), value, key) is None:
        raise ConfigError(unknown_key_message(key, valid_keys(cfg)))


def _with_value(owner: Any, parts: list[str], value: Any, key: str) -> Any:
    """``owner`` with the field at ``parts`` set (in place, or a copy of a frozen section);
    None when ``parts`` names no settable field."""
    name, rest = parts[0], parts[1:]
    if name not in {f.name for f in dataclasses.fields(owner)}:
        return None
    current = getattr(owner, name)
    if dataclasses.is_dataclass(current) != bool(rest):
        return None
    new = _with_value(current, rest, value, key) if rest else _coerce(
        value, _field_type(owner, name), key)
    if new is None:
        return None
    if type(owner).__dataclass_params__.frozen:
        return dataclasses.replace(owner, **{name: new})
    setattr(owner, name, new)
    return owner


def unknown_key_message(key: str, keys: list[str]) -> str:
    """One line: the unknown ``key``, the nearest valid ones, and where the rest are."""
    from arkpose.suggest import did_you_mean

    sections = sorted({k.split(".")[0] for k in keys if "." in k})
    moved = f"did you mean {MOVED_KEYS[key]}? (moved there)" if key in MOVED_KEYS else ""
    hint = moved or did_you_mean(key, keys) or (
        f"keys look like section.field, sections {', '.join(sections)}")
    return f"unknown config key {key!r}; {hint} (every key and its meaning: arkpose/config.py)"


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Apply ``["model.adaptive=false", ...]`` or ``{"model.adaptive": False}`` in place."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        set_value(cfg, key, value)
    return cfg


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.field=value")
    return key.strip(), value


def flatten_dict(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}`` at any depth; an empty dict is a
    value of its own (so no key disappears)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten(cfg: Config) -> dict[str, Any]:
    """``{"seed": 0, "model.adaptive": True, ...}``: every field under its ``--set`` key."""
    return flatten_dict(to_dict(cfg))


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of builtins (tuples become lists), for yaml/json and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def from_dict(data: dict) -> Config:
    """Inverse of :func:`to_dict`; unknown keys fail with the list of valid keys."""
    flat = flatten_dict(data)
    for old, value in RETIRED_KEYS.items():
        if old in flat and flat.pop(old) != value:
            raise ConfigError(f"{old} is no longer a setting and can only be {value}")
    return apply_overrides(Config(), {MOVED_KEYS.get(k, k): v for k, v in flat.items()})


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_yaml(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid yaml: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(data)


def clone(cfg: Config) -> Config:
    return copy.deepcopy(cfg)
