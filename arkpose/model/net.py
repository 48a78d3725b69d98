"""PoseNet: HRNet backbone + heatmap head + (heatmap-guided) regression head."""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from arkpose.config import ModelConfig
from arkpose.model.adaptive import AdaptiveConv2d, AdaptiveUnit, RegularUnit
from arkpose.model.heads import HeatmapHead, RegressionHead
from arkpose.model.hrnet import HRNet, backbone_shape, concat_features

SIZE_MULTIPLE = 32  # the lowest HRNet branch has stride 32


class PoseNet(nn.Module):
    """forward(x (N, 3, H, W), return_transforms=False) -> dict:

    - ``heatmaps`` (N, K, H/4, W/4): keypoint heatmaps (logits-free regression targets);
    - ``center`` (N, 1, H/4, W/4): person-center heatmap (from the regression head);
    - ``offsets`` (N, 2K, H/4, W/4): keypoint − grid position in grid pixels, [x0, y0, ...];
    - with ``return_transforms``: ``transforms`` {unit name: T (N, 4, H/4, W/4)} for every
      adaptive unit ("heatmap.<branch>.t1/t2", "regression.t1/t2"); T = [[t0, t1], [t2, t3]]
      acts on (dy, dx). Empty for regular units.

    H and W must be multiples of 32.
    """

    def __init__(
        self, backbone: HRNet, heatmap_head: HeatmapHead, regression_head: RegressionHead,
        guidance: bool = True, channels_last: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.heatmap_head = heatmap_head
        self.regression_head = regression_head
        self.guidance = guidance
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor, return_transforms: bool = False) -> dict:
        check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = concat_features(self.backbone(x))
        heatmaps, t_heat = self.heatmap_head(features)
        # Guidance: the regression head sees the averaged heatmaps, not detached.
        if self.guidance:
            # The averaged heatmaps come back channels-first; matching F's layout keeps the
            # 497-channel concatenation from being copied again before the next conv.
            guide = heatmaps.contiguous(memory_format=torch.channels_last) if self.channels_last else heatmaps
            reg_in = torch.cat([features, guide], 1)
        else:
            reg_in = features
        offsets, center, t_reg = self.regression_head(reg_in)
        out = {
            "heatmaps": heatmaps.contiguous(),
            "center": center.contiguous(),
            "offsets": offsets.contiguous(),
        }
        if return_transforms:
            out["transforms"] = {**t_heat, **t_reg}
        return out


def check_input(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"PoseNet expects images (N, 3, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(
            f"input height and width must be multiples of {SIZE_MULTIPLE} (HRNet fuses branches "
            f"at strides 4..32 by exact 2x upsampling); got {h}x{w}. Pad or resize the image "
            f"(e.g. to {-(-h // SIZE_MULTIPLE) * SIZE_MULTIPLE}x{-(-w // SIZE_MULTIPLE) * SIZE_MULTIPLE})."
        )


UNIT_INITS = ("official", "normal", "uniform")


