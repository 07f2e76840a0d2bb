"""Engines of ``monai_ext``: evaluation loops MONAI lacks."""

from monai_ext.engines.robustness import RobustnessSweep

__all__ = ["RobustnessSweep"]
