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
Auto-PGD (APGD): Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690; the attack SEA (Croce, Singh and Hein, ECCV
2024, https://arxiv.org/abs/2306.12941) runs on segmentation with its losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import Inferer

from monai_ext.attacks.ball import NORMS, project
from monai_ext.attacks.base import Attack
from monai_ext.attacks.losses import LossLike, attack_loss, two_class_logits
from monai_ext.attacks.objective import AttackObjective, TargetLike
from monai_ext.utils.checks import check_choice, check_fraction, check_non_negative_int

__all__ = ["APGD", "apgd_checkpoints"]


def apgd_checkpoints(num_steps: int) -> list[int]:
    """
    The checkpoints of APGD, the steps after which the step size may be halved: the first after
    ``max(int(0.22 N), 1)`` steps, each next interval ``max(int(0.03 N), 1)`` steps shorter, down to
    ``max(int(0.06 N), 1)`` (the authors' integer form of ``w_j = ceil(p_j N)``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, ``p_1 = 0.22``; the same for ``N = 100``:
    22, 41, 57, 70, 80, 87, 93, 99).

    Args:
        num_steps: the number of steps ``N``, ``>= 0``.

    Returns:
        the checkpoints, 1-based step counts ``<= N``, increasing.
    """
    num_steps = check_non_negative_int("num_steps", num_steps)
    interval, shrink = max(int(0.22 * num_steps), 1), max(int(0.03 * num_steps), 1)
    shortest = max(int(0.06 * num_steps), 1)
    checkpoints, step = [], interval
    while step <= num_steps:
        checkpoints.append(step)
        interval = max(interval - shrink, shortest)
        step += interval
    return checkpoints


class APGD(Attack):
    """
    Auto-PGD: PGD with momentum whose step size needs no tuning. It starts at ``eta = 2 eps`` and, at each checkpoint
    ``w_j`` (:py:func:`apgd_checkpoints`), halves for the images where

    1. the objective rose in fewer than ``rho`` of the steps since the last checkpoint (``rho = 0.75``), or
    2. the step size was not halved at the last checkpoint and the best objective has not improved since;

    those images then restart from their best point. A step is ``z = P(x_k + eta * s(g))``,
    ``x_{k+1} = P(x_k + momentum (z - x_k) + (1 - momentum) (x_k - x_{k-1}))`` (``momentum = 0.75``, the first step
    plain), with ``s(g) = sign(g)`` for L-inf and ``g / ||g||_2`` (per sample) for L2, and ``P`` the projection onto
    the ball and the data range. The objective is the loss per image (untargeted) or minus the loss on the target.

    As SEA does for segmentation, the attack returns per image the iterate where the fewest pixels keep their
    class (untargeted: the lowest pixel accuracy) or the most reach the target (targeted), the later one on ties.

    An attack of ``N`` steps makes ``N + 1`` forward and ``N`` backward passes.

    Args:
        eps: radius of the ball in ``unit``, ``>= 0``.
        num_steps: number of iterations ``N``, ``>= 0`` (100 in SEA for its final evaluation).
        norm: ``"linf"`` (default) or ``"l2"``.
        momentum: the weight of the new step, ``0.75`` as in the paper.
        rho: the fraction of steps that must raise the objective between checkpoints, ``0.75`` as in the paper.
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: ``"ce"`` (default), ``"jsd"`` or ``"masked_ce"`` (the SEA losses, see
            :py:func:`monai_ext.attacks.losses.pixel_losses`), ``"dice"`` or a callable.
        target: ``None`` (untargeted, default), ``"inverse"``, a class index or a callable; see
            :py:func:`monai_ext.attacks.objective.resolve_target`.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.

    Example::

        attack = APGD(eps=8, num_steps=100, loss="jsd")
        adv = attack(network, images, labels)  # images (B, C, H, W[, D]) in [0, 1], labels (B, 1, H, W[, D])
    """

    def __init__(
        self,
        eps: float,
        num_steps: int = 100,
        norm: str = "linf",
        momentum: float = 0.75,
        rho: float = 0.75,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "ce",
        target: TargetLike = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps=eps, unit=unit, data_range=data_range, loss=loss, target=target, inferer=inferer)
        self.num_steps = check_non_negative_int("num_steps", num_steps)
        self.norm = check_choice("norm", norm, NORMS)
        self.momentum = check_fraction("momentum", momentum, allow_zero=False)
        self.rho = check_fraction("rho", rho)

    def _unit_step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))

    def _score(self, objective: AttackObjective, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the objective (loss, or minus the loss on the target) and the fraction of pixels lost to the
        attack (untargeted: misclassified; targeted: at the target); both ``(B,)``."""
        labels = objective.objective_labels
        value = attack_loss(logits, labels, self.loss, reduction="none")
        hits = (two_class_logits(logits).argmax(1, keepdim=True) == labels).flatten(1).float().mean(1)
        if objective.targeted:
            return -value, hits
        return value, 1.0 - hits

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        eps = self.eps_data
        if self.num_steps == 0 or eps == 0:
            return images
        shape = (-1, *[1] * (images.ndim - 1))
        logits, grad = objective.logits_and_gradient(images)
        value, lost = self._score(objective, logits)
        step_size = torch.full((images.shape[0],), 2.0 * eps, dtype=images.dtype, device=images.device)
        x, x_prev = images, images
        best_x, best_grad, best_value = x, grad, value.clone()  # the highest objective, where a halving restarts
        best_adv, best_lost = x, lost.clone()  # the most pixels lost: the result
        values = [value]  # the objective at every iterate, for condition 1
        checkpoints, last_check = set(apgd_checkpoints(self.num_steps)), 0
        halved_last = torch.ones_like(value, dtype=torch.bool)  # no condition 2 at the first checkpoint
        best_at_last = best_value.clone()
        for k in range(self.num_steps):
            a = self.momentum if k > 0 else 1.0
            z = project(x + step_size.view(shape) * self._unit_step(grad), images, eps, self.norm, self.data_range)
            x, x_prev = project(x + a * (z - x) + (1 - a) * (x - x_prev), images, eps, self.norm, self.data_range), x
            if k < self.num_steps - 1:
                logits, grad = objective.logits_and_gradient(x)
            else:  # the last iterate needs no gradient
                logits = objective.logits(x)
            value, lost = self._score(objective, logits)
            values.append(value)
            improved = value > best_value
            best_x, best_grad = _where(improved, x, best_x), _where(improved, grad, best_grad)
            best_value = torch.where(improved, value, best_value)
            more = lost >= best_lost
            best_adv, best_lost = _where(more, x, best_adv), torch.where(more, lost, best_lost)
            if k + 1 in checkpoints and k + 1 < self.num_steps:  # no halving after the last step
                window = torch.stack(values[last_check : k + 2])  # the iterates since the last checkpoint
                rises = (window[1:] > window[:-1]).sum(0)
                halve = (rises < self.rho * (k + 1 - last_check)) | (~halved_last & (best_at_last >= best_value))
                step_size = torch.where(halve, step_size / 2, step_size)
                x, grad = _where(halve, best_x, x), _where(halve, best_grad, grad)
                halved_last, best_at_last, last_check = halve, best_value.clone(), k + 1
        return best_adv

    def settings(self) -> dict:
        return {
            **super().settings(),
            "num_steps": self.num_steps,
            "norm": self.norm,
            "momentum": self.momentum,
            "rho": self.rho,
        }


def _where(condition: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` for the samples where ``condition`` ``(B,)`` holds, ``b`` elsewhere."""
    return torch.where(condition.view(-1, *[1] * (a.ndim - 1)), a, b)
