"""
Segmentation ability (SA) scores of deep features (He et al., MedIA 2023, eq. 8 and 12): the Dice of the ProtoSeg
SAM of a feature map against a reference segmentation, per layer or per unit (channel), and the mean SA score
``mu`` of a prediction; as functions and as MONAI cumulative metrics.

Each function checks its inputs once and hands them to one kernel, ``_sa_scores``: the SAM of each feature map
(:py:mod:`monai_ext.metrics.protoseg_map`) at the reference's resolution, scored by MONAI's ``compute_dice``
(``ignore_empty=False``: 1 when a class is empty in both the SAM and the reference, 0 when only in the reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric, compute_dice
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from monai_ext.metrics.protoseg_map import _argmax, _probabilities, binarize_prediction, check_protoseg_inputs
from monai_ext.utils.checks import check_class_indices

__all__ = ["MeanSAScoreMetric", "SAScoreMetric", "compute_layer_sa_scores", "compute_sa_score", "mean_sa_score"]


def _reference(y: torch.Tensor, like: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Check a reference segmentation against features ``like``; return its class indices (B, 1, *spatial)."""
    if y.ndim != like.ndim or y.shape[0] != like.shape[0]:
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not match: need (B, 1 or {num_classes}, *spatial) with "
            f"B = {like.shape[0]} and {like.ndim - 2} spatial dims."
        )
    if y.shape[1] == 1:
        check_class_indices(y, num_classes, "y")
        return y.long()
    if y.shape[1] != num_classes:
        raise ValueError(f"y has {y.shape[1]} channels; expected 1 (class indices) or {num_classes} (one-hot).")
    return y.argmax(dim=1, keepdim=True)


def _sa_scores(
    features: Sequence[torch.Tensor],
    weights: torch.Tensor,
    tissue: torch.Tensor | None,
    label: torch.Tensor,
    include_background: bool,
    per_unit: bool,
) -> list[torch.Tensor]:
    """The kernel: per feature map, the Dice of its SAM at the label's resolution against ``label`` (B, 1, *size):
    (B, K') per map, or (B, C, K') per unit, in the features' dtype."""
    if per_unit and label.shape[0] > 1:  # a sample at a time: its unit maps (C, K, *size) are the largest tensors here
        rows = [
            _sa_scores([f[i : i + 1] for f in features], weights[i : i + 1], None if tissue is None else
                       tissue[i : i + 1], label[i : i + 1], include_background, per_unit)
            for i in range(label.shape[0])
        ]  # fmt: skip
        return [torch.cat(layer, dim=0) for layer in zip(*rows)]
    size, num_classes = label.shape[2:], weights.shape[1]
    cache: dict = {}
    scores = []
    for f in features:
        sam = _argmax(_probabilities(f, weights, tissue, size, per_unit, cache), class_dim=2 if per_unit else 1)
        maps = [m.unsqueeze(1) for m in sam.unbind(1)] if per_unit else [sam.unsqueeze(1)]  # (B, 1, *size) each
        dice = [compute_dice(m, label, include_background, ignore_empty=False, num_classes=num_classes) for m in maps]
        scores.append((torch.stack(dice, dim=1) if per_unit else dice[0]).to(f.dtype))
    return scores


def compute_sa_score(
    features: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    include_background: bool = False,
    per_unit: bool = False,
) -> torch.Tensor:
    """
    The segmentation ability (SA) score of a feature map (eq. 8): the Dice of its SAM against ``y``.

    The ProtoSeg map of ``features`` (prototypes from ``mask``, see :func:`~monai_ext.metrics.protoseg`) is
    resampled to ``y``'s resolution (bilinear / trilinear) before the argmax, so coarse feature maps are scored at
    full resolution.

    Args:
        features: (B, C, *spatial) feature map.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1] (the binarised network output in the paper).
        y: (B, 1, *spatial'') class indices or (B, K, *spatial'') one-hot: the ground truth, or the network's
            output for the mean SA score.
        tissue_mask: optional (B, 1, *spatial) tissue weights.
        include_background: score class 0 too.
        per_unit: score every channel of ``features`` on its own.

    Returns:
        (B, K - 1) Dice per sample and class (K with ``include_background``), or (B, C, K - 1) with ``per_unit``.
    """
    weights, tissue = check_protoseg_inputs([features], mask, tissue_mask)
    label = _reference(y, features, weights.shape[1])
    return _sa_scores([features], weights, tissue, label, include_background, per_unit)[0]


