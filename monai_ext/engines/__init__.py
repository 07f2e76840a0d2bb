"""Engines of ``monai_ext``: evaluation loops MONAI lacks, and the adversarial dataset writer."""

from monai_ext.engines.adversarial_dataset import AdversarialDatasetWriter
from monai_ext.engines.adversarial_segmentation import LOSS_TERMS, AdversarialSegmentationTrainer, loss_terms
from monai_ext.engines.attack_benchmark import bundle_robustness
from monai_ext.engines.attack_evaluation import (
    AttackEvaluation,
    background_prediction,
    evaluation_table,
    logits_and_labels,
)
from monai_ext.engines.robustness import RobustnessSweep
from monai_ext.engines.sweep import LevelSweep, UniformNoise, engine_metrics
from monai_ext.engines.utils import AdversarialPrepareBatch, GradientPerturbationPrepareBatch

__all__ = [
    "LOSS_TERMS",
    "AdversarialDatasetWriter",
    "AdversarialPrepareBatch",
    "AdversarialSegmentationTrainer",
    "AttackEvaluation",
    "GradientPerturbationPrepareBatch",
    "LevelSweep",
    "RobustnessSweep",
    "UniformNoise",
    "background_prediction",
    "bundle_robustness",
    "engine_metrics",
    "evaluation_table",
    "logits_and_labels",
    "loss_terms",
]
