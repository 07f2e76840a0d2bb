"""Metrics of ``monai_ext``: ProtoSeg segmentation ability."""

from monai_ext.metrics.protoseg import (
    SAScoreMetric,
    binarize_prediction,
    class_weights,
    compute_layer_sa_scores,
    compute_prototypes,
    compute_sa_score,
    dice_from_probabilities,
    mean_sa_score,
    protoseg,
    protoseg_maps,
)
from monai_ext.metrics.protoseg_quality import coverage_table, score_correlation
from monai_ext.metrics.variance_of_gradients import VarianceOfGradients, load_state_dict

__all__ = [
    "SAScoreMetric",
    "VarianceOfGradients",
    "binarize_prediction",
    "class_weights",
    "compute_layer_sa_scores",
    "compute_prototypes",
    "compute_sa_score",
    "coverage_table",
    "dice_from_probabilities",
    "load_state_dict",
    "mean_sa_score",
    "protoseg",
    "protoseg_maps",
    "score_correlation",
]
