"""Grouped bars: a metric of several models under several conditions (clean and attacked), one panel per metric."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from monai_ext.visualize.figures import save_figure

__all__ = ["plot_condition_bars"]


def plot_condition_bars(
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    path: str | Path,
    metrics: Mapping[str, str],
    baselines: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """
    One panel per metric; in each, one group of bars per model, one bar per condition (clean, each attack), and save
    a PNG. A missing value is left out.

    Args:
        results: model label -> condition -> metrics (the results of
            :py:meth:`monai_ext.engines.AttackEvaluation.run` per model).
        path: the PNG file to write (folders are created).
        metrics: result key -> panel title, e.g. ``{"pixel_accuracy": "pixel accuracy"}``.
        baselines: result key -> a value drawn as a dashed line in its panel (what an all-background prediction
            scores, say).
        title: the figure's title.

    Returns:
        the path written.
    """
    if not results or not metrics:
        raise ValueError("plot_condition_bars needs at least one model and one metric.")
    path = Path(path)
    models = list(results)
    conditions = list(dict.fromkeys(c for by_condition in results.values() for c in by_condition))
    width = 0.8 / len(conditions)
    fig = Figure(figsize=(max(5.5, 1.3 * len(models)) * len(metrics), 4.4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (key, name) in zip(axes, metrics.items()):
        for j, condition in enumerate(conditions):
            xs, ys = [], []
            for i, model in enumerate(models):
                value = results[model].get(condition, {}).get(key)
                if isinstance(value, (int, float)):
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(value)
            ax.bar(xs, ys, width=width, color=f"C{j % 10}", label=condition)
        if baselines and key in baselines:
            ax.axhline(baselines[key], color="black", linestyle="--", linewidth=1, label="all background")
        ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
        ax.set_title(name)
        ax.set_ylim(0.0, 1.2)  # room for the legend above the bars
        ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper center", ncol=len(conditions) + 1, fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
