"""
Hinge adversarial losses of SAGAN (Zhang et al. 2019, eq. 4; Lim & Ye 2017; Miyato et al. 2018):

.. math::

    L_D = \\mathbb{E}\\big[\\max(0, 1 - D(\\text{real}))\\big] + \\mathbb{E}\\big[\\max(0, 1 + D(\\text{fake}))\\big],
    \\qquad L_G = -\\mathbb{E}\\big[D(\\text{fake})\\big],

on raw, unbounded discriminator scores. MONAI's ``PatchAdversarialLoss(criterion="hinge")`` is a different loss:
it squashes the scores with ``tanh`` first and gives the generator the hinge ``max(0, 1 - tanh D)`` instead of
``-D``, so it is not used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["HingeDiscriminatorLoss", "HingeGeneratorLoss"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_reduction(reduction: LossReduction | str) -> str:
    value = str(reduction.value if isinstance(reduction, LossReduction) else reduction)
    if value not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}.")
    return value


class HingeDiscriminatorLoss(_Loss):
    """
    Discriminator hinge loss ``mean(relu(1 - real)) + mean(relu(1 + fake))``: real scores are pushed above +1,
    fake scores below -1, and scores beyond the margins give no gradient.

    Args:
        reduction: ``"mean"`` (default) or ``"sum"`` over the elements of each term, or ``"none"`` for the
            element-wise ``relu(1 - real) + relu(1 + fake)`` (then ``real`` and ``fake`` must have one shape).
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=_check_reduction(reduction))

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """
        Args:
            real: discriminator scores of real samples, any shape.
            fake: discriminator scores of generated samples, any shape.

        Returns:
            the loss, a scalar unless ``reduction="none"``.
        """
        if self.reduction == "none" and real.shape != fake.shape:
            raise ValueError(
                f"reduction='none' needs real and fake scores of one shape, got {tuple(real.shape)} and "
                f"{tuple(fake.shape)}."
            )
        if self.reduction == "none":
            return F.relu(1.0 - real) + F.relu(1.0 + fake)
        return _reduce(F.relu(1.0 - real), self.reduction) + _reduce(F.relu(1.0 + fake), self.reduction)


class HingeGeneratorLoss(_Loss):
    """
    Generator hinge loss ``-mean(fake)``: the generator raises the discriminator's scores of its samples.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (element-wise ``-fake``).
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=_check_reduction(reduction))

    def forward(self, fake: torch.Tensor) -> torch.Tensor:
        """
        Args:
            fake: discriminator scores of generated samples, any shape.

        Returns:
            the loss, a scalar unless ``reduction="none"``.
        """
        return _reduce(-fake, self.reduction)
