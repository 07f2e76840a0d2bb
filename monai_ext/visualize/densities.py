"""Kernel density plots of per-image scores, one panel per metric and one curve per method (Fig. 4 of the deep input
transfer paper)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from monai_ext.metrics.per_image import density_curve
from monai_ext.utils.files import atomic_open

__all__ = ["plot_metric_densities"]

#: panel titles of the metric names the bundles write
TITLES = {"dice": "Dice", "fpr": "FPR", "fnr": "FNR"}


def plot_metric_densities(
    results: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    metrics: Sequence[str] = ("dice", "fpr", "fnr"),
    title: str | None = None,
    points: int = 256,
) -> Path:
    """
    Plot the Gaussian kernel density estimate of each method's per-image values of each metric and save a PNG.

    Each panel spans ``[0, 1]`` widened to the values' range. A method whose values are all equal (no density) is
    drawn as a vertical line at that value.

    Args:
        results: method -> metric -> per-image values (NaN left out).
        path: the PNG file to write (folders are created).
        metrics: the metrics to plot, one panel each, in order.
        title: the figure's title.
        points: grid points per curve.

    Returns:
        the path written.
    """
    if not results:
        raise ValueError("results must hold at least one method.")
    figure = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        values = {m: np.asarray(r.get(metric, []), dtype=np.float64) for m, r in results.items()}
        finite = [v[np.isfinite(v)] for v in values.values()]
        low = min([0.0, *(float(v.min()) for v in finite if v.size)])
        high = max([1.0, *(float(v.max()) for v in finite if v.size)])
        grid = np.linspace(low, high, points)
        for index, (method, v) in enumerate(values.items()):
            color = f"C{index}"
            density = density_curve(v, grid)
            if density is not None:
                ax.plot(grid, density, color=color, label=method)
            elif np.isfinite(v).any():
                ax.axvline(float(v[np.isfinite(v)][0]), color=color, linestyle="--", label=f"{method} (all equal)")
        ax.set_xlabel(TITLES.get(metric, metric))
        ax.set_ylabel("density")
        ax.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120)
    return Path(path)
