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
The members and the selection rule of SEA, the segmentation ensemble attack of Croce, Singh and Hein, "Towards
Reliable Evaluation and Fast Training of Robust Semantic Segmentation Models", ECCV 2024,
https://arxiv.org/abs/2306.12941: APGD with each of its three losses, and per image the adversarial image of lowest
pixel accuracy. :py:func:`~monai_ext.attacks.ensemble_attack` with ``preset="sea"`` puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_ext.attacks.apgd import APGD
from monai_ext.attacks.losses import BalancedMaskedCE, predicted_classes
from monai_ext.utils.checks import check_positive_int

__all__ = ["SEA_LOSSES", "SEA_STEPS", "pixel_accuracy_score", "sea_members"]

#: SEA's three losses, in its order: class-balanced masked cross-entropy, masked cross-entropy, Jensen-Shannon
SEA_LOSSES = ("balanced_masked_ce", "masked_ce", "jsd")
#: the steps SEA runs per loss for the numbers it reports
SEA_STEPS = 300


def pixel_accuracy_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """
    The fraction of each image's pixels whose predicted class (:py:func:`~monai_ext.attacks.losses.predicted_classes`) is its label's: SEA's
    rule for the worst case over its attacks (the lowest is kept).

    Args:
        logits: ``(B, C, *spatial)``.
        labels: class indices ``(B, 1, *spatial)``.

    Returns:
        ``(B,)`` in ``[0, 1]``.
    """
    predicted = predicted_classes(logits, keepdim=True)
    return (predicted == labels.long()).flatten(1).float().mean(1)


def sea_members(
    eps: float,
    num_steps: int = SEA_STEPS,
    norm: str = "linf",
    unit: str = "levels",
    data_range: Sequence[float] = (0.0, 1.0),
    class_weights: Sequence[float] | None = None,
    seed: int | None = 0,
) -> list[APGD]:
    """
    SEA's attacks: APGD (:py:class:`~monai_ext.attacks.APGD`) with each of :py:data:`SEA_LOSSES`, ``num_steps`` steps,
    a seeded random start, the step-size rules on plain cross-entropy and SEA's radius reduction (30 / 30 / 40 % of the
    steps at 2, 1.5 and 1 eps).

    Args:
        eps: the budget in ``unit``.
        num_steps: steps per loss, ``>= 1``; SEA reports with :py:data:`SEA_STEPS` (300).
        norm: ``"linf"`` or ``"l2"``.
        unit: ``"levels"`` or ``"fraction"``.
        data_range: ``(min, max)`` intensity range of the images.
        class_weights: the balanced loss's class weights (SEA's inverse class frequencies over a data set); ``None``:
            from each image's own label (:py:func:`~monai_ext.attacks.class_frequency_weights`).
        seed: the random starts' seed (each member its own generator), ``None``: PyTorch's global generator.
    """
    num_steps = check_positive_int("num_steps", num_steps)
    balanced = "balanced_masked_ce" if class_weights is None else BalancedMaskedCE(class_weights)
    common = {"norm": norm, "unit": unit, "data_range": data_range, "radius_reduction": True, "seed": seed}
    return [APGD(eps, num_steps, loss=loss, **common) for loss in (balanced, *SEA_LOSSES[1:])]
