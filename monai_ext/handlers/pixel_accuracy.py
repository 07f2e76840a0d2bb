"""Ignite door to :py:class:`monai_ext.metrics.PixelAccuracyMetric`, as MONAI's ``MeanDice`` is to ``DiceMetric``."""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers import IgniteMetricHandler
from monai.utils import MetricReduction

from monai_ext.metrics.pixel_accuracy import PixelAccuracyMetric

__all__ = ["PixelAccuracyHandler"]


class PixelAccuracyHandler(IgniteMetricHandler):
    """
    Pixel accuracy per image of one-hot ``(pred, label)`` batches, averaged over the images.

    Args:
        reduction: MONAI reduction of the per-image values (``"mean"``).
        output_transform: engine output -> ``(y_pred, y)``, e.g. ``from_engine(["pred", "label"])``.
        save_details: keep the per-image values in ``engine.state.metric_details[name]`` (for ``MetricsSaver``).
    """

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PixelAccuracyMetric(reduction=reduction)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
