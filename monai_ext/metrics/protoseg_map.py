"""
Prototype segmentation (ProtoSeg) of deep features: prototypes, probability map and segmentation ability map (SAM).

He S., Feng Y., Grant P.E., Ou Y. *Segmentation ability map: Interpret deep features for medical image
segmentation.* Medical Image Analysis, 2023. Section 3, eq. 5-7, Algorithm 1.

Given a feature map ``f`` (B, C, *spatial) and an initial mask (the network's output, or any mask), the
prototype of class ``k`` is the mask-weighted mean feature ``c_k = sum_i m_k(i) f_i / sum_i m_k(i)`` (eq. 6),
the probability of class ``k`` at pixel/voxel ``i`` is ``softmax_k(-||f_i - c_k||^2)`` (eq. 5), and the
segmentation ability map (SAM) is its argmax (eq. 7). The scores of the maps are in
:py:mod:`monai_ext.metrics.protoseg_score`.

The public functions check their inputs once (:func:`check_protoseg_inputs`) and hand them to one private
kernel, ``_probabilities``, which the scores module shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "binarize_prediction",
    "check_protoseg_inputs",
    "class_weights",
    "compute_prototypes",
    "protoseg",
    "protoseg_maps",
    "segmentation_ability_map",
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
    x = x.detach()
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        num_nan = int(torch.isnan(x).sum())
        raise ValueError(
            f"{name} holds {num_nan} NaN and {int((~torch.isfinite(x)).sum()) - num_nan} infinite values "
            f"(of {x.numel()}, shape {tuple(x.shape)})."
        )


def _check_unit_range(x: torch.Tensor, name: str, hint: str = "") -> None:
    _check_finite(x, name)
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
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


def check_protoseg_inputs(
    features: Sequence[torch.Tensor],
    mask: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    spatial_size: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Check the inputs of ProtoSeg once, at an entry point: feature maps of one batch, an initial mask and an
    optional tissue mask (each at any resolution, with the features' batch size and number of spatial dims).

    Args:
        features: feature maps (B, C_l, *spatial_l), 1 to 3 spatial dims, floating point, finite.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1] (see :func:`class_weights`).
        tissue_mask: optional (B, 1, *spatial'') weights in [0, 1].
        spatial_size: an output size, with as many sizes as the features have spatial dims.

    Returns:
        ``(class weights (B, K, *spatial'), tissue weights (B, 1, *spatial'') or None)``.
    """
    if len(features) == 0:
        raise ValueError("ProtoSeg needs at least one feature map.")
    batch, ndim = features[0].shape[0], features[0].ndim
    for f in features:
        if f.ndim not in (3, 4, 5):
            raise ValueError(
                f"features must be (B, C, *spatial) with 1, 2 or 3 spatial dims, got shape {tuple(f.shape)}."
            )
        if f.ndim != ndim or f.shape[0] != batch:
            raise ValueError(f"feature maps must share batch size and dims: {tuple(f.shape)} against the first's.")
        if not f.is_floating_point():
            raise ValueError(f"features must be a floating point tensor, got dtype {f.dtype}.")
        _check_finite(f, "features")
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
    if spatial_size is not None and len(spatial_size) != ndim - 2:
        raise ValueError(f"spatial_size {tuple(spatial_size)} must have {ndim - 2} sizes, as the features.")
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


def _prototypes(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes (B, K, C) and weight sums (B, K) of flat features (B, C, N) and weights (B, K, N)."""
    sums = weights.sum(-1)
    weighted = torch.bmm(weights, features.transpose(1, 2))
    # clamp: an empty class gives 0 / tiny = 0 with finite gradients (a 0 / 0 would be NaN in both passes)
    return weighted / sums.clamp_min(torch.finfo(features.dtype).tiny).unsqueeze(-1), sums


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
    weights, tissue = check_protoseg_inputs([features], mask, tissue_mask)
    spatial = features.shape[2:]
    weights = _at_resolution(weights, spatial, features.dtype, None, "mask")
    tissue = _at_resolution(tissue, spatial, features.dtype, None, "tissue")
    if tissue is not None:
        weights = weights * tissue
    return _prototypes(features.flatten(2), weights.flatten(2))


def _probabilities(
    features: torch.Tensor,
    weights: torch.Tensor,
    tissue: torch.Tensor | None,
    spatial_size: Sequence[int] | None,
    per_unit: bool,
    cache: dict | None = None,
) -> torch.Tensor:
    """The kernel: the ProtoSeg map of checked ``features`` with checked class and tissue weights (see
    :func:`protoseg`); ``cache`` keeps the weights resampled per resolution across the feature maps of a batch."""
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
        if per_unit:
            b, c, k = prob.shape[:3]
            prob = _resize(prob.reshape(b * c, k, *spatial), spatial_size, "linear").reshape(b, c, k, *spatial_size)
        else:
            prob = _resize(prob, spatial_size, "linear")
    return prob


def _argmax(prob: torch.Tensor, class_dim: int) -> torch.Tensor:
    """The argmax over ``class_dim`` (the SAM); two classes take one comparison and give a bool map (ties go to
    class 0, as ``argmax``)."""
    if prob.shape[class_dim] == 2:
        return prob.select(class_dim, 1) > prob.select(class_dim, 0)
    return prob.argmax(dim=class_dim)


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
    weights, tissue = check_protoseg_inputs([features], mask, tissue_mask, spatial_size)
    return _probabilities(features, weights, tissue, spatial_size, per_unit)


def protoseg_maps(
    features: Sequence[torch.Tensor],
    mask: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    spatial_size: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """
    :func:`protoseg` of several feature maps of one batch (the layers of a network) with one initial mask, checked
    once and resampled once per resolution: the probability maps (B, K, *size), one per feature map. The online
    ProtoSeg loss differentiates through them.

    Args:
        features: L feature maps (B, C_l, *spatial_l) of any resolutions.
        mask: (B, 1 or K, *spatial') initial mask in [0, 1].
        tissue_mask: optional (B, 1, *spatial'') tissue weights.
        spatial_size: the maps' common output size; each feature's own size by default.
    """
    weights, tissue = check_protoseg_inputs(features, mask, tissue_mask, spatial_size)
    cache: dict = {}
    return [_probabilities(f, weights, tissue, spatial_size, per_unit=False, cache=cache) for f in features]


def segmentation_ability_map(
    features: torch.Tensor,
    mask: torch.Tensor,
    tissue_mask: torch.Tensor | None = None,
    spatial_size: Sequence[int] | None = None,
    per_unit: bool = False,
) -> torch.Tensor:
    """
    The segmentation ability map (SAM, eq. 7): the argmax over the classes of the :func:`protoseg` map (resampled to
    ``spatial_size`` before the argmax). Ties go to the lower class.

    Returns:
        (B, 1, *size) class indices (int64), or (B, C, *size) with ``per_unit``.
    """
    prob = protoseg(features, mask, tissue_mask, spatial_size, per_unit)
    sam = _argmax(prob, class_dim=2 if per_unit else 1).long()
    return sam if per_unit else sam.unsqueeze(1)
