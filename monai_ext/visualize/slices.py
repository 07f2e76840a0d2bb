"""Slices of one image clean and attacked: the images, the perturbation and the predictions' contours against the
ground truth, for a volume (three slices) or a 2D image."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from monai_ext.visualize.figures import save_figure

__all__ = ["plot_attacked_slices", "slice_planes"]

#: the colours of the ground truth's and the prediction's contours
TRUTH, PREDICTION = "#00d000", "#ff2020"


def slice_planes(label: np.ndarray) -> list[tuple[str, int, int]]:
    """
    The slices :py:func:`plot_attacked_slices` shows of a volume ``(X, Y, Z)`` (RAS after MONAI's ``Orientationd``:
    axis 2 is axial, 1 coronal, 0 sagittal): ``(title, axis, index)`` of the axial slice in the middle of the volume and
    the coronal and sagittal slices through the label's centre (the centroid of its foreground; the middle of the volume
    without one).
    """
    shape = np.asarray(label.shape)
    foreground = np.argwhere(np.asarray(label) > 0)
    centre = np.rint(foreground.mean(0)).astype(int) if len(foreground) else shape // 2
    return [
        ("axial, middle", 2, int(shape[2] // 2)),
        ("coronal, label centre", 1, int(centre[1])),
        ("sagittal, label centre", 0, int(centre[0])),
    ]


def plot_attacked_slices(
    clean: np.ndarray,
    attacked: np.ndarray,
    label: np.ndarray,
    clean_pred: np.ndarray,
    attacked_pred: np.ndarray,
    path: str | PathLike,
    spacing: Sequence[float] | None = None,
    scale: float = 255.0,
    title: str | None = None,
) -> Path:
    """
    Plot one image clean and attacked and save it as a PNG: one column per slice (a volume: the axial slice in the
    middle and the coronal and sagittal slices through the label's centre, :py:func:`slice_planes`; a 2D image: the
    image), three rows: the clean image with the contours of the ground truth (green) and of the clean prediction (red,
    dashed), the attacked image with those of the ground truth and the attacked prediction, and the perturbation
    ``scale * (attacked - clean)`` on a diverging scale symmetric about 0 (at least one unit each way), with its
    colour bar (in levels of 255 with ``scale=255`` and images in ``[0, 1]``). Every class but 0 has its contour.

    A volume's slices are drawn with the first of their two axes across and the second upwards (in RAS: right,
    anterior and superior up), at the aspect of ``spacing``; a 2D image as it is stored (rows down).

    Args:
        clean: the clean image, ``(X, Y, Z)`` or ``(H, W)`` (one channel).
        attacked: the attacked image, same shape.
        label: the ground truth class indices, same shape.
        clean_pred: the predicted class indices on the clean image, same shape.
        attacked_pred: the predicted class indices on the attacked image, same shape.
        path: the PNG file to write (folders are created).
        spacing: the physical size of a voxel along each axis (the image's ``pixdim``); unit size by default.
        scale: the factor of the perturbation's colour scale (``255``: levels of an 8-bit scale, images in ``[0, 1]``).
        title: the figure's title.

    Returns:
        the path written.

    Raises:
        ValueError: arrays of different shapes, or neither 2D nor 3D.
    """
    arrays = [np.asarray(a) for a in (clean, attacked, label, clean_pred, attacked_pred)]
    if any(a.shape != arrays[0].shape for a in arrays) or arrays[0].ndim not in (2, 3):
        raise ValueError(
            f"the images, label and predictions must share one 2D or 3D shape, got {[a.shape for a in arrays]}."
        )
    clean, attacked, label, clean_pred, attacked_pred = arrays
    spacing = np.ones(clean.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    perturbation = scale * (attacked.astype(np.float64) - clean.astype(np.float64))
    bound = max(float(np.abs(perturbation).max()), 1.0)  # at least one unit (level) either way
    low, high = float(min(clean.min(), attacked.min())), float(max(clean.max(), attacked.max()))
    planes = slice_planes(label) if clean.ndim == 3 else [("image", None, None)]

    fig = Figure(figsize=(3.6 * len(planes) + 0.8, 9.6))
    axes = fig.subplots(3, len(planes), squeeze=False)
    for column, (name, axis, index) in enumerate(planes):
        view, aspect = _view(axis, index, spacing)
        rows = [("clean", clean, clean_pred), ("attacked", attacked, attacked_pred), ("perturbation", None, None)]
        for row, (row_name, image, pred) in enumerate(rows):
            ax = axes[row, column]
            origin = "upper" if axis is None else "lower"
            if image is None:
                shown = ax.imshow(view(perturbation), cmap="RdBu_r", vmin=-bound, vmax=bound, origin=origin,
                                  aspect=aspect, interpolation="nearest")  # fmt: skip
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, label=f"levels of {scale:g}")
            else:
                ax.imshow(view(image), cmap="gray", vmin=low, vmax=high, origin=origin, aspect=aspect,
                          interpolation="nearest")  # fmt: skip
                _contours(ax, view(label), TRUTH, "solid")
                _contours(ax, view(pred), PREDICTION, "dashed")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name if axis is None else f"{name} ({index})", fontsize=9)
            if column == 0:
                ax.set_ylabel(row_name, fontsize=9)
    handles = [Line2D([], [], color=TRUTH, label="ground truth"),
               Line2D([], [], color=PREDICTION, linestyle="dashed", label="prediction")]  # fmt: skip
    axes[0, 0].legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _view(axis: int | None, index: int | None, spacing: np.ndarray):
    """The function that cuts a slice for display (its two remaining axes across and upwards), and its aspect."""
    if axis is None:
        return (lambda a: a), float(spacing[0] / spacing[1])
    across, up = [a for a in range(3) if a != axis]
    return (lambda a: np.take(a, index, axis=axis).T), float(spacing[up] / spacing[across])


def _contours(ax, classes: np.ndarray, colour: str, style: str) -> None:
    """The boundary of each class but 0 of a class-index slice."""
    for value in np.unique(classes):
        if value > 0:
            ax.contour((classes == value).astype(float), levels=[0.5], colors=colour, linestyles=style, linewidths=1.0)
