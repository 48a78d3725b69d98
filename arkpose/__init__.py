"""arkpose: bottom-up multi-person pose estimation by heatmap-guided adaptive keypoint
regression (Sun et al.), with the paper's ablations as re-runnable notebooks."""

__version__ = "0.1.0"
