"""
Prototype segmentation (ProtoSeg) of deep features and their segmentation ability (SA) score.

He S., Feng Y., Grant P.E., Ou Y. *Segmentation ability map: Interpret deep features for medical image
segmentation.* Medical Image Analysis, 2023. Section 3, eq. 5-8 and 12, Algorithm 1.

Given a feature map ``f`` (B, C, *spatial) and an initial mask (the network's output, or any mask), the
prototype of class ``k`` is the mask-weighted mean feature ``c_k = sum_i m_k(i) f_i / sum_i m_k(i)`` (eq. 6),
the probability of class ``k`` at pixel/voxel ``i`` is ``softmax_k(-||f_i - c_k||^2)`` (eq. 5), and the
segmentation ability map (SAM) is its argmax (eq. 7). The SA score is the Dice of the SAM against a reference
segmentation (eq. 8): the ground truth, or the network's own output for the mean SA score ``mu`` (eq. 12).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = [
    "SAScoreMetric",
    "binarize_prediction",
    "class_weights",
    "compute_prototypes",
    "compute_sa_score",
    "dice_from_probabilities",
    "mean_sa_score",
    "protoseg",
]

_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Resample channel-first ``x`` (N, C, *spatial) to ``size``: ``"area"`` (averages) or ``"linear"``."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=_LINEAR_MODES[len(size)], align_corners=False)


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        num_nan = int(torch.isnan(x).sum())
        raise ValueError(
            f"{name} holds {num_nan} NaN and {int((~torch.isfinite(x)).sum()) - num_nan} infinite values "
            f"(of {x.numel()}, shape {tuple(x.shape)})."
        )


def _check_unit_range(x: torch.Tensor, name: str, hint: str = "") -> None:
    _check_finite(x, name)
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must hold weights in [0, 1], got values in [{lo:g}, {hi:g}].{hint}")


def class_weights(mask: torch.Tensor) -> torch.Tensor:
    """
    The per-class weights of an initial mask: a 1-channel mask ``m`` (the object's probability or a binary mask)
    becomes ``[1 - m, m]`` (background, object); a mask of ``K >= 2`` channels (one-hot, or class probabilities)
    is returned as it is.

    Args:
        mask: (B, 1 or K, *spatial), values in [0, 1].

    Returns:
        (B, K, *spatial) with ``K = 2`` for a 1-channel mask, in the mask's floating dtype (float32 for integer
        or bool masks).
    """
    if mask.ndim < 3:
        raise ValueError(f"mask must be (B, 1 or K, *spatial) with 1 to 3 spatial dims, got shape {tuple(mask.shape)}.")
    if not mask.is_floating_point():
        mask = mask.to(torch.float32)
    _check_unit_range(
        mask,
        "mask",
        " A 1-channel mask is the object's probability; one-hot a class-index mask first "
        "(monai.networks.utils.one_hot).",
    )
    return torch.cat([1.0 - mask, mask], dim=1) if mask.shape[1] == 1 else mask


def binarize_prediction(pred: torch.Tensor) -> torch.Tensor:
    """
    The binarised output of a network (``B`` of eq. 6) as a one-hot mask: argmax over the channels of a
    ``K >= 2``-channel prediction (logits or probabilities), ``pred >= 0.5`` for a 1-channel probability.

    Args:
        pred: (B, 1 or K, *spatial).

    Returns:
        (B, K, *spatial) one-hot in ``pred``'s floating dtype (float32 otherwise), ``K = 2`` for a 1-channel input.
    """
    if pred.ndim < 3:
        raise ValueError(f"pred must be (B, 1 or K, *spatial), got shape {tuple(pred.shape)}.")
    dtype = pred.dtype if pred.is_floating_point() else torch.float32
    if pred.shape[1] == 1:
        obj = (pred >= 0.5).to(dtype)
        return torch.cat([1.0 - obj, obj], dim=1)
    index = pred.argmax(dim=1)
    return F.one_hot(index, pred.shape[1]).movedim(-1, 1).to(dtype)


def _prepare(
    features: torch.Tensor, mask: torch.Tensor, tissue_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the inputs; return the class weights and the tissue mask at the feature's resolution."""
    if features.ndim not in (3, 4, 5):
        raise ValueError(
            f"features must be (B, C, *spatial) with 1, 2 or 3 spatial dims, got shape {tuple(features.shape)}."
        )
    if not features.is_floating_point():
        raise ValueError(f"features must be a floating point tensor, got dtype {features.dtype}.")
    _check_finite(features, "features")
    spatial = features.shape[2:]
    weights = class_weights(mask)
    if weights.ndim != features.ndim or weights.shape[0] != features.shape[0]:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match features of shape {tuple(features.shape)}: "
            "need the same batch size and number of spatial dims (resolutions may differ)."
        )
    weights = _resize(weights.to(features.dtype), spatial, "area")
    tissue = None
    if tissue_mask is not None:
        if tissue_mask.ndim != features.ndim or tissue_mask.shape[:2] != (features.shape[0], 1):
            raise ValueError(
                f"tissue_mask must be (B, 1, *spatial) with B = {features.shape[0]}, got shape {tuple(tissue_mask.shape)}."
            )
        tissue = tissue_mask.to(features.dtype)
        _check_unit_range(tissue, "tissue_mask")
        tissue = _resize(tissue, spatial, "area")
        weights = weights * tissue
    return weights, tissue


