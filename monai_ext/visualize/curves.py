"""Curves: robustness (Dice and Jaccard against the attack budget, one line per network) and training curves (scalars
against the step, one panel per tag)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from monai_ext.utils.files import atomic_open

__all__ = ["plot_robustness_curves", "plot_robustness_panels", "plot_training_curves"]


def plot_robustness_curves(
    summaries: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None, xlabel: str = "epsilon"
) -> Path:
    """
    Plot mean Dice and mean Jaccard against epsilon (two panels, as Fig. 4 of the NLCEN paper) and save a PNG.

    Args:
        summaries: results of :py:meth:`monai_ext.engines.RobustnessSweep.run`, each with ``"label"`` and
            ``"results"`` (a list of ``{"epsilon", "mean_dice", "mean_jaccard"}``; the budgets under another key where
            the summary names it as its ``"level_name"``).
        path: the PNG file to write (folders are created).
        title: the figure's title.
        xlabel: the x axis label (the attack budget and its unit).

    Returns:
        the path written.
    """
    panels = {"mean Dice": ("mean_dice", summaries), "mean Jaccard": ("mean_jaccard", summaries)}
    return _plot_panels(panels, path, title, xlabel)


def plot_robustness_panels(
    panels: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    metric: str = "mean_dice",
    title: str | None = None,
    xlabel: str = "epsilon",
) -> Path:
    """
    Plot one metric against epsilon for several attacks side by side (one panel per attack) and save a PNG.

    Args:
        panels: panel title (the attack) -> results of :py:meth:`monai_ext.engines.RobustnessSweep.run` under it.
        path: the PNG file to write (folders are created).
        metric: the result key on the y axis, ``"mean_dice"`` or ``"mean_jaccard"``.
        title: the figure's title.
        xlabel: the x axis label (the attack budget and its unit).

    Returns:
        the path written.
    """
    if not panels:
        raise ValueError("plot_robustness_panels needs at least one panel.")
    return _plot_panels({name: (metric, summaries) for name, summaries in panels.items()}, path, title, xlabel)


def _plot_panels(
    panels: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]], path: str | Path, title: str | None, xlabel: str
) -> Path:
    """Draw ``panel title -> (result key, summaries)`` as side-by-side axes, one line per summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.5 * len(panels), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False)
    colours: dict[str, str] = {}  # one colour per network across the panels
    for ax, (name, (key, summaries)) in zip(axes[0], panels.items()):
        for summary in summaries:
            label = summary.get("label", "network")
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            level = summary.get("level_name", "epsilon")  # the key of the budgets (VAFA's: "q_max")
            results = sorted(summary["results"], key=lambda r: r[level])
            ax.plot(
                [r[level] for r in results],
                [r[key] for r in results],
                marker="o",
                markersize=3,
                color=colour,
                label=label,
            )
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(key.replace("_", " "))
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:] or "png", dpi=120)
    return path


def plot_training_curves(
    scalars: Mapping[str, Sequence[tuple[float, float]]], path: str | Path, title: str | None = None, columns: int = 3
) -> Path:
    """
    Plot scalar series (TensorBoard tags: losses, validation metrics) against their step, one panel per tag, and save
    a PNG.

    Args:
        scalars: tag -> ``(step, value)`` pairs.
        path: the PNG file to write (folders are created).
        title: the figure's title.
        columns: panels per row.

    Returns:
        the path written.
    """
    if not scalars:
        raise ValueError("plot_training_curves needs at least one scalar series.")
    n_cols = max(1, min(columns, len(scalars)))
    n_rows = -(-len(scalars) // n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.0 * n_rows + (0.4 if title else 0.0)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (tag, points) in zip(axes, scalars.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(scalars) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:] or "png", dpi=100)
    return path
