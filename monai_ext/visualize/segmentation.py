"""Segmentation overlays: images in rows, ground truth and each model's prediction in columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from monai_ext.utils.files import atomic_open

__all__ = ["plot_segmentations"]


def plot_segmentations(
    images: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]],
    path: str | Path,
    class_names: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.45,
) -> Path:
    """
    Plot a grid of class-index maps over their images and save it as a PNG: one row per image, the image alone in
    the first column, then one column per entry of ``columns`` (ground truth, each model's prediction), with class
    0 (background) left transparent and every other class in its own colour.

    Args:
        images: 2D grey images ``(H, W)`` in display orientation (any range; each is min-max scaled).
        columns: column title -> one 2D class-index map ``(H, W)`` per image.
        path: the PNG file to write (folders are created).
        class_names: names of the classes (class 0 first) for the legend; ``class i`` by default.
        row_titles: a label per row (the file names).
        title: the figure's title.
        alpha: opacity of the class colours.

    Returns:
        the path written.

    Raises:
        ValueError: a column has a different number of maps than there are images, or a map's shape differs from
            its image's.
    """
    if not images:
        raise ValueError("images must hold at least one image.")
    for name, maps in columns.items():
        if len(maps) != len(images):
            raise ValueError(f"column {name!r} has {len(maps)} maps for {len(images)} images.")
        for i, (image, seg) in enumerate(zip(images, maps)):
            if np.shape(seg) != np.shape(image):
                raise ValueError(
                    f"column {name!r}, row {i}: map shape {np.shape(seg)} differs from image shape {np.shape(image)}."
                )
    num_classes = max([int(np.max(m)) for maps in columns.values() for m in maps] + [0]) + 1
    if class_names is not None:
        num_classes = max(num_classes, len(class_names))
    names = list(class_names or []) + [f"class {i}" for i in range(len(class_names or []), num_classes)]
    colours = matplotlib.colormaps["tab10"](np.arange(num_classes - 1) % 10)  # RGBA of classes 1 .. num_classes - 1
    overlay = colours.copy()
    overlay[:, 3] = alpha
    cmap = ListedColormap(np.vstack([[0.0, 0.0, 0.0, 0.0], overlay]))  # class 0 transparent

    n_rows, n_cols = len(images), 1 + len(columns)
    fig = Figure(figsize=(2.4 * n_cols, 2.4 * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, image in enumerate(images):
        image = np.asarray(image, dtype=np.float64)
        span = image.max() - image.min()
        grey = (image - image.min()) / span if span > 0 else np.zeros_like(image)
        cells = [("image", None), *columns.items()]
        for c, (name, maps) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if maps is not None:
                ax.imshow(np.asarray(maps[r]), cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=7)
    handles = [Patch(facecolor=colours[i - 1], label=names[i]) for i in range(1, num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:] or "png", dpi=110)
    return path