def compute_prototypes(
    features: torch.Tensor, mask: torch.Tensor, tissue_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per-sample class prototypes, the mask-weighted mean features of eq. 6.

    The mask (and the tissue mask) are resampled to the feature's resolution by area averaging, so that a
    binary mask at full resolution gives fractional weights on the pixels of a coarse feature map.

    Args:
        features: (B, C, *spatial) feature map, 1 to 3 spatial dims.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1] at any resolution (see :func:`class_weights`).
        tissue_mask: optional (B, 1, *spatial'') weights in [0, 1]: only tissue pixels make prototypes.

    Returns:
        ``(prototypes, weight_sums)``: (B, K, C) prototypes and (B, K) sums of the class weights at the
        feature's resolution (in pixels of the feature map). A class whose weight sum is 0 in a sample (no
        object pixel, or an all-object mask for the background) has an all-zero prototype there.
    """
    weights, _ = _prepare(features, mask, tissue_mask)
    return _prototypes(features, weights)


def _prototypes(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sums = weights.flatten(2).sum(-1)  # (B, K)
    weighted = torch.einsum("bkn,bcn->bkc", weights.flatten(2), features.flatten(2))
    # clamp: an empty class gives 0 / tiny = 0 with finite gradients (a 0 / 0 would be NaN in both passes)
    return weighted / sums.clamp_min(torch.finfo(features.dtype).tiny).unsqueeze(-1), sums


def protoseg(
    features: torch.Tensor,
    mask: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    spatial_size: Sequence[int] | None = None,
    per_unit: bool = False,
) -> torch.Tensor:
    """
    ProtoSeg probability map (eq. 5, Algorithm 1): ``p_k(i) = softmax_k(-||f_i - c_k||^2)`` with the prototypes
    ``c_k`` of :func:`compute_prototypes`. Parameter-free and differentiable in ``features`` and ``mask``.

    - Binary: a 1-channel mask gives 2 classes (background 0, object 1); multi-class: one prototype per channel
      of a K-channel mask.
    - Empty classes: a class with no weight in a sample (for example no object pixel in the initial mask) has no
      prototype and probability 0 everywhere in that sample, so an empty object gives an all-background map and
      an all-object mask an all-object map. If no class has any weight (an all-zero K-channel mask, or an empty
      tissue mask) the map is uniform, ``1 / K``, and its argmax is class 0. Never NaN.
    - ``tissue_mask``: prototypes are computed on tissue pixels only, and outside the tissue the map is
      background: ``p = tissue * p + (1 - tissue) * [1, 0, ..., 0]``.
    - ``per_unit``: every channel (unit) of ``features`` is segmented on its own, as a one-channel feature map
      (the unit analysis of section 4.5 and the mean SA score of eq. 12), all at once.

    The map is computed at the feature's resolution; ``spatial_size`` resamples it (bilinear / trilinear, so it
    stays a probability map) to, for example, the ground truth's resolution.

    Args:
        features: (B, C, *spatial) feature map, 1 to 3 spatial dims, finite values.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1] at any resolution (resampled by area averaging).
        tissue_mask: optional (B, 1, *spatial'') weights in [0, 1] at any resolution.
        spatial_size: the output's spatial size; the feature's by default.
        per_unit: segment each channel on its own.

    Returns:
        (B, K, *size) probabilities summing to 1 over the K classes, or (B, C, K, *size) with ``per_unit``.
    """
    weights, tissue = _prepare(features, mask, tissue_mask)
    prototypes, sums = _prototypes(features, weights)
    num_spatial = features.ndim - 2
    expand = (...,) + (None,) * num_spatial
    sq_dist = (features.unsqueeze(1) - prototypes[expand]).square()  # (B, K, C, *spatial)
    if per_unit:
        logits = -sq_dist.transpose(1, 2)  # (B, C, K, *spatial)
        present = (sums > 0)[:, None][expand]
        class_dim = 2
    else:
        logits = -sq_dist.sum(dim=2)  # (B, K, *spatial)
        present = (sums > 0)[expand]
        class_dim = 1
    # an absent class gets the lowest logit: probability 0, or 1/K when every class is absent
    logits = torch.where(present, logits, torch.finfo(logits.dtype).min)
    prob = torch.softmax(logits, dim=class_dim)
    if tissue is not None:
        background = torch.zeros_like(prob)
        background.narrow(class_dim, 0, 1).fill_(1.0)
        tissue_b = tissue.unsqueeze(1) if per_unit else tissue
        prob = tissue_b * prob + (1.0 - tissue_b) * background
    if spatial_size is not None:
        if len(spatial_size) != num_spatial:
            raise ValueError(f"spatial_size {tuple(spatial_size)} must have {num_spatial} sizes, as the features.")
        if per_unit:
            b, c, k = prob.shape[:3]
            prob = _resize(prob.reshape(b * c, k, *prob.shape[3:]), spatial_size, "linear")
            prob = prob.reshape(b, c, k, *prob.shape[2:])
        else:
            prob = _resize(prob, spatial_size, "linear")
    return prob


def _label_indices(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (B, *spatial) from a (B, 1) class-index or (B, K) one-hot label, with checks."""
    if y.shape[1] == 1:
        index = y[:, 0]
        if index.is_floating_point():
            _check_finite(index, "y")
            if not bool((index == index.round()).all()):
                raise ValueError("y with 1 channel must hold class indices (whole numbers); got fractional values.")
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"y holds class indices in [{lo}, {hi}], outside [0, {num_classes - 1}] of {num_classes} classes.")
        return index.long()
    if y.shape[1] != num_classes:
        raise ValueError(f"y has {y.shape[1]} channels; expected 1 (class indices) or {num_classes} (one-hot).")
    return y.argmax(dim=1)