def _keyed_generator(seed: int, name: str) -> torch.Generator:
    """A generator that depends on ``(seed, name)`` only, never on what was drawn before."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def _init_key(module_name: str) -> str:
    # A regular unit's conv1 and an adaptive unit's aconv1 have the same shape: one key, so
    # that the +adaptive row of an ablation can start from the same weights as the row above.
    return ".".join("conv" + part[5:] if part.startswith("aconv") else part
                    for part in module_name.split("."))


def init_weights(model: nn.Module, unit_init: str = "official", seed: int | None = None) -> None:
    """Initialise ``model`` in place.

    Official: convs N(0, 0.001²) with zero bias, BN 1/0, T convs all zero, adaptive convs
    uniform ±1/sqrt(C·9). ``unit_init`` picks the units' 3x3 convs alone: "official" (as just
    said: regular N(0, 0.001²), adaptive uniform), "normal" (both N(0, 0.001²)) or "uniform"
    (both uniform ±1/sqrt(C·9)), so that the adaptive switch can be measured without also
    switching the initialisation.

    ``seed``: each weight is drawn from a generator keyed by (seed, module name), so two
    models of one seed get the same initial weights wherever names and shapes agree, however
    the rest of them differs (common random numbers across the rows of an ablation). None:
    draw from torch's global generator, in module order.
    """
    if unit_init not in UNIT_INITS:
        raise ValueError(f"model.unit_init must be one of {UNIT_INITS}, got {unit_init!r}")
    unit_convs = {id(getattr(u, name)) for u in model.modules()
                  if isinstance(u, (AdaptiveUnit, RegularUnit)) for name in u.tied
                  if not name.startswith("tconv")}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, AdaptiveConv2d)):
            gen = None if seed is None else _keyed_generator(seed, _init_key(name))
            regular = isinstance(m, nn.Conv2d)
            if id(m) in unit_convs and unit_init != "official":
                regular = unit_init == "normal"
            if regular:
                nn.init.normal_(m.weight, std=0.001, generator=gen)
            else:
                bound = 1.0 / math.sqrt(m.weight.shape[1] * 9)  # the official DCN init
                nn.init.uniform_(m.weight, -bound, bound, generator=gen)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, AdaptiveUnit):
            for tconv in (m.tconv1, m.tconv2):
                nn.init.zeros_(tconv.weight)
                nn.init.zeros_(tconv.bias)


def build_model(cfg: ModelConfig, num_keypoints: int, seed: int | None = None) -> PoseNet:
    """The network ``cfg`` describes, initialised by :func:`init_weights` with
    ``cfg.unit_init`` and ``seed`` (channels-last if configured); its adaptive convs train
    on the CPU with ``cfg.cpu_sampler`` (:data:`arkpose.model.adaptive.CPU_SAMPLERS`)."""
    cpu_sampler = cfg.cpu_sampler
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    shape = backbone_shape(cfg.backbone, cfg.backbone_widths, cfg.backbone_modules, cfg.backbone_blocks)
    backbone = HRNet(shape)
    c = backbone.out_channels
    heat = HeatmapHead(c, cfg.heatmap_channels, num_keypoints, tuple(cfg.heatmap_dilations),
                       cfg.adaptive, cpu_sampler)
    reg_in = c + num_keypoints if cfg.guidance else c
    reg = RegressionHead(reg_in, cfg.regression_channels, num_keypoints, cfg.adaptive, cpu_sampler)
    model = PoseNet(backbone, heat, reg, cfg.guidance, cfg.channels_last)
    if model.backbone.conv1.weight.device.type != "meta":  # meta models only carry shapes
        init_weights(model, cfg.unit_init, seed)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def count_params_and_macs(
    model_or_cfg: nn.Module | ModelConfig,
    input_size: int | tuple[int, int] = 512,
    num_keypoints: int = 17,
    as_official: bool = False,
) -> tuple[int, int]:
    """(unique parameters, multiply-adds of one forward at ``input_size``).

    MACs count every convolution (out elements x in_channels/groups x kh x kw), the adaptive
    convs as 3x3 convs and the T convs included; BN, ReLU, sums, upsampling and the bilinear
    sampling are not counted. Computed on a 32x32 input and scaled by the area ratio, which
    is exact for sizes that are multiples of 32 (every layer's output area scales the same).

    ``as_official=True`` counts what the official forward runs: it recomputes the heatmap
    head's 1x1 transition once per branch (arkpose computes it once). W32 at 512:
    30,678,516 parameters; 64.39 G MACs as arkpose runs it, 64.89 G as the official code does.
    """
    if isinstance(model_or_cfg, ModelConfig):
        # Only shapes matter: skip the initialisation (build on meta, then allocate uninitialised).
        with torch.device("meta"):
            model = build_model(model_or_cfg, num_keypoints)
        params = sum(p.numel() for p in model.parameters())  # parameters() skips tied copies
        model = model.to_empty(device="cpu")  # (unties the copies: count first)
    else:
        model = model_or_cfg
        params = sum(p.numel() for p in model.parameters())
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"input_size must be a multiple of {SIZE_MULTIPLE}, got {h}x{w}")
    per_module: dict[nn.Module, int] = {}

    def hook(module, inputs, output):
        groups = getattr(module, "groups", 1)
        kh, kw = module.kernel_size
        per_module[module] = per_module.get(module, 0) + output[0].numel() * (module.in_channels // groups) * kh * kw

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, AdaptiveConv2d))
    ]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, 3, SIZE_MULTIPLE, SIZE_MULTIPLE, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    macs = sum(per_module.values())
    if as_official and isinstance(model, PoseNet):
        head = model.heatmap_head
        macs += (len(head.branches) - 1) * per_module[head.transition[0]]
    return params, macs * (h // SIZE_MULTIPLE) * (w // SIZE_MULTIPLE)
