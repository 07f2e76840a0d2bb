"""Metrics of ``monai_ext``: ProtoSeg segmentation ability."""

from monai_ext.metrics.protoseg import (
    SAScoreMetric,
    binarize_prediction,
    class_weights,
    compute_prototypes,
    compute_sa_score,
    dice_from_probabilities,
    mean_sa_score,
    protoseg,
)

__all__ = [
    "SAScoreMetric",
    "binarize_prediction",
    "class_weights",
    "compute_prototypes",
    "compute_sa_score",
    "dice_from_probabilities",
    "mean_sa_score",
    "protoseg",
]
