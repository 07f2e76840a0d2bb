"""Robustness curves: Dice and Jaccard against the attack budget, one line per network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_robustness_curves"]


def plot_robustness_curves(
    summaries: Sequence[Mapping[str, Any]], path: str | Path, title: str | None = None, xlabel: str = "epsilon"
) -> Path:
    """
    Plot mean Dice and mean Jaccard against epsilon (two panels, as Fig. 4 of the NLCEN paper) and save a PNG.

    Args:
        summaries: results of :py:meth:`monai_ext.engines.RobustnessSweep.run`, each with ``"label"`` and
            ``"results"`` (a list of ``{"epsilon", "mean_dice", "mean_jaccard"}``).
        path: the PNG file to write (folders are created).
        title: the figure's title.
        xlabel: the x axis label (the attack budget and its unit).

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for summary in summaries:
        results = sorted(summary["results"], key=lambda r: r["epsilon"])
        eps = [r["epsilon"] for r in results]
        for ax, key in zip(axes, ("mean_dice", "mean_jaccard")):
            ax.plot(eps, [r[key] for r in results], marker="o", markersize=3, label=summary.get("label", "network"))
    for ax, name in zip(axes, ("Dice", "Jaccard")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mean {name}")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
