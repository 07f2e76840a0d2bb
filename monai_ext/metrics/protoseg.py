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
    "compute_layer_sa_scores",
    "compute_sa_score",
    "dice_from_probabilities",
    "mean_sa_score",
    "protoseg",
    "protoseg_maps",
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
    """Raise a ``ValueError`` counting the NaN and infinite values of ``x``; a sum is the fast test (it is finite
    when every value is, unless finite values overflow it, which the exact test below then clears)."""
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        num_nan = int(torch.isnan(x).sum())
        raise ValueError(
            f"{name} holds {num_nan} NaN and {int((~torch.isfinite(x)).sum()) - num_nan} infinite values "
            f"(of {x.numel()}, shape {tuple(x.shape)})."
        )


def _check_unit_range(x: torch.Tensor, name: str, hint: str = "") -> None:
    _check_finite(x, name)
    lo, hi = (float(v) for v in torch.aminmax(x))
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
    if pred.shape[1] == 2:  # one comparison instead of argmax + one_hot (ties go to class 0, as argmax)
        obj = (pred[:, 1:] > pred[:, :1]).to(dtype)
        return torch.cat([1.0 - obj, obj], dim=1)
    index = pred.argmax(dim=1)
    return F.one_hot(index, pred.shape[1]).movedim(-1, 1).to(dtype)


def _check_features(features: torch.Tensor) -> None:
    if features.ndim not in (3, 4, 5):
        raise ValueError(
            f"features must be (B, C, *spatial) with 1, 2 or 3 spatial dims, got shape {tuple(features.shape)}."
        )
    if not features.is_floating_point():
        raise ValueError(f"features must be a floating point tensor, got dtype {features.dtype}.")
    _check_finite(features, "features")


