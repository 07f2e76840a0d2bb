"""Engines of ``monai_ext``: evaluation loops MONAI lacks."""

from monai_ext.engines.adversarial_segmentation import LOSS_TERMS, AdversarialSegmentationTrainer, loss_terms
from monai_ext.engines.robustness import RobustnessSweep
from monai_ext.engines.sweep import LevelSweep, UniformNoise, engine_metrics
from monai_ext.engines.utils import AdversarialPrepareBatch

__all__ = [
    "LOSS_TERMS",
    "AdversarialPrepareBatch",
    "AdversarialSegmentationTrainer",
    "LevelSweep",
    "RobustnessSweep",
    "UniformNoise",
    "engine_metrics",
    "loss_terms",
]
