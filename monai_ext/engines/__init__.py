"""Engines of ``monai_ext``: evaluation loops MONAI lacks."""

from monai_ext.engines.adversarial_segmentation import LOSS_TERMS, AdversarialSegmentationTrainer, loss_terms
from monai_ext.engines.robustness import RobustnessSweep

__all__ = ["LOSS_TERMS", "AdversarialSegmentationTrainer", "RobustnessSweep", "loss_terms"]
