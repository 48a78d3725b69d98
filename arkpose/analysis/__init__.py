"""Ronchi & Perona keypoint error analysis (coco-analyze), for any keypoint layout.

``analyze(gt, dt, spec=COCO, compat="coco-analyze") -> AnalysisResult`` computes every
number; :mod:`arkpose.analysis.plots` draws them. Works on COCO json alone.
"""

from arkpose.analysis.report import COMPAT_MODES, AnalysisResult, analyze, area_ranges

__all__ = ["COMPAT_MODES", "AnalysisResult", "analyze", "area_ranges"]
