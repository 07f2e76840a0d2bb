"""Engines of ``monai_ext``: trainers and evaluation loops MONAI lacks, and the adversarial dataset writer."""

from monai_ext.engines.adversarial_dataset import AdversarialDatasetWriter
from monai_ext.engines.adversarial_segmentation import LOSS_TERMS, AdversarialSegmentationTrainer, loss_terms
from monai_ext.engines.attack_benchmark import bundle_robustness
from monai_ext.engines.attack_evaluation import (
    AttackEvaluation,
    background_prediction,
    evaluation_table,
    logits_and_labels,
)
from monai_ext.engines.cycle_gan import CYCLE_GAN_LOSS_TERMS, CycleGANTrainer, ImagePool, linear_decay
from monai_ext.engines.pix2pix import PIX2PIX_LOSS_TERMS, Pix2PixTrainer
from monai_ext.engines.robustness import RobustnessSweep
from monai_ext.engines.sweep import LevelSweep, UniformNoise, engine_metrics
from monai_ext.engines.utils import AdversarialPrepareBatch, GradientPerturbationPrepareBatch

__all__ = [
    "CYCLE_GAN_LOSS_TERMS",
    "LOSS_TERMS",
    "PIX2PIX_LOSS_TERMS",
    "AdversarialDatasetWriter",
    "AdversarialPrepareBatch",
    "AdversarialSegmentationTrainer",
    "AttackEvaluation",
    "CycleGANTrainer",
    "GradientPerturbationPrepareBatch",
    "ImagePool",
    "LevelSweep",
    "Pix2PixTrainer",
    "RobustnessSweep",
    "UniformNoise",
    "background_prediction",
    "bundle_robustness",
    "engine_metrics",
    "evaluation_table",
    "linear_decay",
    "logits_and_labels",
    "loss_terms",
]
