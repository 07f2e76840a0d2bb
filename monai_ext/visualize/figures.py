"""Writing a matplotlib figure to a file, atomically: the one way every plot of ``monai_ext.visualize`` is saved."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from matplotlib.figure import Figure

from monai_ext.utils.files import atomic_open

__all__ = ["save_figure"]


def save_figure(fig: Figure, path: str | PathLike, dpi: int = 120) -> Path:
    """
    Lay out ``fig`` and write it to ``path`` atomically (the format from the suffix, PNG without one; the folder is
    created); returns the path.
    """
    path = Path(path)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix[1:] or "png", dpi=dpi)
    return path
