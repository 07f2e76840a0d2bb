"""Plots of ``monai_ext`` results, saved as PNG files."""

from monai_ext.visualize.curves import plot_robustness_curves

__all__ = ["plot_robustness_curves"]
