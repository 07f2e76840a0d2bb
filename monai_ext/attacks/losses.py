# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
The losses an attack climbs (untargeted) or descends (targeted), in one name-to-loss table, :py:data:`LOSSES`, as SEA
keeps its own (Croce, Singh and Hein, ECCV 2024, https://arxiv.org/abs/2306.12941): each entry maps logits
``(B, C, *spatial)`` and class indices ``(B, 1, *spatial)`` to the loss of each image, ``(B,)``.

- ``"ce"``: cross-entropy (binary cross-entropy for a single-logit network);
- ``"jsd"``: the Jensen-Shannon divergence between the softmax and the one-hot label (SEA);
- ``"masked_ce"``: the cross-entropy of the pixels still classified correctly (SEA);
- ``"balanced_masked_ce"``: the masked cross-entropy with class weights (SEA's first loss);
- ``"dice"``: MONAI's ``DiceLoss``.

All but Dice are means of per-pixel terms, :py:data:`PIXEL_LOSSES` and :py:func:`pixel_losses`. :py:func:`attack_loss`
is the door the attacks use (the batch mean, or per image); :py:class:`BalancedMaskedCE` is the balanced loss with
class weights given by the user, as an attack's ``loss`` callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from monai_ext.utils.checks import check_choice, check_label_shape

__all__ = [
    "LOSSES",
    "PIXEL_LOSSES",
    "UNTARGETED_LOSSES",
    "BalancedMaskedCE",
    "LossLike",
    "attack_loss",
    "balanced_masked_cross_entropy_pixels",
    "class_frequency_weights",
    "cross_entropy_pixels",
    "dice_per_image",
    "is_untargeted_loss",
    "jensen_shannon_pixels",
    "masked_cross_entropy_pixels",
    "pixel_losses",
    "predicted_classes",
    "two_class_logits",
]

REDUCTIONS = ("mean", "none")

LossLike = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """
    The logits of a single-logit binary network ``(B, 1, *spatial)`` as two-class logits ``(B, 2, *spatial)``,
    ``(0, z)``: their softmax is ``(1 - sigmoid(z), sigmoid(z))``, their cross-entropy the binary cross-entropy of
    ``z`` and their argmax ``z > 0``. Logits with ``C >= 2`` channels are returned as they are.
    """
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


def predicted_classes(logits: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """
    The class the network predicts at each pixel: ``argmax`` over the classes (the first of equal maxima), of the
    two-class logits ``(0, z)`` for a single-logit network (class 1 where ``z > 0``).

    Equal to ``argmax`` of :py:func:`two_class_logits` for finite logits, at a fraction of
    its cost on the CPU, where ``argmax`` over the strided class axis costs as much as a convolution layer (10 ms for
    ``(4, 2, 128, 128)`` logits on one thread): one comparison for one or two classes (0.05 ms), else
    ``torch.max(dim=1).indices`` (the same index as ``argmax``, ties and NaN included; 0.6 ms).

    Args:
        logits: ``(B, C, *spatial)``.
        keepdim: keep the class axis: ``(B, 1, *spatial)`` instead of ``(B, *spatial)``.

    Returns:
        long class indices.
    """
    if logits.shape[1] == 1:
        classes = (logits > 0).long()
    elif logits.shape[1] == 2:
        classes = (logits[:, 1:] > logits[:, :1]).long()  # a tie goes to class 0, as in argmax
    else:
        classes = logits.max(dim=1, keepdim=True).indices
    return classes if keepdim else classes[:, 0]


def cross_entropy_pixels(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The cross-entropy ``-log p_y`` of each pixel, ``(B, *spatial)``, of logits ``(B, C, *spatial)``, ``C >= 2``,
    against long class indices ``target`` ``(B, *spatial)``."""
    return F.cross_entropy(logits, target, reduction="none")


def jensen_shannon_pixels(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """
    The Jensen-Shannon divergence of each pixel between the softmax ``p`` and the one-hot label ``e_y``,
    ``(KL(p || m) + KL(e_y || m)) / 2`` with ``m = (p + e_y) / 2``, in nats (at most ``log 2``), ``(B, *spatial)``:
    the bounded loss of SEA, which no single pixel can dominate. Arguments as :py:func:`cross_entropy_pixels`.
    """
    p = F.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(p.dtype)
    log_m = torch.log((p + onehot) / 2)
    return ((F.kl_div(log_m, p, reduction="none") + F.kl_div(log_m, onehot, reduction="none")) / 2).sum(1)


def masked_cross_entropy_pixels(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """
    The cross-entropy of the pixels the network still classifies correctly (``argmax p == y``, a mask that is not
    differentiated), zero elsewhere, ``(B, *spatial)``: the masked cross-entropy of SEA, which spends the budget on the
    pixels not yet fooled (its mean over all the pixels of an image is the loss). Arguments as
    :py:func:`cross_entropy_pixels`.
    """
    ce = cross_entropy_pixels(logits, target)
    return ce * (predicted_classes(logits) == target).to(ce.dtype)


def class_frequency_weights(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """
    Class weights of each image from its label: ``w_c = N / (K n_c)`` for the ``K`` classes present, ``n_c`` of the
    ``N`` pixels being of class ``c``, and ``0`` for the absent ones; their mean over the pixels of the image is 1.

    Args:
        target: long class indices ``(B, *spatial)``.
        num_classes: ``C``.

    Returns:
        ``(B, C)`` weights, float.
    """
    flat = target.flatten(1)
    counts = torch.zeros(flat.shape[0], num_classes, device=flat.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float)
    )
    present = counts > 0
    scale = flat.shape[1] / present.sum(1, keepdim=True)
    return torch.where(present, scale / counts.clamp_min(1), torch.zeros_like(counts))


def balanced_masked_cross_entropy_pixels(
    logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """
    The class-balanced masked cross-entropy of each pixel, ``w_y`` times the masked cross-entropy
    (:py:func:`masked_cross_entropy_pixels`), ``(B, *spatial)``: the first loss of SEA, which attacks the pixels of
    small classes as much as those of large ones, and with them the mean IoU.

    Its mean over the pixels of an image is the loss. SEA's evaluation passes one fixed weight per class for a whole
    data set (its Pascal-VOC weights sum to one, the background's the lowest); by default here the weights come from
    each image's own label, :py:func:`class_frequency_weights`, and the loss of an image is then the mean over the
    classes it holds of each class's mean masked cross-entropy (the masked cross-entropy itself when the classes cover
    equal areas). Any positive factor on an image's weights changes no step of a sign (L-inf) or normalised (L2)
    attack.

    Args:
        logits: ``(B, C, *spatial)``, ``C >= 2``.
        target: long class indices ``(B, *spatial)``.
        class_weights: ``(C,)`` weights for every image (SEA's data-set weights), or ``(B, C)``; ``None``: from each
            image's label.
    """
    if class_weights is None:
        class_weights = class_frequency_weights(target, logits.shape[1])
    masked = masked_cross_entropy_pixels(logits, target)
    class_weights = class_weights.to(device=masked.device, dtype=masked.dtype)
    if class_weights.ndim == 1:
        return class_weights[target] * masked
    return torch.gather(class_weights, 1, target.flatten(1)).view_as(target) * masked


#: the losses that are a mean of per-pixel terms, name to ``(logits (B, C, *spatial), long target (B, *spatial)) ->
#: (B, *spatial)``; ``C >= 2`` (see :py:func:`pixel_losses` for single-logit networks)
PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": cross_entropy_pixels,
    "jsd": jensen_shannon_pixels,
    "masked_ce": masked_cross_entropy_pixels,
    "balanced_masked_ce": balanced_masked_cross_entropy_pixels,
}
#: losses that only an untargeted attack can climb: they mask the pixels still classified correctly
UNTARGETED_LOSSES = ("masked_ce", "balanced_masked_ce")


def is_untargeted_loss(loss: LossLike | None) -> bool:
    """Whether ``loss`` masks the pixels still classified correctly (``"masked_ce"``, ``"balanced_masked_ce"`` or a
    :py:class:`BalancedMaskedCE`): a loss only an untargeted attack can climb."""
    return isinstance(loss, BalancedMaskedCE) or (isinstance(loss, str) and loss in UNTARGETED_LOSSES)


def pixel_losses(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """
    Per-pixel terms ``(B, *spatial)`` of the logits ``(B, C, *spatial)`` against class indices ``labels``
    ``(B, 1, *spatial)`` of a loss of :py:data:`PIXEL_LOSSES`: ``"ce"``, ``"jsd"``, ``"masked_ce"`` or
    ``"balanced_masked_ce"`` (weights from each image's label). A single-logit network is taken as two-class logits,
    :py:func:`two_class_logits`.
    """
    return PIXEL_LOSSES[check_choice("loss", loss, PIXEL_LOSSES)](two_class_logits(logits), labels[:, 0].long())


def dice_per_image(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """
    MONAI's ``DiceLoss`` of each image, ``(B,)``: softmax and ``to_onehot_y`` (sigmoid when ``C == 1``), the mean over
    the classes of the image. Arguments as :py:func:`pixel_losses`.
    """
    return _dice(logits, "none")(logits, labels.to(logits.dtype)).flatten(1).mean(1)


def _dice(logits: torch.Tensor, reduction: str) -> DiceLoss:
    """MONAI's ``DiceLoss`` for the logits: sigmoid for a single logit, else softmax and one-hot labels."""
    if logits.shape[1] == 1:
        return DiceLoss(sigmoid=True, reduction=reduction)
    return DiceLoss(softmax=True, to_onehot_y=True, reduction=reduction)


def _pixel_mean(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def per_image(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pixel_losses(logits, labels, name).flatten(1).mean(1)

    per_image.__name__ = per_image.__qualname__ = f"{name}_per_image"
    return per_image


#: the attack losses, name to ``(logits (B, C, *spatial), labels (B, 1, *spatial)) -> (B,)``, the loss of each image
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    **{name: _pixel_mean(name) for name in PIXEL_LOSSES},
    "dice": dice_per_image,
}


class BalancedMaskedCE:
    """
    The class-balanced masked cross-entropy (:py:func:`balanced_masked_cross_entropy_pixels`) with class weights
    given by the user, such as SEA's inverse class frequencies over a data set, as an attack's ``loss``: the mean over
    the pixels and the batch.

    Args:
        class_weights: ``C`` non-negative weights, one per class (two for a single-logit network); ``None``: from each
            image's label, as ``loss="balanced_masked_ce"``.

    Example::

        attack = APGD(eps=8, loss=BalancedMaskedCE([0.2, 0.8]))
    """

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if not class_weights or not all(math.isfinite(w) and w >= 0 for w in class_weights):
                raise ValueError(f"class_weights must be non-negative numbers, one per class, got {class_weights}.")
        self.class_weights = class_weights

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = two_class_logits(logits)
        weights = None if self.class_weights is None else torch.tensor(self.class_weights)
        if weights is not None and len(weights) != logits.shape[1]:
            raise ValueError(f"{len(weights)} class weights for a network of {logits.shape[1]} classes.")
        return balanced_masked_cross_entropy_pixels(logits, labels[:, 0].long(), weights).mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(class_weights={self.class_weights})"


def attack_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss: LossLike = "ce", reduction: str = "mean"
) -> torch.Tensor:
    """
    The loss an attack climbs (untargeted) or descends (targeted), averaged over the pixels and the batch.

    Args:
        logits: network output ``(B, C, *spatial)``. ``C == 1`` is a binary network with a single logit.
        labels: class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``, any dtype.
        loss: a name of :py:data:`LOSSES`: ``"ce"``: cross-entropy on the logits (binary cross-entropy with logits when
            ``C == 1``), the per-pixel loss of the FGSM and I-FGSM papers; ``"dice"``: MONAI's ``DiceLoss`` with
            softmax and ``to_onehot_y`` (sigmoid when ``C == 1``); ``"jsd"``, ``"masked_ce"`` and
            ``"balanced_masked_ce"``: the losses of SEA, see :py:data:`PIXEL_LOSSES` (the masked ones are untargeted
            losses). Or a callable ``(logits, labels) -> scalar`` that receives the labels as ``(B, 1, *spatial)`` in
            the logits' dtype, like a MONAI loss (:py:class:`BalancedMaskedCE` is one).
        reduction: ``"mean"``: a scalar, the mean over the batch; ``"none"``: the loss of each sample, ``(B,)`` (a
            callable is called on one sample at a time).

    Returns:
        a scalar tensor, or ``(B,)`` with ``reduction="none"``.
    """
    labels = check_label_shape(labels, logits)
    per_image = check_choice("reduction", reduction, REDUCTIONS) == "none"
    if callable(loss):
        if per_image:
            return torch.stack([attack_loss(logits[i : i + 1], labels[i : i + 1], loss) for i in range(len(logits))])
        return loss(logits, labels.to(logits.dtype))
    loss = check_choice("loss", loss, LOSSES)
    if per_image:
        return LOSSES[loss](logits, labels)
    # the batch means of cross-entropy and Dice as PyTorch and MONAI take them, so that attacks match reference
    # implementations bit for bit
    if loss == "ce" and logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if loss == "ce":
        return F.cross_entropy(logits, labels[:, 0].long())
    if loss == "dice":
        return _dice(logits, "mean")(logits, labels.to(logits.dtype))
    return pixel_losses(logits, labels, loss).mean()
