"""The pose network: HRNet backbone, adaptive units, heatmap and regression heads.

``build_model(cfg, num_keypoints) -> PoseNet``; ``count_params_and_macs(model_or_cfg,
input_size=512)``. See docs/model.md.
"""

from arkpose.model.adaptive import (
    AdaptiveConv2d,
    AdaptiveUnit,
    RegularUnit,
    adaptive_conv2d,
    sampling_positions,
    transform_to_offsets,
)
from arkpose.model.heads import HeatmapHead, RegressionHead
from arkpose.model.hrnet import BACKBONES, HRNet, HRNetShape, backbone_shape
from arkpose.model.net import PoseNet, build_model, count_params_and_macs, init_weights

__all__ = [
    "BACKBONES",
    "AdaptiveConv2d",
    "AdaptiveUnit",
    "HRNet",
    "HRNetShape",
    "HeatmapHead",
    "PoseNet",
    "RegressionHead",
    "RegularUnit",
    "adaptive_conv2d",
    "backbone_shape",
    "build_model",
    "count_params_and_macs",
    "init_weights",
    "sampling_positions",
    "transform_to_offsets",
]
