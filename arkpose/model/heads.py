"""The heatmap head (three dilated adaptive branches, averaged) and the heatmap-guided
regression head (docs/method.md §1)."""

from __future__ import annotations

import torch
from torch import nn

from arkpose.model.adaptive import make_unit, tie_weights


def _transition(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv (no bias) + BN + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, momentum=0.1), nn.ReLU())


class HeatmapHead(nn.Module):
    """1x1 conv to ``channels`` + BN + ReLU, one unit per dilation, a shared 1x1 classifier.

    The branches share their conv weights (T convs and sampling convs) but not the T convs'
    biases nor the BNs; the shared classifier (with bias) is applied to each branch and the
    outputs are averaged. forward(F (N, C_in, h, w)) -> (heatmaps (N, K, h, w), transforms
    {"heatmap.<b>.t1" | "heatmap.<b>.t2": (N, 4, h, w)}). ``sampler``: the adaptive
    units' CPU training sampler.
    """

    def __init__(
        self, in_channels: int, channels: int, num_keypoints: int,
        dilations: tuple[int, ...] = (1, 2, 3), adaptive: bool = True, sampler: str = "auto",
    ):
        super().__init__()
        if not dilations:
            raise ValueError("the heatmap head needs at least one dilation")
        self.transition = _transition(in_channels, channels)
        self.branches = nn.ModuleList(make_unit(channels, d, adaptive, sampler) for d in dilations)
        tie_weights(list(self.branches))
        self.classifier = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.transition(features)
        outputs, transforms = [], {}
        for b, branch in enumerate(self.branches):
            y, t = branch(x)
            outputs.append(self.classifier(y))
            transforms.update({f"heatmap.{b}.{k}": v for k, v in t.items()})
        # Stack-then-mean, as the official code averages the branches.
        return torch.stack(outputs).mean(0), transforms


class RegressionHead(nn.Module):
    """1x1 conv to ``channels`` + BN + ReLU, one unit (dilation 1), 1x1 conv to 2K + 1.

    forward(x (N, C_in, h, w)) -> (offsets (N, 2K, h, w), center (N, 1, h, w), transforms
    {"regression.t1" | "regression.t2": (N, 4, h, w)}). The classifier's last output
    channel is the center heatmap; the 2K offsets are keypoint − position in grid pixels,
    [x0, y0, x1, y1, ...] (arkpose convention). ``sampler`` as :class:`HeatmapHead`.
    """

    def __init__(self, in_channels: int, channels: int, num_keypoints: int, adaptive: bool = True,
                 sampler: str = "auto"):
        super().__init__()
        self.transition = _transition(in_channels, channels)
        self.unit = make_unit(channels, 1, adaptive, sampler)
        self.classifier = nn.Conv2d(channels, 2 * num_keypoints + 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        y, t = self.unit(self.transition(x))
        out = self.classifier(y)
        return out[:, :-1], out[:, -1:], {f"regression.{k}": v for k, v in t.items()}
