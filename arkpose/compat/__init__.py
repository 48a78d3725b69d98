"""Compatibility with the official HRNet-Bottom-up-Pose-Estimation checkpoints."""

from arkpose.compat.official import OfficialCheckpointError, load_official, to_official

__all__ = ["OfficialCheckpointError", "load_official", "to_official"]
