"""Metrics of ``monai_ext``: ProtoSeg segmentation ability (maps, scores, summaries), Variance of Gradients, pixel
accuracy, per-image scores, their summaries and paired comparisons."""

from monai_ext.metrics.paired import paired_difference, wilcoxon_signed_rank
from monai_ext.metrics.per_image import (
    compute_per_image_dice,
    density_curve,
    mean_standard_error,
    per_image_distances,
    per_image_scores,
)
from monai_ext.metrics.pixel_accuracy import PixelAccuracyMetric, compute_pixel_accuracy
from monai_ext.metrics.protoseg_map import (
    binarize_prediction,
    check_protoseg_inputs,
    class_weights,
    compute_prototypes,
    protoseg,
    protoseg_maps,
    segmentation_ability_map,
)
from monai_ext.metrics.protoseg_score import (
    MeanSAScoreMetric,
    SAScoreMetric,
    compute_layer_sa_scores,
    compute_sa_score,
    mean_sa_score,
)
from monai_ext.metrics.protoseg_summary import (
    coverage_table,
    layer_summary,
    mean_std,
    noise_summary,
    quality_summary,
    score_correlation,
)
from monai_ext.metrics.variance_of_gradients import VarianceOfGradients, load_state_dict

__all__ = [
    "MeanSAScoreMetric",
    "PixelAccuracyMetric",
    "SAScoreMetric",
    "VarianceOfGradients",
    "binarize_prediction",
    "check_protoseg_inputs",
    "class_weights",
    "compute_layer_sa_scores",
    "compute_per_image_dice",
    "compute_pixel_accuracy",
    "compute_prototypes",
    "compute_sa_score",
    "coverage_table",
    "density_curve",
    "layer_summary",
    "load_state_dict",
    "mean_sa_score",
    "mean_standard_error",
    "mean_std",
    "noise_summary",
    "paired_difference",
    "per_image_distances",
    "per_image_scores",
    "protoseg",
    "protoseg_maps",
    "quality_summary",
    "score_correlation",
    "segmentation_ability_map",
    "wilcoxon_signed_rank",
]
