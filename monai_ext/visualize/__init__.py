"""Plots of ``monai_ext`` results, saved as PNG files with matplotlib's object-oriented API (no pyplot, no backend
switch: importing ``monai_ext`` leaves the caller's matplotlib backend alone)."""

from monai_ext.visualize.bars import plot_condition_bars
from monai_ext.visualize.curves import plot_robustness_curves, plot_robustness_panels, plot_training_curves
from monai_ext.visualize.densities import plot_metric_densities
from monai_ext.visualize.protoseg import (
    plot_layer_scores,
    plot_noise_study,
    plot_protoseg_results,
    plot_sams,
    plot_score_correlation,
    plot_unit_scores,
)
from monai_ext.visualize.segmentation import plot_segmentations
from monai_ext.visualize.slices import plot_attacked_slices, slice_planes

__all__ = [
    "plot_attacked_slices",
    "plot_condition_bars",
    "plot_layer_scores",
    "plot_metric_densities",
    "plot_noise_study",
    "plot_protoseg_results",
    "plot_robustness_curves",
    "plot_robustness_panels",
    "plot_sams",
    "plot_score_correlation",
    "plot_segmentations",
    "plot_training_curves",
    "plot_unit_scores",
    "slice_planes",
]
