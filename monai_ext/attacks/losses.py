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
The losses an attack climbs (untargeted) or descends (targeted): :py:func:`attack_loss` (cross-entropy, Dice, or
binary cross-entropy for a single-logit network; the Jensen-Shannon divergence and the masked cross-entropy of SEA),
over the batch or per sample; :py:func:`pixel_losses` and :py:func:`two_class_logits` give its per-pixel terms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from monai_ext.utils.checks import check_choice, check_label_shape

__all__ = ["LOSSES", "LossLike", "attack_loss", "pixel_losses", "two_class_logits"]

LOSSES = ("ce", "dice", "jsd", "masked_ce")
#: losses that are a mean of per-pixel terms (:py:func:`pixel_losses`)
PIXEL_LOSSES = ("ce", "jsd", "masked_ce")
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


def pixel_losses(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """
    Per-pixel losses of the logits ``(B, C, *spatial)`` against class indices ``labels`` ``(B, 1, *spatial)``, as
    ``(B, *spatial)``; a single-logit network is taken as two-class logits, :py:func:`two_class_logits`.

    - ``"ce"``: the cross-entropy ``-log p_y``;
    - ``"jsd"``: the Jensen-Shannon divergence between the softmax ``p`` and the one-hot label ``e_y``,
      ``(KL(p || m) + KL(e_y || m)) / 2`` with ``m = (p + e_y) / 2``, in nats (at most ``log 2``): the bounded loss of
      SEA (Croce, Singh and Hein, ECCV 2024, https://arxiv.org/abs/2306.12941), which no single pixel can dominate;
    - ``"masked_ce"``: the cross-entropy of the pixels the network still classifies correctly (``argmax p == y``,
      a mask that is not differentiated), zero elsewhere: the masked cross-entropy of SEA, which spends the budget on
      the pixels not yet fooled. Averaged over all pixels, as in SEA.
    """
    logits = two_class_logits(logits)
    target = labels[:, 0].long()
    if loss == "jsd":
        p = F.softmax(logits, dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(p.dtype)
        log_m = torch.log((p + onehot) / 2)
        return (F.kl_div(log_m, p, reduction="none") + F.kl_div(log_m, onehot, reduction="none")).sum(1) / 2
    ce = F.cross_entropy(logits, target, reduction="none")
    if loss == "masked_ce":
        return ce * (logits.argmax(1) == target).to(ce.dtype)
    return ce


def attack_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss: LossLike = "ce", reduction: str = "mean"
) -> torch.Tensor:
    """
    The loss an attack climbs (untargeted) or descends (targeted), averaged over the pixels and the batch.

    Args:
        logits: network output ``(B, C, *spatial)``. ``C == 1`` is a binary network with a single logit.
        labels: class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``, any dtype.
        loss: ``"ce"``: cross-entropy on the logits (binary cross-entropy with logits when ``C == 1``), the
            per-pixel loss of the FGSM and I-FGSM papers; ``"dice"``: MONAI's ``DiceLoss`` with softmax and
            ``to_onehot_y`` (sigmoid when ``C == 1``); ``"jsd"`` and ``"masked_ce"``: the Jensen-Shannon divergence
            and the masked cross-entropy of SEA, see :py:func:`pixel_losses` (``"masked_ce"`` is an untargeted loss);
            or a callable ``(logits, labels) -> scalar`` that receives the labels as ``(B, 1, *spatial)`` in the
            logits' dtype, like a MONAI loss.
        reduction: ``"mean"``: a scalar, the mean over the batch; ``"none"``: the loss of each sample, ``(B,)`` (a
            callable is called on one sample at a time).

    Returns:
        a scalar tensor, or ``(B,)`` with ``reduction="none"``.
    """
    labels = check_label_shape(labels, logits)
    if check_choice("reduction", reduction, REDUCTIONS) == "none":
        if callable(loss) or loss == "dice":
            return torch.stack([attack_loss(logits[i : i + 1], labels[i : i + 1], loss) for i in range(len(logits))])
        return pixel_losses(logits, labels, check_choice("loss", loss, LOSSES)).flatten(1).mean(1)
    num_channels = logits.shape[1]
    if callable(loss):
        return loss(logits, labels.to(logits.dtype))
    loss = check_choice("loss", loss, LOSSES)
    if loss == "ce":
        if num_channels == 1:
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels[:, 0].long())
    if loss in PIXEL_LOSSES:
        return pixel_losses(logits, labels, loss).mean()
    if num_channels == 1:
        return DiceLoss(sigmoid=True)(logits, labels.to(logits.dtype))
    return DiceLoss(softmax=True, to_onehot_y=True)(logits, labels.to(logits.dtype))
