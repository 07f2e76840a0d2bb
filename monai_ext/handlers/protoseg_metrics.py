"""
ProtoSeg metric handlers (He et al., MedIA 2023): doors from an engine's output to the metrics of
:py:mod:`monai_ext.metrics`, as MONAI's ``MeanDice`` is a door to ``DiceMetric``. Give them to an evaluator's
``key_val_metric`` / ``additional_metrics`` beside a :py:class:`~monai_ext.handlers.FeatureRecorderHandler`; the
per-image scores go to ``engine.state.metric_details[name]``, where :py:class:`~monai_ext.handlers.ProtoSegSaver`
reads them.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

from ignite.engine import Engine
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import DiceMetric
from torch import nn

from monai_ext.handlers.feature_recorder import layer_name, stack_items
from monai_ext.metrics import MeanSAScoreMetric, SAScoreMetric, VarianceOfGradients, binarize_prediction
from monai_ext.networks.utils import BASIC_UNET_LAYERS

__all__ = ["MeanSAScoreHandler", "OutputDiceHandler", "SAScoreHandler", "VarianceOfGradientsHandler"]

logger = logging.getLogger(__name__)


class _BatchMetricHandler(IgniteMetricHandler):
    """An ``IgniteMetricHandler`` whose ``output_transform`` gives any number of columns (features, predictions,
    labels); their items are stacked into batches of one shape and scored by :py:meth:`score`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip_unrolling = True  # ignite would call update() per item of a (pred, label) pair of lists

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        for batch in stack_items(*output):
            self.score(*batch)

    @abstractmethod
    def score(self, *batch: Any) -> None:
        """Add the scores of one batch (the columns of the output transform, stacked) to the metric."""


class SAScoreHandler(_BatchMetricHandler):
    """
    SA score (eq. 8) of recorded layers against the ground truth, with the prototypes from the binarised output:
    :py:class:`~monai_ext.metrics.SAScoreMetric` over ``(features, pred, label)``. Details (N, L, K') for
    several layers, (N, C, K') for the units of one layer (``per_unit``).

    Args:
        layers: ``None``: every recorded layer (``"input"`` included: ``S_x``); a list of names; or one layer, a
            name or an index into the recorded layers other than ``"input"`` (``-1``: the last).
        include_background: score class 0 too.
        per_unit: score each unit (channel) of one layer.
        reduction: the reduction of ``engine.state.metrics[name]``.
        output_transform: engine output -> ``(features, pred, label)``; ``None``: those keys.
        save_details: keep the per-image scores in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        layers: str | int | Sequence[str] | None = None,
        include_background: bool = False,
        per_unit: bool = False,
        reduction: str = "mean",
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        self.layers = layers
        metric_fn = SAScoreMetric(include_background, per_unit=per_unit, reduction=reduction)
        super().__init__(
            metric_fn,
            output_transform=output_transform or from_engine(["features", "pred", "label"]),
            save_details=save_details,
        )

    def score(self, features: dict, pred: Any, label: Any) -> None:
        if isinstance(self.layers, (str, int)):
            features = features[layer_name(list(features), self.layers)]
        elif self.layers is not None:
            features = {name: features[name] for name in self.layers}
        mask = binarize_prediction(pred)
        self.metric_fn(y_pred=features, y=label.to(mask.device), mask=mask)


class MeanSAScoreHandler(_BatchMetricHandler):
    """
    The mean SA score ``mu`` (eq. 12) of each image, a quality estimate without ground truth:
    :py:class:`~monai_ext.metrics.MeanSAScoreMetric` of the units of ``layers`` against the output. Details (N, 1).

    Args:
        layers: the recorded layers whose units are averaged; ``None``: the last two convolutions of ``BasicUNet``.
        output_transform: engine output -> ``(features, pred)``, ``pred`` logits, probabilities or one-hot; ``None``:
            those keys.
        save_details: keep the per-image scores in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        self.layers = list(BASIC_UNET_LAYERS[-2:] if layers is None else layers)
        super().__init__(
            MeanSAScoreMetric(),
            output_transform=output_transform or from_engine(["features", "pred"]),
            save_details=save_details,
        )

    def score(self, features: dict, pred: Any) -> None:
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise KeyError(f"layers {missing} were not recorded; record them with FeatureRecorderHandler.")
        self.metric_fn(y_pred={name: features[name] for name in self.layers}, y=pred)


class OutputDiceHandler(_BatchMetricHandler):
    """
    The Dice of the binarised output (:py:func:`~monai_ext.metrics.binarize_prediction`: logits, probabilities or
    one-hot all work) against the label: MONAI's ``DiceMetric`` with ``ignore_empty=False`` (1 when a class is
    empty in both, as the SA score). Details (N, K').

    Args:
        include_background: score class 0 too.
        output_transform: engine output -> ``(pred, label)``; ``None``: those keys.
        save_details: keep the per-image scores in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        include_background: bool = False,
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        metric_fn = DiceMetric(include_background=include_background, ignore_empty=False)
        super().__init__(
            metric_fn, output_transform=output_transform or from_engine(["pred", "label"]), save_details=save_details
        )

    def score(self, pred: Any, label: Any) -> None:
        mask = binarize_prediction(pred)
        self.metric_fn(y_pred=mask, y=label.to(mask.device))


class VarianceOfGradientsHandler(_BatchMetricHandler):
    """
    The Variance of Gradients baseline (:py:class:`~monai_ext.metrics.VarianceOfGradients`) of each image over
    training checkpoints, for the predicted classes. With fewer than 2 checkpoints it logs a warning and attaches
    nothing. Details (N,).

    Args:
        network: the evaluated network (its architecture).
        checkpoints: checkpoint files in training order.
        output_transform: engine output -> ``(image, pred)``; ``None``: those keys.
        save_details: keep the per-image scores in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        network: nn.Module,
        checkpoints: Sequence[str | PathLike] | None,
        output_transform: Callable | None = None,
        save_details: bool = True,
    ) -> None:
        self.checkpoints = list(checkpoints or [])
        if len(self.checkpoints) < 2:
            logger.warning("VoG needs 2 or more checkpoints, got %s: skipping the VoG baseline.", self.checkpoints)
            return
        metric_fn = VarianceOfGradients(network, self.checkpoints)
        super().__init__(
            metric_fn, output_transform=output_transform or from_engine(["image", "pred"]), save_details=save_details
        )

    def attach(self, engine: Engine, name: str) -> None:  # type: ignore[override]
        if len(self.checkpoints) >= 2:
            super().attach(engine, name)

    def score(self, image: Any, pred: Any) -> None:
        self.metric_fn(image, binarize_prediction(pred).argmax(dim=1, keepdim=True))
