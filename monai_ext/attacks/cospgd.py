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
CosPGD: Agnihotri, Jung and Keuper, "CosPGD: an efficient white-box adversarial attack for pixel-wise prediction
tasks", ICML 2024, https://arxiv.org/abs/2302.02213; PGD on the per-pixel cross-entropy weighted by the cosine
similarity between the network's softmax and the one-hot label.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from monai_ext.attacks.losses import pixel_losses, two_class_logits
from monai_ext.attacks.pgd import PixelWeightedPGD

__all__ = ["CosPGD", "cospgd_loss", "cospgd_weights"]


def cospgd_weights(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """
    The per-pixel weights of CosPGD: the cosine similarity ``cos(softmax(logits), onehot(labels))`` over the class
    axis (``p_y / ||p||_2``), or ``1 - cos`` for a targeted attack (``labels`` the target: the pixels far from the
    target weigh most), as the authors' ``cospgd_scale`` of the ``cospgd`` package.

    Args:
        logits: ``(B, C, *spatial)``; ``C == 1`` is a single-logit binary network, its softmax ``(1 - s, s)`` with
            ``s = sigmoid(z)``.
        labels: class indices ``(B, 1, *spatial)``: the true labels, or the target labels of a targeted attack.
        targeted: whether ``labels`` are the target.

    Returns:
        the weights ``(B, *spatial)`` in ``[0, 1]``, detached.
    """
    probs = F.softmax(two_class_logits(logits), dim=1).detach()
    # F.cosine_similarity(probs, onehot, dim=1) is p_y / ||p||_2 (its terms off the label are exact zeros); this skips
    # the one-hot and the two norms over the strided class axis (each as costly on the CPU as a convolution layer).
    # The norm is rounded as torch.linalg.vector_norm rounds it on the CPU (the squares summed in float32 class by
    # class, the root taken in float64), so that the weights, and the signs of the steps, are the same bit for bit.
    squares = probs.square()
    total = squares[:, 0]
    for c in range(1, squares.shape[1]):
        total = total + squares[:, c]
    cos = probs.gather(1, labels.long())[:, 0] / total.double().sqrt().to(probs.dtype).clamp_min(1e-8)
    return 1 - cos if targeted else cos


def cospgd_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """The loss of CosPGD: the per-pixel cross-entropy weighted by :py:func:`cospgd_weights`, averaged over the
    pixels and the batch; a scalar."""
    return (cospgd_weights(logits, labels, targeted) * pixel_losses(logits, labels, "ce")).mean()


class CosPGD(PixelWeightedPGD):
    """
    CosPGD: PGD (:py:class:`~monai_ext.attacks.PGD`: the same steps, ball, projection and random start) on the loss
    of :py:func:`cospgd_loss`,

    ``L = 1 / N * sum_i cos(softmax(f(x)_i), onehot(y_i)) * CE_i``,

    the weights (not differentiated) taken at the current iterate: a pixel whose prediction is already far from its
    label weighs little, so the budget goes to the pixels still close to their label. Targeted (descend to the
    target ``t``), the weight is ``1 - cos(softmax, onehot(t))``. 2D and 3D, ``C >= 2`` classes or one logit.

    Args: those of :py:class:`~monai_ext.attacks.pgd.PixelWeightedPGD` (:py:class:`~monai_ext.attacks.PGD`'s but
        ``loss``).

    Example::

        attack = CosPGD(eps=8, alpha=2, num_steps=40)
        adv = attack(network, images, labels)  # images (B, C, H, W[, D]) in [0, 1], labels (B, 1, H, W[, D])
    """

    def step_loss(self, step: int) -> functools.partial:
        return functools.partial(cospgd_loss, targeted=self.target is not None)
