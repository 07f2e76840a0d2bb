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
Iterative FGSM (the basic iterative method): Kurakin et al., "Adversarial examples in the physical world", ICLR
workshop 2017, https://arxiv.org/abs/1607.02533; targeted at the inverse of the ground truth as in eq. 6 of He et al.,
"Non-Local Context Encoder: Robust Biomedical Image Segmentation against Adversarial Attacks", AAAI 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.inferers import Inferer

from monai_ext.attacks.ball import LEVELS, project
from monai_ext.attacks.base import Attack
from monai_ext.attacks.losses import LossLike
from monai_ext.attacks.objective import AttackObjective, TargetLike
from monai_ext.utils.checks import check_non_negative, check_non_negative_int

__all__ = ["IterativeFGSM", "kurakin_num_steps"]


def kurakin_num_steps(eps_levels: float) -> int:
    """
    Number of iterations of the I-FGSM schedule of Kurakin et al., used by the NLCEN paper:
    ``min(eps + 4, ceil(1.25 * eps))`` with ``eps`` in intensity levels (and a step of one level).

    ``eps=0.5`` gives ``min(4.5, 1) = 1``, ``eps=16`` gives ``20``, ``eps=32`` gives ``36``. A fractional
    ``eps + 4`` (only when ``eps`` itself is fractional and large) is rounded up. ``eps=0`` gives 0.

    Args:
        eps_levels: the budget in intensity levels of an 8-bit scale, ``>= 0``.

    Returns:
        the number of iterations, an int.
    """
    eps = round(check_non_negative("eps_levels", eps_levels), 9)  # 8 / 255 * 255 is 8.000000000000002
    return math.ceil(min(eps + 4.0, math.ceil(1.25 * eps)))


class IterativeFGSM(Attack):
    """
    Iterative FGSM: ``num_steps`` FGSM steps of size ``alpha``, each followed by a clip to the L-inf ball of radius
    ``eps`` around the clean images and to the data range (eq. 6 of the NLCEN paper):

    ``x_0 = x``, ``x_{t+1} = clip_{x, eps}(x_t - alpha * sign(grad_x L(f(x_t), t)))`` for a targeted attack (descend
    to the target ``t``), ``+ alpha * sign(grad_x L(f(x_t), y))`` for an untargeted one (ascend from the truth ``y``).

    With ``alpha`` one level and ``num_steps=None`` this is the schedule of Kurakin et al. and of the NLCEN
    robustness study, :py:func:`kurakin_num_steps`. The NLCEN study attacks the inverse of the ground truth:
    ``IterativeFGSM(eps, target="inverse")``.

    Args:
        eps: L-inf budget in ``unit``, ``>= 0``.
        alpha: step size in ``unit``; ``None`` (default) is one intensity level, ``1 / 255`` of the data range
            (the paper's ``alpha = 1``).
        num_steps: number of iterations, ``>= 0``; ``None`` (default) takes :py:func:`kurakin_num_steps` of
            ``eps`` in levels (``eps * 255`` when ``unit="fraction"``).
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: ``"ce"`` (default, the per-pixel cross-entropy of the paper), ``"dice"`` or a callable.
        target: ``None`` (untargeted, default, Kurakin's basic iterative method), ``"inverse"`` (the NLCEN paper's
            target), a class index or a callable; see :py:func:`monai_ext.attacks.objective.resolve_target`.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.
    """

    def __init__(
        self,
        eps: float,
        alpha: float | None = None,
        num_steps: int | None = None,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "ce",
        target: TargetLike = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps=eps, unit=unit, data_range=data_range, loss=loss, target=target, inferer=inferer)
        if alpha is None:
            alpha = 1.0 if self.unit == "levels" else 1.0 / LEVELS
        self.alpha = check_non_negative("alpha", alpha)
        if num_steps is None:
            num_steps = kurakin_num_steps(self.eps if self.unit == "levels" else self.eps * LEVELS)
        self.num_steps = check_non_negative_int("num_steps", num_steps)

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        eps, alpha = self.eps_data, self.to_data_units(self.alpha)
        adv = images
        for step in range(self.num_steps):
            adv = project(adv + alpha * self.direction(objective, adv, step), images, eps, "linf", self.data_range)
        return adv

    def direction(self, objective: AttackObjective, adv: torch.Tensor, step: int) -> torch.Tensor:
        """The unit step at ``adv`` (of any step ``step``): the sign of the ascent direction."""
        return objective.gradient(adv).sign()

    def trajectory_key(self) -> tuple:
        """
        What the iterates depend on besides ``eps``: runs with the same key share their iterates while
        ``step * alpha <= eps`` (see :py:func:`monai_ext.attacks.shared_sweep`).
        """
        return type(self), self.to_data_units(self.alpha), self.data_range, self.loss, self.target, self.inferer

    def settings(self) -> dict:
        return {**super().settings(), "alpha": self.alpha, "num_steps": self.num_steps}
