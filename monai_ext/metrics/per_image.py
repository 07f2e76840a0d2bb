"""
Per-image scores and their summaries, as the deep input transfer paper reports them (Table 1: mean and standard error
of Dice, FPR and FNR over the test images; Fig. 4: their Gaussian kernel density estimates).

:py:func:`compute_per_image_dice` is the one per-image Dice of ``monai_ext``: the worst-case ensemble ranks its attacks
by it (:py:func:`monai_ext.attacks.dice_score`) and gradient perturbation stops on it
(:py:func:`monai_ext.attacks.matches_label`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics.confusion_matrix import compute_confusion_matrix_metric
from scipy.stats import gaussian_kde

__all__ = [
    "compute_per_image_dice",
    "density_curve",
    "mean_standard_error",
    "per_image_distances",
    "per_image_scores",
]


def per_image_scores(details: torch.Tensor, metric_name: str | None = None) -> torch.Tensor:
    """
    One score per image from the per-image details an evaluator's metric keeps (``engine.state.metric_details``):
    per-class values ``(N, C)`` (MONAI's ``MeanDice``, ``MeanIoUHandler``), or confusion matrices ``(N, C, 4)``
    (MONAI's ``ConfusionMatrix``: ``tp, fp, tn, fn``) turned into ``metric_name`` (``"fpr"``, ``"fnr"``, any name of
    MONAI's ``compute_confusion_matrix_metric``). The classes are averaged, NaN left out (an image without a class).

    Returns:
        ``(N,)`` float64, NaN for an image with no defined class.
    """
    details = torch.as_tensor(details, dtype=torch.float64)
    if details.ndim == 3 and details.shape[-1] == 4:
        if metric_name is None:
            raise ValueError("details are confusion matrices (N, C, 4): give the metric_name to compute from them.")
        details = compute_confusion_matrix_metric(metric_name, details)
    if details.ndim == 1:
        details = details[:, None]
    if details.ndim != 2:
        raise ValueError(f"details must be (N, C) values or (N, C, 4) confusion matrices, got {tuple(details.shape)}.")
    return details.nanmean(dim=1)


def compute_per_image_dice(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = False,
    ignore_empty: bool = False,
    num_classes: int | None = None,
) -> torch.Tensor:
    """
    The Dice of each image: MONAI's per-class Dice (``compute_dice``, ``DiceMetric`` with ``reduction="none"``) averaged
    over the classes as :py:func:`per_image_scores` averages an evaluator's details (NaN classes left out). Computed
    at once for the batch (MONAI's ``compute_dice`` loops over images and classes in Python), exact in float64.

    Args:
        y_pred: the prediction, one-hot ``(B, C, *spatial)`` or class indices ``(B, 1, *spatial)`` with
            ``num_classes``.
        y: the ground truth, in either form.
        include_background: whether class 0 counts.
        ignore_empty: as MONAI's: ``True`` leaves out (NaN) a class absent from the ground truth; ``False`` (default)
            scores it 1 when the prediction lacks it too, else 0.
        num_classes: the number of classes ``C`` (with background), needed when both are class indices; ``None``:
            the channels of the one-hot input.

    Returns:
        ``(B,)`` float64, NaN for an image with no class left to score.
    """
    if num_classes is None:
        num_classes = max(y_pred.shape[1], y.shape[1])
        if num_classes == 1:
            raise ValueError("y_pred and y are both class indices (B, 1, *spatial): give num_classes.")
    counts = []  # per class: true positives, predicted and true pixels, each (B,)
    for c in range(0 if include_background else 1, num_classes):
        pred = (y_pred[:, 0] == c) if y_pred.shape[1] == 1 else y_pred[:, c].bool()
        truth = (y[:, 0] == c) if y.shape[1] == 1 else y[:, c].bool()
        counts.append(torch.stack([(pred & truth).flatten(1).sum(1), pred.flatten(1).sum(1), truth.flatten(1).sum(1)]))
    if not counts:
        return torch.full((y_pred.shape[0],), torch.nan, dtype=torch.float64, device=y_pred.device)
    overlap, predicted, true = torch.stack(counts, dim=2).double()  # each (B, classes)
    empty = torch.full_like(predicted, torch.nan) if ignore_empty else (predicted == 0).double()
    dice = torch.where(true > 0, 2.0 * overlap / (true + predicted).clamp_min(1), empty)
    return per_image_scores(dice)


def per_image_distances(distances: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    One distance per image from per-class surface distances (MONAI's ``HausdorffDistanceMetric`` and its handlers'
    ``metric_details``), and which images have an empty prediction.

    MONAI gives a non-finite distance (NaN, or inf) for a class whose prediction or label is empty. Per image:

    - the classes its label lacks are left out (``present`` is ``False``; the same images and classes that
      ``DiceMetric`` leaves out with ``ignore_empty``);
    - a class of its label that its prediction misses has an infinite distance, so the image's distance is undefined:
      it is flagged ``empty`` (to be counted, never silently dropped) and its value is NaN;
    - otherwise its value is the mean over the classes of its label; NaN (not flagged) for an image whose label has no
      class at all.

    Args:
        distances: ``(N, C)`` per image and class.
        present: ``(N, C)`` bool, where the label has the class (for example ``~isnan`` of ``DiceMetric``'s per-class
            details, which are NaN exactly where the label lacks the class).

    Returns:
        ``(values, empty)``: ``(N,)`` float64 distances and ``(N,)`` bool.
    """
    distances = torch.as_tensor(distances, dtype=torch.float64)
    present = torch.as_tensor(present, dtype=torch.bool)
    if distances.ndim == 1:
        distances, present = distances[:, None], present.reshape(-1, 1)
    if distances.ndim != 2 or present.shape != distances.shape:
        raise ValueError(
            f"distances and present must both be (N, C), got {tuple(distances.shape)} and {tuple(present.shape)}."
        )
    missed = present & ~torch.isfinite(distances)
    empty = missed.any(dim=1)
    kept = torch.where(present, distances, torch.nan)
    values = torch.where(empty | ~present.any(dim=1), torch.nan, kept.nanmean(dim=1))
    return values, empty


def mean_standard_error(values: Sequence[float] | torch.Tensor | np.ndarray) -> dict[str, float]:
    """
    ``{"mean", "standard_error", "std", "n"}`` of the finite ``values``: the mean, the standard error of the mean
    ``std / sqrt(n)`` with the sample standard deviation (``ddof=1``), and the count (NaN where undefined).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = int(x.size)
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    return {
        "mean": float(x.mean()) if n else math.nan,
        "standard_error": std / math.sqrt(n) if n > 1 else math.nan,
        "std": std,
        "n": n,
    }


def density_curve(values: Sequence[float] | np.ndarray, grid: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """
    The Gaussian kernel density estimate of the finite ``values`` (SciPy's ``gaussian_kde``, Scott's bandwidth) on
    ``grid``; ``None`` when it is undefined (fewer than two distinct values).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if np.unique(x).size < 2:
        return None
    return gaussian_kde(x)(np.asarray(grid, dtype=np.float64))
