"""Plots of the ProtoSeg analyses (He et al., MedIA 2023): layer and unit SA scores, SAMs, quality and noise."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from monai_ext.visualize.figures import save_figure

__all__ = [
    "plot_layer_scores",
    "plot_noise_study",
    "plot_protoseg_results",
    "plot_sams",
    "plot_score_correlation",
    "plot_unit_scores",
]


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Numbers read from a results JSON file as floats (``null``, a non-finite value, as NaN)."""
    return np.array(values, dtype=float)


def _float(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _axes(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def plot_layer_scores(
    curves: Mapping[str, Sequence[float]],
    layer_labels: Sequence[str],
    path: str | Path,
    stds: Mapping[str, Sequence[float]] | None = None,
    references: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """
    Mean SA score per layer, one line per network (Fig. 5 of the ProtoSeg paper), saved as a PNG.

    Args:
        curves: legend label -> mean SA score of each layer, in the order of ``layer_labels``.
        layer_labels: the x tick labels (``"1"`` ... ``"18"``, ``"in"`` for the input).
        path: the PNG file to write (folders are created).
        stds: legend label -> standard deviation per layer, drawn as a band.
        references: legend label -> a horizontal reference line (the output's mean Dice).
        title: the figure's title.

    Returns:
        the path written.
    """
    fig, ax = _axes((max(6.0, 0.38 * len(layer_labels) + 2), 4.0))
    x = np.arange(len(layer_labels))
    for label, values in curves.items():
        (line,) = ax.plot(x, values, marker="o", markersize=3, label=f"{label}")
        if stds and label in stds:
            mean, std = np.asarray(values, float), np.asarray(stds[label], float)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        if references and label in references:
            name = "output Dice" if len(curves) == 1 else f"{label}: output Dice"
            ax.axhline(references[label], color=line.get_color(), ls="--", lw=1, label=name)
    ax.set_xticks(x, layer_labels, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean SA score")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_unit_scores(
    scores: Sequence[float], path: str | Path, reference: float | None = None, title: str | None = None
) -> Path:
    """
    SA scores of the units (channels) of one layer sorted from high to low, as bars (Fig. 7), saved as a PNG.

    Args:
        scores: mean SA score of each unit (any order; they are sorted here).
        path: the PNG file to write.
        reference: a horizontal reference line (the output's mean Dice).
        title: the figure's title.
    """
    ordered = np.sort(np.asarray(scores, float))[::-1]
    fig, ax = _axes((max(5.0, 0.12 * len(ordered) + 2), 3.6))
    ax.bar(np.arange(1, len(ordered) + 1), ordered, width=0.8)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label="output Dice")
        ax.legend(fontsize=8)
    ax.set_xlabel("unit (sorted by SA score)")
    ax.set_ylabel("mean SA score")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _display(image: np.ndarray, transpose: bool) -> tuple[np.ndarray, str | None]:
    """(C, *spatial) -> an array imshow takes (grey or RGB) and its colour map; 3D: the middle slice."""
    image = np.asarray(image, float)
    if image.ndim == 4:  # (C, H, W, D)
        image = image[..., image.shape[-1] // 2]
    if transpose:
        image = image.swapaxes(1, 2)
    if image.shape[0] == 3:
        lo, hi = image.min(), image.max()
        return np.moveaxis((image - lo) / (hi - lo + 1e-12), 0, -1), None
    return image[0], "gray"


def _slice(seg: np.ndarray, transpose: bool) -> np.ndarray:
    seg = np.asarray(seg)
    seg = seg[..., seg.shape[-1] // 2] if seg.ndim == 3 else seg
    return seg.T if transpose else seg


def plot_sams(
    rows: Sequence[Mapping[str, object]], path: str | Path, title: str | None = None, transpose: bool = True
) -> Path:
    """
    Segmentation ability maps (SAMs) of chosen layers beside the image, the ground truth and the output (Fig. 6).

    Args:
        rows: one per image: ``{"name": str, "image": (C, *spatial), "label": (*spatial), "pred": (*spatial),
            "sams": {layer label: (*spatial)}}`` class-index maps (3D: the middle slice of the last axis is shown).
        path: the PNG file to write.
        title: the figure's title.
        transpose: swap the two displayed axes: MONAI's 2D readers put a file's columns first, so this shows
            images as in their files.
    """
    if not rows:
        raise ValueError("plot_sams needs at least one row.")
    layers = list(rows[0]["sams"])  # type: ignore[arg-type]
    cols = 3 + len(layers)
    fig = Figure(figsize=(1.8 * cols, 1.9 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, row in enumerate(rows):
        image, cmap = _display(row["image"], transpose)  # type: ignore[arg-type]
        panels = [("image", image, cmap), ("ground truth", row["label"], "viridis"), ("output", row["pred"], "viridis")]
        panels += [(f"layer {name}", sam, "viridis") for name, sam in row["sams"].items()]  # type: ignore[union-attr]
        for c, (name, data, cm) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(data if c == 0 else _slice(data, transpose), cmap=cm, interpolation="nearest")  # type: ignore[arg-type]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
        axes[r][0].set_ylabel(str(row.get("name", r))[-18:], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_score_correlation(
    x: Sequence[float],
    y: Sequence[float],
    path: str | Path,
    xlabel: str = "mean SA score mu",
    ylabel: str = "Dice of the output",
    title: str | None = None,
) -> Path:
    """
    Scatter of a per-image quality score against the output's Dice with the least-squares line and Pearson's r
    in the legend (Fig. 10), saved as a PNG.
    """
    x_arr, y_arr = np.asarray(x, float), np.asarray(y, float)
    fig, ax = _axes((4.6, 4.0))
    ax.scatter(x_arr, y_arr, s=10, alpha=0.7)
    if len(x_arr) > 1 and np.ptp(x_arr) > 0 and np.ptp(y_arr) > 0:
        r = float(np.corrcoef(x_arr, y_arr)[0, 1])
        slope, intercept = np.polyfit(x_arr, y_arr, 1)
        grid = np.linspace(x_arr.min(), x_arr.max(), 2)
        ax.plot(grid, slope * grid + intercept, color="C3", label=f"r = {r:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_noise_study(
    levels: Sequence[float],
    layer_labels: Sequence[str],
    differences: Sequence[Sequence[float]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """
    SA score difference per layer between noisy and clean inputs, one line per noise level (Fig. 16).

    Args:
        levels: the noise levels.
        layer_labels: the x tick labels.
        differences: ``differences[i][l]`` = mean SA of layer ``l`` at level ``levels[i]`` minus the clean one.
        path: the PNG file to write.
        title: the figure's title.
    """
    fig, ax = _axes((max(6.0, 0.38 * len(layer_labels) + 2), 4.0))
    colours = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, len(levels)))
    x = np.arange(len(layer_labels))
    for level, diff, colour in zip(levels, differences, colours):
        ax.plot(x, diff, marker="o", markersize=2.5, color=colour, label=f"noise {level:g}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, layer_labels, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("SA(noisy) - SA(clean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _read_columns(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])} if rows else {}


def plot_protoseg_results(
    output_dir: str | Path, title: str | None = None, quality_filename: str = "quality.csv"
) -> list[Path]:
    """
    Draw the figures of the ProtoSeg results files in ``output_dir`` (written by
    :py:class:`monai_ext.handlers.ProtoSegSaver` and :py:func:`monai_ext.handlers.write_noise_study`), each when its
    file is there: ``layers.png`` (Fig. 5) and ``units.png`` (Fig. 7) from ``layers.json``; ``mu_dice.png`` and
    ``vog_dice.png`` (Fig. 10) from ``quality_filename`` when it holds the Dice; ``noise.png`` (Fig. 16) from
    ``noise.json``.

    Returns:
        the paths written.
    """
    out, title = Path(output_dir), title or "ProtoSeg"
    written = []
    if (out / "layers.json").is_file():
        summary = json.loads((out / "layers.json").read_text())
        rows, dice = summary["layers"], _float(summary["output_dice"]["mean"])
        written.append(
            plot_layer_scores(
                {"SA score": _floats([row["mean"] for row in rows])},
                [row["label"] for row in rows],
                out / "layers.png",
                stds={"SA score": _floats([row["std"] for row in rows])},
                references={"SA score": dice},
                title=f"{title}: SA score per layer ({summary['num_images']} images)",
            )
        )
        if "units" in summary:
            units = summary["units"]
            name = f"{title}: units of layer {units['index']} ({units['layer']})"
            scores = _floats(units["mean_per_unit"])
            written.append(plot_unit_scores(scores, out / "units.png", reference=dice, title=name))
    quality = _read_columns(out / quality_filename) if (out / quality_filename).is_file() else {}
    if "dice" in quality:
        dice = [float(v) for v in quality["dice"]]
        mu = [float(v) for v in quality["mu"]]
        written.append(plot_score_correlation(mu, dice, out / "mu_dice.png", title=f"{title}: mu vs Dice"))
        if "vog" in quality:
            vog = [float(v) for v in quality["vog"]]
            path = out / "vog_dice.png"
            written.append(plot_score_correlation(vog, dice, path, xlabel="VoG", title=f"{title}: VoG vs Dice"))
    if (out / "noise.json").is_file():
        noise = json.loads((out / "noise.json").read_text())
        if noise["levels"]:
            labels, diff = noise["layer_labels"], _floats(noise["difference"])
            path, name = out / "noise.png", f"{title}: SA under input noise"
            written.append(plot_noise_study(noise["levels"], labels, diff, path, title=name))
    return written
