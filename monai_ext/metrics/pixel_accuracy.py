"""
Pixel accuracy of a multi-class segmentation: the fraction of pixels (voxels) whose predicted class is the true one.

It differs from the mean over classes of MONAI's one-vs-rest ``ConfusionMatrixMetric(metric_name="accuracy")``,
``(TP_c + TN_c) / N`` averaged over the C classes: every wrong pixel is a false positive of one class and a false
negative of another, so that mean is ``1 - 2 E / (C N)`` for E wrong pixels of N, while the pixel accuracy is
``1 - E / N``; per image, ``pixel accuracy = 1 - C / 2 * (1 - mean one-vs-rest accuracy)``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["PixelAccuracyMetric", "compute_pixel_accuracy"]


def compute_pixel_accuracy(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """
    Pixel accuracy per image of one-hot predictions and labels.

    Args:
        y_pred: (B, C, *spatial) one-hot prediction (one class per pixel, as MONAI's ``AsDiscrete(argmax=True,
            to_onehot=C)`` gives).
        y: (B, C, *spatial) one-hot ground truth, same shape.

    Returns:
        (B, 1) fraction of the pixels of each image where the prediction's class is the label's class.
    """
    if y_pred.shape != y.shape or y_pred.ndim < 3:
        raise ValueError(f"y_pred and y must be one-hot (B, C, *spatial) of one shape, got {y_pred.shape}, {y.shape}.")
    correct = (y_pred.bool() & y.bool()).flatten(2).any(dim=1).float()
    return correct.mean(dim=1, keepdim=True)


class PixelAccuracyMetric(CumulativeIterationMetric):
    """
    :py:func:`compute_pixel_accuracy` per image, accumulated over iterations, as MONAI's ``DiceMetric`` accumulates
    the Dice. ``aggregate()`` reduces the (N, 1) buffer with ``reduction`` (the mean over images by default).

    Example::

        metric = PixelAccuracyMetric()
        metric(y_pred=one_hot_pred, y=one_hot_label)  # per batch
        accuracy = metric.aggregate().item()
    """

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__()
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("PixelAccuracyMetric needs the ground truth y.")
        return compute_pixel_accuracy(y_pred, y)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> Any:
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
