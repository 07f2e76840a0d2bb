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
SegPGD: Gu et al., "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and Boosting Segmentation
Robustness", ECCV 2022, https://arxiv.org/abs/2207.12391; PGD on a per-pixel cross-entropy that moves its weight from
the pixels still classified correctly to the pixels already fooled as the steps go on.
"""

from __future__ import annotations

import functools

import torch

from monai_ext.attacks.losses import pixel_losses
from monai_ext.attacks.objective import predicted_classes
from monai_ext.attacks.pgd import PixelWeightedPGD

__all__ = ["SegPGD", "segpgd_loss", "segpgd_weights"]


def segpgd_weights(
    logits: torch.Tensor, labels: torch.Tensor, step: int, num_steps: int, targeted: bool = False
) -> torch.Tensor:
    """
    The per-pixel weights of SegPGD at step ``step`` (0-based) of ``num_steps``: ``lambda = step / (2 num_steps)``,
    the weight ``1 - lambda`` on the pixels the attack has still to win and ``lambda`` on the others.

    Untargeted, the pixels still to win are those classified correctly (``argmax == labels``); targeted (``labels``
    the target), those not yet classified as the target (the authors' ``segpgd_scale`` of the ``cospgd`` package).
    ``lambda`` runs over ``0, 1 / (2T), ..., (T - 1) / (2T)``: the paper's ``(t - 1) / (2T)`` for its steps
    ``t = 1..T``, as the authors' code loops ``for t in range(T)``.

    Args:
        logits: ``(B, C, *spatial)``; ``C == 1`` is a single-logit binary network (class 1 where the logit is > 0).
        labels: class indices ``(B, 1, *spatial)``: the true labels, or the target labels of a targeted attack.
        step: the step, ``0 <= step < num_steps``.
        num_steps: the number of steps ``T``.
        targeted: whether ``labels`` are the target.

    Returns:
        the weights ``(B, *spatial)``, detached.
    """
    lam = step / (2 * num_steps)
    won = (predicted_classes(logits) == labels[:, 0].long()) == targeted
    return torch.tensor([1.0 - lam, lam], dtype=logits.dtype, device=logits.device)[won.long()]  # a lookup: no where


def segpgd_loss(
    logits: torch.Tensor, labels: torch.Tensor, step: int, num_steps: int, targeted: bool = False
) -> torch.Tensor:
    """
    The loss of SegPGD at step ``step``: the per-pixel cross-entropy weighted by :py:func:`segpgd_weights`,
    averaged over the pixels (each term over all pixels, as in the paper) and the batch; a scalar.
    """
    weights = segpgd_weights(logits, labels, step, num_steps, targeted)
    return (weights * pixel_losses(logits, labels, "ce")).mean()


class SegPGD(PixelWeightedPGD):
    """
    SegPGD: PGD (:py:class:`~monai_ext.attacks.PGD`: the same steps, ball, projection and random start) on the
    loss of :py:func:`segpgd_loss` at each step ``t`` of ``T``,

    ``L_t = (1 - lambda_t) / N * sum_{correct} CE + lambda_t / N * sum_{wrong} CE``, ``lambda_t = t / (2T)``
    (``t = 0..T-1``), ``N`` the number of pixels (voxels) of an image,

    with the correct and wrong pixels split by the prediction at the current iterate. Early steps push the pixels
    still classified correctly; later ones also keep the fooled pixels fooled. Targeted (descend to the target),
    the weight ``1 - lambda_t`` falls on the pixels not yet at the target. 2D and 3D, ``C >= 2`` classes or one
    logit (taken as the two-class logits ``(0, z)``).

    Args: those of :py:class:`~monai_ext.attacks.pgd.PixelWeightedPGD` (:py:class:`~monai_ext.attacks.PGD`'s but
        ``loss``).

    Example::

        attack = SegPGD(eps=8, alpha=2, num_steps=20)
        adv = attack(network, images, labels)  # images (B, C, H, W[, D]) in [0, 1], labels (B, 1, H, W[, D])
    """

    def step_loss(self, step: int) -> functools.partial:
        return functools.partial(segpgd_loss, step=step, num_steps=self.num_steps, targeted=self.target is not None)

    def trajectory_key(self) -> tuple | None:
        key = super().trajectory_key()
        return None if key is None else (*key, self.num_steps)  # lambda_t depends on T
