"""HRNet backbone (Sun et al. 2019) with configurable widths, modules and blocks per stage.

Module and parameter names follow the official HRNet code (``conv1``, ``layer1``,
``transition1``, ``stage2.0.fuse_layers.1.0.0.0``, ...) so that official checkpoints map
onto it by a plain prefix (arkpose/compat/official.py). forward returns the four branch
outputs at strides 4, 8, 16, 32.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HRNetShape:
    """Widths of the 4 branches; modules and BasicBlocks per branch for stages 2, 3, 4."""

    widths: tuple[int, int, int, int]
    modules: tuple[int, int, int] = (1, 4, 3)
    blocks: tuple[int, int, int] = (4, 4, 4)
    stem_channels: int = 64
    layer1_planes: int = 64  # Bottleneck planes; layer1 outputs 4x this
    layer1_blocks: int = 4

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ValueError(f"HRNet needs 4 positive branch widths, got {self.widths}")
        if len(self.modules) != 3 or len(self.blocks) != 3:
            raise ValueError(
                f"modules and blocks give one number per stage 2, 3, 4; got {self.modules}, {self.blocks}"
            )
        if min(self.modules) < 1 or min(self.blocks) < 1 or self.layer1_blocks < 1:
            raise ValueError("every stage needs at least one module and one block")


BACKBONES: dict[str, HRNetShape] = {
    "w32": HRNetShape((32, 64, 128, 256)),
    "w48": HRNetShape((48, 96, 192, 384)),
    # CPU presets for the synthetic benchmark. With the _cpu config heads (tiny: heatmap 16,
    # regression 48; nano: 8, 24): tiny ≈ 0.40 M parameters and 0.57 G MACs at 256,
    # nano ≈ 0.12 M and 0.23 G.
    "tiny-w16": HRNetShape(
        (16, 24, 40, 56), modules=(1, 1, 1), blocks=(1, 1, 1),
        stem_channels=32, layer1_planes=16, layer1_blocks=1,
    ),
    "nano-w16": HRNetShape(
        (16, 16, 16, 16), modules=(1, 1, 1), blocks=(1, 1, 1),
        stem_channels=16, layer1_planes=8, layer1_blocks=1,
    ),
}


def backbone_shape(
    name: str, widths: tuple[int, ...] = (), modules: tuple[int, ...] = (), blocks: tuple[int, ...] = ()
) -> HRNetShape:
    """The preset ``name`` with optional overrides (an empty tuple keeps the preset's value)."""
    try:
        shape = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; presets are {sorted(BACKBONES)}") from None
    changes = {k: tuple(v) for k, v in (("widths", widths), ("modules", modules), ("blocks", blocks)) if v}
    return replace(shape, **changes) if changes else shape


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.1)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.bn1 = _bn(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = _bn(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout)) if cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def _fuse_layer(widths: list[int], i: int, j: int) -> nn.Module | None:
    """Brings branch j to branch i's resolution and width (None when i == j)."""
    if j == i:
        return None
    if j > i:
        # 1x1 conv + BN, then nearest upsampling (the official fuse; no parameters).
        return nn.Sequential(
            nn.Conv2d(widths[j], widths[i], 1, bias=False),
            _bn(widths[i]),
            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
        )
    links = []
    for k in range(i - j):
        last = k == i - j - 1
        cout = widths[i] if last else widths[j]
        link = [_conv3x3(widths[j], cout, 2), _bn(cout)] + ([] if last else [nn.ReLU()])
        links.append(nn.Sequential(*link))
    return nn.Sequential(*links)


class HRModule(nn.Module):
    """Parallel branches of BasicBlocks followed by the all-to-all sum fusion."""

    def __init__(self, widths: list[int], blocks: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c) for _ in range(blocks)]) for c in widths
        )
        n = len(widths)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_layer(widths, i, j) for j in range(n)) for i in range(n)
        )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, layers in enumerate(self.fuse_layers):
            # Summation order as the official code (j = 0, 1, ...): keeps float results equal.
            y = xs[0] if i == 0 else layers[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else layers[j](xs[j]))
            out.append(F.relu(y))
        return out


def _transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(
                None if c == pre[i] else nn.Sequential(_conv3x3(pre[i], c), _bn(c), nn.ReLU())
            )
        else:
            links = []
            for k in range(i + 1 - len(pre)):
                cout = c if k == i - len(pre) else pre[-1]
                links.append(nn.Sequential(_conv3x3(pre[-1], cout, 2), _bn(cout), nn.ReLU()))
            layers.append(nn.Sequential(*links))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """forward(x (N, 3, H, W)) -> 4 maps (N, widths[b], H / 2^(b+2), W / 2^(b+2))."""

    def __init__(self, shape: HRNetShape):
        super().__init__()
        self.shape = shape
        s = shape.stem_channels
        self.conv1 = _conv3x3(3, s, 2)
        self.bn1 = _bn(s)
        self.conv2 = _conv3x3(s, s, 2)
        self.bn2 = _bn(s)
        layer1 = [Bottleneck(s, shape.layer1_planes)]
        layer1 += [
            Bottleneck(shape.layer1_planes * 4, shape.layer1_planes)
            for _ in range(shape.layer1_blocks - 1)
        ]
        self.layer1 = nn.Sequential(*layer1)
        pre = [shape.layer1_planes * 4]
        for stage, (modules, blocks) in enumerate(zip(shape.modules, shape.blocks), start=2):
            cur = list(shape.widths[:stage])
            setattr(self, f"transition{stage - 1}", _transition(pre, cur))
            setattr(self, f"stage{stage}", nn.Sequential(*[HRModule(cur, blocks) for _ in range(modules)]))
            pre = cur

    @property
    def out_channels(self) -> int:
        return sum(self.shape.widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            # New branches grow from the lowest-resolution output (official behaviour).
            xs = [
                (xs[i] if layer is None else layer(xs[i])) if i < len(xs) else layer(xs[-1])
                for i, layer in enumerate(transition)
            ]
            xs = getattr(self, f"stage{stage}")(xs)
        return xs


def concat_features(xs: list[torch.Tensor]) -> torch.Tensor:
    """Representation F: branches 2-4 bilinearly upsampled (align_corners=False) to branch 1's
    size and concatenated: (N, sum(widths), H/4, W/4)."""
    size = xs[0].shape[-2:]
    ups = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in xs[1:]]
    return torch.cat([xs[0], *ups], 1)
