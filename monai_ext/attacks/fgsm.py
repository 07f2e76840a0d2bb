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
Fast gradient sign method (FGSM): Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015,
https://arxiv.org/abs/1412.6572; eq. 1 of the robust training paper, ``eta = eps * sign(grad_x J(theta, x, y))``.
"""

from __future__ import annotations

import torch

from monai_ext.attacks.base import Attack
from monai_ext.attacks.objective import AttackObjective

__all__ = ["FGSM"]


class FGSM(Attack):
    """
    Fast gradient sign method, one step of size ``eps`` along the sign of the input gradient:

    - untargeted (``target=None``): ``x_adv = clip(x + eps * sign(grad_x L(f(x), y)))``, away from the true labels;
    - targeted: ``x_adv = clip(x - eps * sign(grad_x L(f(x), t)))``, towards the target labels ``t``;

    ``clip`` clips to ``data_range``. The step has L-inf norm ``eps`` before clipping, so the adversarial images lie in
    the L-inf ball of radius ``eps`` around the clean images. A pixel whose gradient is zero is left as it is.

    Args:
        eps: step size and L-inf budget in ``unit``, ``>= 0``; ``eps=8`` with ``unit="levels"`` is ``8 / 255`` of the
            data range.
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: ``"ce"`` (default), ``"dice"`` or a callable; see :py:func:`monai_ext.attacks.losses.attack_loss`.
        target: ``None`` (untargeted, default), ``"inverse"``, a class index or a callable
            ``(images, labels) -> target labels``; see :py:func:`monai_ext.attacks.objective.resolve_target`.

    Example::

        attack = FGSM(eps=8)
        adv = attack(network, images, labels)  # images (B, C, H, W) in [0, 1], labels (B, 1, H, W)
    """

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        adv = images + self.eps_data * objective.gradient(images).sign()
        return adv.clamp(*self.data_range)