def compute_layer_sa_scores(
    features: Sequence[torch.Tensor],
    mask: torch.Tensor,
    y: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """
    The SA score of several feature maps of one batch (the layers of a network, any resolutions) with one initial
    mask and one reference: :func:`compute_sa_score` of each, with the masks resampled once per resolution.

    Returns:
        (B, L, K - 1) (K with ``include_background``).
    """
    weights, tissue = check_protoseg_inputs(features, mask, tissue_mask)
    label = _reference(y, features[0], weights.shape[1])
    return torch.stack(_sa_scores(features, weights, tissue, label, include_background, False), dim=1)


def mean_sa_score(
    features: Sequence[torch.Tensor], pred: torch.Tensor, tissue_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """
    The mean SA score ``mu(x)`` of eq. 12, a quality estimate of a prediction without ground truth: the SA score
    of every unit (channel) of ``features`` (the last two layers in the paper) against the network's own
    binarised output, which is also the initial mask, averaged over all units (and the foreground classes).

    A prediction with no foreground gives 1 (every unit's SAM is then all background too).

    Args:
        features: feature maps (B, C_j, *spatial_j), any resolutions.
        pred: (B, 1 or K, *spatial) the network's output (logits or probabilities; see
            :func:`~monai_ext.metrics.binarize_prediction`).
        tissue_mask: optional (B, 1, *spatial) tissue weights.

    Returns:
        (B,) ``mu`` in [0, 1].
    """
    reference = binarize_prediction(pred)
    weights, tissue = check_protoseg_inputs(features, reference, tissue_mask)
    label = reference.argmax(dim=1, keepdim=True)
    scores = _sa_scores(features, weights, tissue, label, include_background=False, per_unit=True)
    return torch.cat([s.mean(dim=-1) for s in scores], dim=1).mean(dim=1)


class _FeatureMetric(CumulativeIterationMetric):
    """A cumulative metric whose ``y_pred`` is a feature map (B, C, *spatial) or a mapping of layer names to the
    feature maps of one batch (any resolutions), scored together; ``aggregate()`` reduces the buffer."""

    def __init__(self, reduction: MetricReduction | str, get_not_nans: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def __call__(self, y_pred: Any, y: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if isinstance(y_pred, Mapping):  # the layers of one batch: batch-first tensors, scored at once
            ret = self._compute_tensor(
                [f.detach() for f in y_pred.values()], None if y is None else y.detach(), **kwargs
            )
            self.extend(ret)
            return ret
        return super().__call__(y_pred, y, **kwargs)

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffer (``reduction`` overrides the constructor's; ``"none"`` keeps it)."""
        data = self.get_buffer()
        if data is None:
            raise RuntimeError(f"{type(self).__name__} has no data to aggregate: call it on a batch first.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class SAScoreMetric(_FeatureMetric):
    """
    Segmentation ability (SA) score as a MONAI cumulative metric: per iteration, the Dice of the ProtoSeg SAM of
    ``y_pred`` (the features) against ``y`` (the ground truth) with the prototypes from ``mask``
    (:func:`compute_sa_score`). ``y_pred`` is one feature map (buffer (N, K'), or (N, C, K') with ``per_unit``)
    or a mapping ``{layer name: feature map}`` of one batch (buffer (N, L, K'), :func:`compute_layer_sa_scores`).

    Example::

        metric = SAScoreMetric()
        for features, pred, label in batches:
            metric(y_pred=features, y=label, mask=binarize_prediction(pred))
        mean_sa = metric.aggregate().item()
        per_sample = metric.get_buffer()  # (N, K - 1)

    Args:
        include_background: score class 0 too.
        per_unit: score every channel of a single feature map on its own.
        reduction: MONAI reduction of the buffer in ``aggregate``; ``"none"`` keeps it.
        get_not_nans: also return the count of not-NaN values (always all: SA scores are never NaN).
    """

    def __init__(
        self,
        include_background: bool = False,
        per_unit: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction, get_not_nans)
        self.include_background = include_background
        self.per_unit = per_unit

    def _compute_tensor(  # type: ignore[override]
        self,
        y_pred: torch.Tensor | list[torch.Tensor],
        y: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        tissue_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if y is None or mask is None:
            raise ValueError("SAScoreMetric needs y (the ground truth) and mask (the initial mask of the prototypes).")
        if isinstance(y_pred, torch.Tensor):
            mask = mask.to(y_pred.device)
            return compute_sa_score(y_pred, mask, y, tissue_mask, self.include_background, self.per_unit)
        if self.per_unit:
            raise ValueError("per_unit scores the units of one feature map: give y_pred as a tensor, not a mapping.")
        return compute_layer_sa_scores(y_pred, mask.to(y_pred[0].device), y, tissue_mask, self.include_background)


class MeanSAScoreMetric(_FeatureMetric):
    """
    The mean SA score ``mu`` of eq. 12 as a MONAI cumulative metric: per iteration, :func:`mean_sa_score` of the
    features ``y_pred`` (one feature map, or a mapping ``{layer name: feature map}`` of one batch) against the
    network's output ``y`` (logits or probabilities); buffer (N, 1).

    Args:
        reduction: MONAI reduction of the buffer in ``aggregate``; ``"none"`` keeps it.
        get_not_nans: also return the count of not-NaN values.
    """

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False) -> None:
        super().__init__(reduction, get_not_nans)

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor | list[torch.Tensor], y: torch.Tensor | None = None, tissue_mask: Any = None
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("MeanSAScoreMetric needs y, the network's output.")
        features = [y_pred] if isinstance(y_pred, torch.Tensor) else y_pred
        return mean_sa_score(features, y.to(features[0].device), tissue_mask).unsqueeze(1)