def dice_from_probabilities(
    prob: torch.Tensor, y: torch.Tensor, include_background: bool = False, class_dim: int = 1
) -> torch.Tensor:
    """
    Dice of the argmax of a probability map against a label, per sample (and unit) and class, with the
    convention of ``monai.metrics.compute_dice(..., ignore_empty=False)``: 1 when both the prediction and the
    label of a class are empty, 0 when only the label is.

    Args:
        prob: (B, K, *spatial), or (B, U, K, *spatial) with ``class_dim=2`` (U units scored against one label).
        y: (B, 1, *spatial) class indices or (B, K, *spatial) one-hot, same spatial size as ``prob``.
        include_background: score class 0 too.
        class_dim: the class dimension of ``prob``, 1 or 2.

    Returns:
        (B, K or K - 1), or (B, U, K or K - 1) with ``class_dim=2``.
    """
    num_classes = prob.shape[class_dim]
    spatial = prob.shape[class_dim + 1 :]
    if y.ndim != len(spatial) + 2 or y.shape[0] != prob.shape[0] or tuple(y.shape[2:]) != tuple(spatial):
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not match the map of shape {tuple(prob.shape)}: "
            f"need (B, 1 or {num_classes}, *{tuple(spatial)})."
        )
    pred = prob.argmax(dim=class_dim)  # (B, [U,] *spatial)
    label = _label_indices(y, num_classes)
    if class_dim == 2:
        label = label.unsqueeze(1)
    dims = tuple(range(pred.ndim - len(spatial), pred.ndim))
    scores = []
    for k in range(0 if include_background else 1, num_classes):
        p, g = pred == k, label == k
        inter = (p & g).sum(dims)
        total = p.sum(dims) + g.sum(dims)
        scores.append(torch.where(total > 0, 2.0 * inter / total.clamp_min(1), 1.0))
    return torch.stack(scores, dim=-1).to(prob.dtype if prob.is_floating_point() else torch.float32)


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

    The ProtoSeg map of ``features`` (prototypes from ``mask``, see :func:`protoseg`) is resampled to ``y``'s
    resolution (bilinear / trilinear) before the argmax, so coarse feature maps are scored at full resolution.

    Args:
        features: (B, C, *spatial) feature map.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1] (the binarised network output in the paper).
        y: (B, 1, *spatial'') class indices or (B, K, *spatial'') one-hot: the ground truth, or the network's
            output for the mean SA score.
        tissue_mask: optional (B, 1, *spatial) tissue weights (see :func:`protoseg`).
        include_background: score class 0 too.
        per_unit: score every channel of ``features`` on its own.

    Returns:
        (B, K - 1) Dice per sample and class (K with ``include_background``), or (B, C, K - 1) with ``per_unit``.
    """
    if y.ndim != features.ndim:
        raise ValueError(f"y of shape {tuple(y.shape)} must have as many dims as features {tuple(features.shape)}.")
    prob = protoseg(features, mask, tissue_mask, spatial_size=y.shape[2:], per_unit=per_unit)
    return dice_from_probabilities(prob, y, include_background, class_dim=2 if per_unit else 1)


def mean_sa_score(
    features: Sequence[torch.Tensor], pred: torch.Tensor, tissue_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """
    The mean SA score ``mu(x)`` of eq. 12, a quality estimate of a prediction without ground truth: the SA score
    of every unit (channel) of ``features`` (the last two layers in the paper) against the network's own
    binarised output, which is also the initial mask, averaged over all units (and the foreground classes).

    A prediction with no foreground gives 1 (every unit's SAM is then all background too, see :func:`protoseg`).

    Args:
        features: feature maps (B, C_j, *spatial_j), any resolutions.
        pred: (B, 1 or K, *spatial) the network's output (logits or probabilities; see :func:`binarize_prediction`).
        tissue_mask: optional (B, 1, *spatial) tissue weights.

    Returns:
        (B,) ``mu`` in [0, 1].
    """
    if len(features) == 0:
        raise ValueError("mean_sa_score needs at least one feature map.")
    reference = binarize_prediction(pred)
    scores = [
        compute_sa_score(f, reference, reference, tissue_mask, per_unit=True).mean(dim=-1) for f in features
    ]  # each (B, C_j)
    return torch.cat(scores, dim=1).mean(dim=1)


class SAScoreMetric(CumulativeIterationMetric):
    """
    Segmentation ability (SA) score of a feature map as a MONAI cumulative metric: per iteration, the Dice of the
    ProtoSeg SAM of ``y_pred`` (the features) against ``y`` (the ground truth) with the prototypes from ``mask``
    (:func:`compute_sa_score`); ``aggregate()`` reduces the per-sample, per-class buffer.

    Example::

        metric = SAScoreMetric()
        for features, pred, label in batches:
            metric(y_pred=features, y=label, mask=binarize_prediction(pred))
        mean_sa = metric.aggregate().item()
        per_sample = metric.get_buffer()  # (N, K - 1)

    Args:
        include_background: score class 0 too.
        reduction: MONAI reduction of the (N, K') buffer in ``aggregate``; ``"none"`` keeps it.
        get_not_nans: also return the count of not-NaN values (always all: SA scores are never NaN).
    """

    def __init__(
        self,
        include_background: bool = False,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.include_background = include_background
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(  # type: ignore[override]
        self,
        y_pred: torch.Tensor,
        y: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        tissue_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            y_pred: (B, C, *spatial) features.
            y: (B, 1 or K, *spatial') ground truth.
            mask: (B, 1 or K, *spatial'') initial mask in [0, 1] (required).
            tissue_mask: optional (B, 1, *spatial) tissue weights.
        """
        if y is None or mask is None:
            raise ValueError("SAScoreMetric needs y (the ground truth) and mask (the initial mask of the prototypes).")
        return compute_sa_score(y_pred, mask.to(y_pred.device), y, tissue_mask, self.include_background)

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Reduce the buffer of per-sample, per-class SA scores (``reduction`` overrides the constructor's)."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
