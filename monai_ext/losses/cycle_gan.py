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
The adversarial losses of Cycle-GAN (Zhu et al. 2017, section 4 "Training details"): least squares (LSGAN, Mao et
al. 2017) on raw discriminator scores, real pushed to 1 and generated to 0,

.. math::

    L_D = \\tfrac{1}{2}\\big(\\mathbb{E}[(D(\\text{real}) - 1)^2] + \\mathbb{E}[D(\\text{fake})^2]\\big),
    \\qquad L_G = \\mathbb{E}[(D(\\text{fake}) - 1)^2],

with the discriminator's objective halved "to slow down the rate at which D learns relative to G". Both are MONAI's
``PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)`` (a mean squared error to 1 or 0),
behind the ``(real, fake)`` / ``(fake)`` signatures of :py:mod:`monai_ext.losses.gan`, so that either pair plugs into
the project's adversarial trainers.
"""

from __future__ import annotations

import torch
from monai.losses import PatchAdversarialLoss
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from monai_ext.utils.checks import check_choice

__all__ = ["LeastSquaresDiscriminatorLoss", "LeastSquaresGeneratorLoss"]


def _check_reduction(reduction: LossReduction | str) -> str:
    return check_choice("reduction", str(reduction.value if isinstance(reduction, LossReduction) else reduction),
                        ("mean", "sum"))  # fmt: skip


def _least_squares(reduction: str) -> PatchAdversarialLoss:
    return PatchAdversarialLoss(reduction=reduction, criterion="least_squares", no_activation_leastsq=True)


class LeastSquaresDiscriminatorLoss(_Loss):
    """
    Discriminator least-squares loss ``0.5 * (mean((real - 1)^2) + mean(fake^2))``.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the elements of each term.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=_check_reduction(reduction))
        self.criterion = _least_squares(self.reduction)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """
        Args:
            real: discriminator scores of real samples, any shape (a PatchGAN's ``(B, 1, *patches)``).
            fake: discriminator scores of generated samples, any shape.

        Returns:
            the loss, a scalar.
        """
        return 0.5 * (
            self.criterion(real, target_is_real=True, for_discriminator=True)
            + self.criterion(fake, target_is_real=False, for_discriminator=True)
        )


class LeastSquaresGeneratorLoss(_Loss):
    """
    Generator least-squares loss ``mean((fake - 1)^2)``: the generator pulls the scores of its samples to "real".

    Args:
        reduction: ``"mean"`` (default) or ``"sum"``.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=_check_reduction(reduction))
        self.criterion = _least_squares(self.reduction)

    def forward(self, fake: torch.Tensor) -> torch.Tensor:
        """
        Args:
            fake: discriminator scores of generated samples, any shape.

        Returns:
            the loss, a scalar.
        """
        return self.criterion(fake, target_is_real=True, for_discriminator=False)
