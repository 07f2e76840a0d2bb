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
Projected gradient descent (PGD): Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018, https://arxiv.org/abs/1706.06083; the attack of the robust training paper (100 steps, full-area target).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from monai.inferers import Inferer

from monai_ext.attacks.ball import NORMS, project
from monai_ext.attacks.base import Attack
from monai_ext.attacks.losses import LossLike
from monai_ext.attacks.objective import AttackObjective, TargetLike
from monai_ext.utils.checks import check_bool, check_choice, check_non_negative, check_non_negative_int

__all__ = ["PGD", "PixelWeightedPGD"]


class PGD(Attack):
    """
    Projected gradient descent: an optional random start in the ball, then ``num_steps`` gradient steps of size
    ``alpha``, each projected onto the ball of radius ``eps`` around the clean images and clipped to the data range.

    - ``norm="linf"``: the step is ``alpha * sign(g)``, the projection a clamp to ``[x - eps, x + eps]``; the
      random start is uniform in the L-inf ball.
    - ``norm="l2"``: the step is ``alpha * g / ||g||_2`` with the norm per sample (over all channels and voxels),
      the projection rescales each sample's perturbation to L2 norm ``<= eps``; the random start is uniform in the
      L2 ball. ``eps`` and ``alpha`` are Euclidean norms in the same units as for L-inf: ``eps=8`` levels lets one
      voxel move by 8 levels, or ``n`` voxels by ``8 / sqrt(n)`` levels each.

    ``g`` is the gradient of the loss on the true labels (untargeted: ascend) or minus the gradient of the loss on the
    target labels (targeted: descend). Without random start and with one step of ``alpha = eps``, L-inf PGD is FGSM.

    Args:
        eps: radius of the ball in ``unit``, ``>= 0``.
        alpha: step size in ``unit``, ``>= 0``.
        num_steps: number of iterations, ``>= 0``.
        norm: ``"linf"`` (default) or ``"l2"``.
        random_start: whether to start from a random point of the ball (default) or from the clean images.
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: ``"ce"`` (default), ``"dice"`` or a callable; see :py:func:`monai_ext.attacks.losses.attack_loss`.
        target: ``None`` (untargeted, default), ``"inverse"``, a class index (the robust training paper attacks
            with ``target=0``, full-area background) or a callable; see
            :py:func:`monai_ext.attacks.objective.resolve_target`.
        seed: seed of the random start, drawn on the CPU so that it is the same on every device; successive calls
            draw successive starts of the seeded stream. ``None`` (default) uses torch's global generator.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.
    """

    def __init__(
        self,
        eps: float,
        alpha: float,
        num_steps: int,
        norm: str = "linf",
        random_start: bool = True,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "ce",
        target: TargetLike = None,
        seed: int | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps=eps, unit=unit, data_range=data_range, loss=loss, target=target, inferer=inferer)
        self.alpha = check_non_negative("alpha", alpha)
        self.num_steps = check_non_negative_int("num_steps", num_steps)
        self.norm = check_choice("norm", norm, NORMS)
        self.random_start = check_bool("random_start", random_start)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def random_init(self, images: torch.Tensor, eps: float) -> torch.Tensor:
        """A random point of the ball of radius ``eps`` (data units) around ``images``, clipped to the data range."""
        shape = images.shape
        if self.norm == "linf":
            delta = (torch.rand(shape, generator=self.generator, dtype=torch.float64) * 2 - 1) * eps
        else:
            # uniform in the ball: a uniform direction (normalised Gaussian) and a radius eps * u ** (1 / d)
            direction = torch.randn(shape, generator=self.generator, dtype=torch.float64)
            direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (len(shape) - 1))
            dim = images[0].numel()
            radius = torch.rand(shape[0], generator=self.generator, dtype=torch.float64) ** (1.0 / max(dim, 1))
            delta = direction * (eps * radius).view(-1, *[1] * (len(shape) - 1))
        adv = images + delta.to(device=images.device, dtype=images.dtype)
        return project(adv, images, eps, self.norm, self.data_range)

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        adv = self.random_init(images, self.eps_data) if self.random_start else images
        return self.iterate(objective, images, adv)

    def iterate(self, objective: AttackObjective, center: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """
        The ``num_steps`` projected steps from ``adv``, each projected onto the ball of radius ``eps`` around
        ``center`` (the clean images in :py:meth:`perturb`) and clipped to the data range.

        Args:
            objective: gives the ascent direction at any point.
            center: ``(B, C_in, *spatial)``, the centre of the ball.
            adv: ``(B, C_in, *spatial)``, the start, inside the ball.

        Returns:
            the images after the last step, same shape.
        """
        eps, alpha = self.eps_data, self.to_data_units(self.alpha)
        for step in range(self.num_steps):
            adv = project(adv + alpha * self.direction(objective, adv, step), center, eps, self.norm, self.data_range)
        return adv

    def step_loss(self, step: int) -> LossLike | None:
        """The loss of step ``step`` (0-based); ``None``: the attack's own ``loss`` at every step."""
        return None

    def direction(self, objective: AttackObjective, adv: torch.Tensor, step: int) -> torch.Tensor:
        """
        The unit step of step ``step`` (0-based) at ``adv``: the sign of the ascent direction (``"linf"``) or the
        ascent direction over its L2 norm per sample (``"l2"``), the gradient of :py:meth:`step_loss`.
        """
        grad = objective.gradient(adv, self.step_loss(step))
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))

    def trajectory_key(self) -> tuple | None:
        """
        What the iterates depend on besides ``eps``, for :py:func:`monai_ext.attacks.shared_sweep`: without a random
        start an L-inf run does not feel its ball while ``step * alpha <= eps``, so runs with the same key share
        their first iterates. ``None`` (no sharing) for L2 or a random start.
        """
        if self.norm != "linf" or self.random_start:
            return None
        return type(self), self.to_data_units(self.alpha), self.data_range, self.loss, self.target, self.inferer

    def settings(self) -> dict:
        return {
            **super().settings(),
            "alpha": self.alpha,
            "num_steps": self.num_steps,
            "norm": self.norm,
            "random_start": self.random_start,
            "seed": self.seed,
        }


class PixelWeightedPGD(PGD):
    """
    PGD (:py:class:`PGD`: the same steps, ball, projection and random start) on the per-pixel cross-entropy weighted
    per pixel by the prediction at the current iterate, the weighted loss of each step given by :py:meth:`step_loss`:
    the base of :py:class:`~monai_ext.attacks.SegPGD` and :py:class:`~monai_ext.attacks.CosPGD`, which define it.

    Args:
        eps: radius of the ball in ``unit``, ``>= 0``.
        alpha: step size in ``unit``, ``>= 0``.
        num_steps: number of iterations ``T``, ``>= 0``.
        norm: ``"linf"`` (default) or ``"l2"``; see :py:class:`PGD`.
        random_start: start from a random point of the ball (default, as in both papers) or from the clean images.
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        target: ``None`` (untargeted, default), ``"inverse"``, a class index or a callable; see
            :py:func:`monai_ext.attacks.objective.resolve_target`.
        seed: seed of the random start; see :py:class:`PGD`.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.
    """

    def __init__(
        self,
        eps: float,
        alpha: float,
        num_steps: int,
        norm: str = "linf",
        random_start: bool = True,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        target: TargetLike = None,
        seed: int | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps, alpha, num_steps, norm, random_start, unit, data_range, "ce", target, seed, inferer)

    @abstractmethod
    def step_loss(self, step: int) -> LossLike:
        """The weighted cross-entropy of step ``step`` (0-based), ``(logits, labels) -> scalar``."""