def _initial_weights(
    mask: torch.Tensor, tissue_mask: torch.Tensor | None, batch: int, ndim: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the initial mask and the tissue mask against features of batch ``batch`` and ``ndim`` dims; return the
    class weights (B, K, *spatial') and the tissue weights (B, 1, *spatial'') at their own resolutions."""
    weights = class_weights(mask)
    if weights.ndim != ndim or weights.shape[0] != batch:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match the features: need batch size {batch} and "
            f"{ndim - 2} spatial dims (resolutions may differ)."
        )
    tissue = None
    if tissue_mask is not None:
        if tissue_mask.ndim != ndim or tissue_mask.shape[:2] != (batch, 1):
            raise ValueError(
                f"tissue_mask must be (B, 1, *spatial) with B = {batch}, got shape {tuple(tissue_mask.shape)}."
            )
        tissue = tissue_mask if tissue_mask.is_floating_point() else tissue_mask.float()
        _check_unit_range(tissue, "tissue_mask")
    return weights, tissue


def _at_resolution(
    x: torch.Tensor | None, spatial: Sequence[int], dtype: torch.dtype, cache: dict | None, key: str
) -> torch.Tensor | None:
    """``x`` area-resampled to ``spatial`` in ``dtype``, kept in ``cache`` (one entry per key and size)."""
    if x is None:
        return None
    entry = (key, tuple(spatial), dtype)
    if cache is not None and entry in cache:
        return cache[entry]
    out = _resize(x.to(dtype), spatial, "area")
    if cache is not None:
        cache[entry] = out
    return out


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
    _check_features(features)
    weights, tissue = _initial_weights(mask, tissue_mask, features.shape[0], features.ndim)
    spatial = features.shape[2:]
    weights = _at_resolution(weights, spatial, features.dtype, None, "mask")
    tissue = _at_resolution(tissue, spatial, features.dtype, None, "tissue")
    if tissue is not None:
        weights = weights * tissue
    return _prototypes(features.flatten(2), weights.flatten(2))


def _prototypes(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes (B, K, C) and weight sums (B, K) of flat features (B, C, N) and weights (B, K, N)."""
    sums = weights.sum(-1)
    weighted = torch.bmm(weights, features.transpose(1, 2))
    # clamp: an empty class gives 0 / tiny = 0 with finite gradients (a 0 / 0 would be NaN in both passes)
    return weighted / sums.clamp_min(torch.finfo(features.dtype).tiny).unsqueeze(-1), sums


def _probabilities(
    features: torch.Tensor,
    weights: torch.Tensor,
    tissue: torch.Tensor | None,
    spatial_size: Sequence[int] | None,
    per_unit: bool,
    cache: dict | None = None,
) -> torch.Tensor:
    """The ProtoSeg map of checked ``features`` with checked class and tissue weights (see :func:`protoseg`)."""
    spatial = features.shape[2:]
    w = _at_resolution(weights, spatial, features.dtype, cache, "mask")
    t = _at_resolution(tissue, spatial, features.dtype, cache, "tissue")
    if t is not None:
        w = w * t
    flat = features.flatten(2)  # (B, C, N)
    prototypes, sums = _prototypes(flat, w.flatten(2))  # (B, K, C), (B, K)
    # with the channel means r and c'_k = c_k - r (small even for features far from 0, so the expansion stays
    # accurate): -||f - c_k||^2 = 2 f.c'_k - 2 r.c'_k - ||c'_k||^2 - ||f - r||^2, and the softmax over k drops the
    # last term; no copy of the features is made
    centre = flat.mean(dim=-1).unsqueeze(1)  # (B, 1, C)
    shifted = prototypes - centre  # (B, K, C)
    offset = 2.0 * centre * shifted + shifted.square()  # (B, K, C)
    if per_unit:
        logits = 2.0 * flat.unsqueeze(2) * shifted.transpose(1, 2).unsqueeze(-1) - offset.transpose(1, 2).unsqueeze(-1)
        present = (sums > 0)[:, None, :, None]  # logits: (B, C, K, N)
        class_dim = 2
    else:
        logits = 2.0 * torch.bmm(shifted, flat) - offset.sum(-1, keepdim=True)  # (B, K, N)
        present = (sums > 0)[..., None]
        class_dim = 1
    # an absent class gets the lowest logit: probability 0, or 1/K when every class is absent
    logits = torch.where(present, logits, torch.finfo(logits.dtype).min)
    prob = torch.softmax(logits, dim=class_dim)
    prob = prob.reshape(*prob.shape[:-1], *spatial)
    if t is not None:
        background = torch.zeros_like(prob)
        background.narrow(class_dim, 0, 1).fill_(1.0)
        t_b = t.unsqueeze(1) if per_unit else t
        prob = t_b * prob + (1.0 - t_b) * background
    if spatial_size is not None:
        if len(spatial_size) != len(spatial):
            raise ValueError(f"spatial_size {tuple(spatial_size)} must have {len(spatial)} sizes, as the features.")
        if per_unit:
            b, c, k = prob.shape[:3]
            prob = _resize(prob.reshape(b * c, k, *spatial), spatial_size, "linear").reshape(b, c, k, *spatial_size)
        else:
            prob = _resize(prob, spatial_size, "linear")
    return prob


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
    stays a probability map) to, for example, the ground truth's resolution. (Computed as
    ``softmax_k(2 f.c_k - ||c_k||^2)`` on features centred per sample and channel: the same map, without
    materialising the (B, K, C, *spatial) differences.)

    Args:
        features: (B, C, *spatial) feature map, 1 to 3 spatial dims, finite values.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1] at any resolution (resampled by area averaging).
        tissue_mask: optional (B, 1, *spatial'') weights in [0, 1] at any resolution.
        spatial_size: the output's spatial size; the feature's by default.
        per_unit: segment each channel on its own.

    Returns:
        (B, K, *size) probabilities summing to 1 over the K classes, or (B, C, K, *size) with ``per_unit``.
    """
    _check_features(features)
    weights, tissue = _initial_weights(mask, tissue_mask, features.shape[0], features.ndim)
    return _probabilities(features, weights, tissue, spatial_size, per_unit)


def protoseg_maps(
    features: Sequence[torch.Tensor],
    mask: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    spatial_size: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """
    :func:`protoseg` of several feature maps of one batch (the layers of a network) with one initial mask, checked
    once and resampled once per resolution: the probability maps (B, K, *size), one per feature map.

    Args:
        features: L feature maps (B, C_l, *spatial_l) of any resolutions.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1].
        tissue_mask: optional (B, 1, *spatial'') tissue weights.
        spatial_size: the maps' common output size; each feature's own size by default.
    """
    if len(features) == 0:
        raise ValueError("protoseg_maps needs at least one feature map.")
    weights, tissue = _initial_weights(mask, tissue_mask, features[0].shape[0], features[0].ndim)
    cache: dict = {}
    maps = []
    for f in features:
        _check_features(f)
        maps.append(_probabilities(f, weights, tissue, spatial_size, per_unit=False, cache=cache))
    return maps


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
            raise ValueError(
                f"y holds class indices in [{lo}, {hi}], outside [0, {num_classes - 1}] of {num_classes} classes."
            )
        return index.long()
    if y.shape[1] != num_classes:
        raise ValueError(f"y has {y.shape[1]} channels; expected 1 (class indices) or {num_classes} (one-hot).")
    return y.argmax(dim=1)


def _class_maps(prob: torch.Tensor, class_dim: int, classes: Sequence[int]) -> list[torch.Tensor]:
    """Boolean maps of the argmax of ``prob`` over ``class_dim`` being each of ``classes`` (ties go to the lower
    class, as ``argmax``); two classes take one comparison instead of an ``argmax``."""
    if prob.shape[class_dim] == 2:
        obj = prob.select(class_dim, 1) > prob.select(class_dim, 0)
        return [obj if k == 1 else ~obj for k in classes]
    index = prob.argmax(dim=class_dim)
    return [index == k for k in classes]


def _dice(pred: list[torch.Tensor], label: list[torch.Tensor], dims: tuple) -> torch.Tensor:
    """Dice of boolean maps per class over ``dims`` (``compute_dice(ignore_empty=False)`` conventions): (..., K')."""

    def count(x: torch.Tensor) -> torch.Tensor:  # a bool sum would first copy x to int64
        return x.view(torch.uint8).sum(dims, dtype=torch.int64)

    scores = []
    for p, g in zip(pred, label):
        inter = count(p & g)
        total = count(p) + count(g)
        scores.append(torch.where(total > 0, 2.0 * inter / total.clamp_min(1), 1.0))
    return torch.stack(scores, dim=-1)


def _check_label(y: torch.Tensor, batch: int, spatial: Sequence[int], num_classes: int) -> torch.Tensor:
    if y.ndim != len(spatial) + 2 or y.shape[0] != batch:
        raise ValueError(
            f"y of shape {tuple(y.shape)} does not match: need (B, 1 or {num_classes}, *spatial) with B = {batch} "
            f"and {len(spatial)} spatial dims."
        )
    return _label_indices(y, num_classes)


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
    label = _check_label(y, prob.shape[0], spatial, num_classes)
    if tuple(label.shape[1:]) != tuple(spatial):
        raise ValueError(f"y of shape {tuple(y.shape)} does not match the map of shape {tuple(prob.shape)}.")
    classes = range(0 if include_background else 1, num_classes)
    if class_dim == 2:
        label = label.unsqueeze(1)
    dims = tuple(range(prob.ndim - 1 - len(spatial), prob.ndim - 1))
    scores = _dice(_class_maps(prob, class_dim, classes), [label == k for k in classes], dims)
    return scores.to(prob.dtype if prob.is_floating_point() else torch.float32)


def compute_layer_sa_scores(
    features: Sequence[torch.Tensor],
    mask: torch.Tensor,
    y: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    include_background: bool = False,
) -> torch.Tensor:
    """
    The SA score of several feature maps of one batch (the layers of a network) with one initial mask and one
    reference: :func:`compute_sa_score` of each, with the masks checked once and resampled once per resolution.

    Args:
        features: L feature maps (B, C_l, *spatial_l) of any resolutions.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1].
        y: (B, 1 or K, *spatial'') the reference segmentation.
        tissue_mask: optional (B, 1, *spatial) tissue weights.
        include_background: score class 0 too.

    Returns:
        (B, L, K - 1) (K with ``include_background``).
    """
    if len(features) == 0:
        raise ValueError("compute_layer_sa_scores needs at least one feature map.")
    batch, ndim = features[0].shape[0], features[0].ndim
    weights, tissue = _initial_weights(mask, tissue_mask, batch, ndim)
    num_classes = weights.shape[1]
    size = y.shape[2:]
    label = _check_label(y, batch, size, num_classes)
    classes = range(0 if include_background else 1, num_classes)
    cache: dict = {}
    sams = []  # per layer: a boolean map (B, *size) per scored class
    for f in features:
        _check_features(f)
        if f.ndim != ndim or f.shape[0] != batch:
            raise ValueError(
                f"feature maps must share batch size and dims: {tuple(f.shape)} against {tuple(features[0].shape)}."
            )
        sams.append(_class_maps(_probabilities(f, weights, tissue, size, per_unit=False, cache=cache), 1, classes))
    # the Dice of all layers at once
    pred = [torch.stack([sam[c] for sam in sams]) for c in range(len(classes))]  # (L, B, *size) per class
    label_maps = [(label == k).unsqueeze(0) for k in classes]
    dims = tuple(range(2, label.ndim + 1))
    return _dice(pred, label_maps, dims).transpose(0, 1).to(features[0].dtype)


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
    weights, tissue = _initial_weights(reference, tissue_mask, reference.shape[0], reference.ndim)
    classes = range(1, reference.shape[1])
    label_maps = [reference[:, k : k + 1] > 0.5 for k in classes]  # (B, 1, *spatial) each
    dims = tuple(range(2, reference.ndim))
    cache: dict = {}
    scores = []
    for f in features:
        _check_features(f)
        prob = _probabilities(f, weights, tissue, reference.shape[2:], per_unit=True, cache=cache)  # (B, C, K, *)
        scores.append(_dice(_class_maps(prob, 2, classes), label_maps, dims).mean(dim=-1))  # (B, C)
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
