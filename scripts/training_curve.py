"""
A training run's curve from its TensorBoard logs: one PNG (a panel per scalar tag, e.g. ``train_loss`` and
``val_mean_dice``) and one CSV (``tag,step,value``), so that a bundle's docs can show and cite the curve of a run
whose weights are not committed.

Example (the 3D UNet of bundles/robust3d/docs/README.md)::

    python scripts/training_curve.py bundles/robust3d/runs bundles/robust3d/docs/results/unet_training \
        --title "robust3d: 3D UNet on la2018_mri"
"""

from __future__ import annotations

import csv
from pathlib import Path

import fire

from monai_ext.report.gather import find_event_dirs, read_scalars
from monai_ext.utils import atomic_open
from monai_ext.visualize import plot_training_curves


def training_curve(runs_dir: str, output: str, title: str | None = None) -> dict[str, float]:
    """
    Write ``output.png`` and ``output.csv`` from the TensorBoard event files directly in ``runs_dir``.

    Returns:
        the last value of every tag.

    Raises:
        FileNotFoundError: ``runs_dir`` holds no event files.
    """
    event_dirs = [d for d in find_event_dirs(Path(runs_dir)) if d == Path(runs_dir)]
    if not event_dirs:
        raise FileNotFoundError(f"no TensorBoard event files directly in {runs_dir}.")
    scalars = read_scalars(event_dirs[0])
    plot_training_curves(scalars, f"{output}.png", title=title)
    with atomic_open(f"{output}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", "step", "value"])
        for tag, points in scalars.items():
            writer.writerows([tag, int(step), value] for step, value in points)
    return {tag: points[-1][1] for tag, points in scalars.items()}


if __name__ == "__main__":
    fire.Fire(training_curve)
