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
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690, as SEA (Croce, Singh and Hein, "Towards reliable
evaluation and fast training of robust semantic segmentation models", ECCV 2024, https://arxiv.org/abs/2306.12941)
runs it on segmentation with its losses: the cross-entropy tracked, a random start, optional radius reduction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import Inferer

from monai_ext.attacks.ball import NORMS, project
from monai_ext.attacks.base import Attack
from monai_ext.attacks.losses import (
    LOSSES,
    LossLike,
    attack_loss,
    is_untargeted_loss,
)
from monai_ext.attacks.objective import AttackObjective, TargetLike, predicted_classes
from monai_ext.utils.checks import check_bool, check_choice, check_fraction, check_non_negative_int

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
    Auto-PGD as SEA runs it on segmentation: PGD with momentum whose step size needs no tuning. The step size starts at
    ``eta = 2 eps`` and, at each checkpoint ``w_j`` (:py:func:`apgd_checkpoints`), halves for the images where

    1. the tracked loss rose in fewer than ``rho`` of the steps since the last checkpoint (``rho = 0.75``), or
    2. the step size was not halved at the last checkpoint and the best tracked loss has not improved since;

    those images then restart from their best point, the iterate of the highest tracked loss. A step is
    ``z = P(x_k + eta * s(g))``, ``x_{k+1} = P(x_k + momentum (z - x_k) + (1 - momentum) (x_k - x_{k-1}))``
    (``momentum = 0.75``, the first step plain), with ``g`` the gradient of the attack's ``loss``, ``s(g) = sign(g)``
    for L-inf and ``g / ||g||_2`` (per sample) for L2, and ``P`` the projection onto the ball and the data range.

    As in SEA (Croce, Singh and Hein, ECCV 2024, ``apgd_train`` of github.com/nmndeep/Robust-Segmentation), the step
    size rules and the best point follow the plain cross-entropy (``track_loss="ce"``) whatever loss gives the
    gradient: the masked losses fall as pixels are fooled, and a tracked masked loss would restart halvings from early
    iterates. The tracked loss is the cross-entropy on the true labels (untargeted) or minus it on the target labels
    (targeted). The attack returns per image the iterate where the fewest pixels keep their class (untargeted: the
    lowest pixel accuracy) or the most reach the target (targeted), the later one on ties, as SEA does.

    The run starts, as AutoAttack's does, from a random point of the ball (``random_start``, drawn from a generator
    seeded with ``seed``): uniform in the L-inf box, as SEA draws it, or uniform on the L2 sphere, as AutoAttack
    draws it (SEA has no L2 start), clipped to the data range. With ``radius_reduction`` it runs SEA's schedule:
    ``int(0.3 N)``, ``int(0.3 N)`` and the remaining steps at radius ``2 eps``, ``1.5 eps`` and ``eps``, each stage
    a new APGD run (step size ``2 x`` its radius) from the last stage's result projected onto its ball (SEA projects
    only onto the L-inf ball; here also onto the L2 one), the random start in the ``2 eps`` ball.

    Conventions: where SEA's code (the same as AutoAttack's ``autopgd_base.py``) differs from the APGD paper only by an
    off-by-one, this follows the paper. Condition 1 halves when the rises are strictly fewer than ``rho`` times the
    steps since the last checkpoint; the code halves also when they are as many (``<=``), which can differ only when
    that product is a whole number (an interval of a multiple of 4 steps at ``rho = 0.75``). At the first checkpoint
    the first step counts as a rise when it raises the loss above its value at the starting point; the code compares
    it with zero (an unfilled entry of its loss history), so that for a positive loss the first step always counts.
    The second differs most often at the start of the later radius-reduction stages, whose first step from the
    projected point often lowers the loss: with a short first interval this halves there where SEA's code does not.
    SEA's evaluation also stops a batch once every pixel of every image is misclassified; this runs every step.

    An attack of ``N`` steps makes ``N + 1`` forward and ``N`` backward passes; with radius reduction one more forward
    pass per stage, ``N + 3`` (``N >= 4``).

    Args:
        eps: radius of the ball in ``unit``, ``>= 0``.
        num_steps: number of iterations ``N``, ``>= 0``. SEA reports its evaluation with 300 steps for each of its
            three losses (radius reduction and random start on): the setting for reported numbers; the default 100
            is a third of it.
        norm: ``"linf"`` (default) or ``"l2"``.
        momentum: the weight of the new step, ``0.75`` as in the paper.
        rho: the fraction of steps that must raise the tracked loss between checkpoints, ``0.75`` as in the paper.
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: the loss whose gradient the steps follow: a name of :py:data:`monai_ext.attacks.losses.LOSSES`
            (``"ce"``, default; SEA's ``"balanced_masked_ce"``, ``"masked_ce"``, ``"jsd"``; ``"dice"``) or a callable.
        track_loss: the loss the step size rules and the best point follow: ``"ce"`` (default, as SEA), another name
            or callable as ``loss``, or ``None`` for the attack's own ``loss`` (the APGD paper's choice).
        random_start: start from a random point of the ball (default) or from the clean images.
        seed: the seed of the random start (a generator of its own on the images' device, the same for every batch,
            as AutoAttack seeds each run); ``None``: PyTorch's global generator.
        radius_reduction: run SEA's three stages at ``2 eps``, ``1.5 eps`` and ``eps``.
        target: ``None`` (untargeted, default), ``"inverse"``, a class index or a callable; see
            :py:func:`monai_ext.attacks.objective.resolve_target`.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.

    Example::

        attack = APGD(eps=8, num_steps=300, loss="masked_ce", radius_reduction=True)  # one of SEA's three runs
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
        track_loss: LossLike | None = "ce",
        random_start: bool = True,
        seed: int | None = 0,
        radius_reduction: bool = False,
        target: TargetLike = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps=eps, unit=unit, data_range=data_range, loss=loss, target=target, inferer=inferer)
        self.num_steps = check_non_negative_int("num_steps", num_steps)
        self.norm = check_choice("norm", norm, NORMS)
        self.momentum = check_fraction("momentum", momentum, allow_zero=False)
        self.rho = check_fraction("rho", rho)
        if track_loss is not None and not callable(track_loss):
            track_loss = check_choice("track_loss", track_loss, LOSSES)
        if is_untargeted_loss(track_loss) and self.target is not None:
            raise ValueError(
                f"track_loss {track_loss!r} masks the pixels still classified correctly: an untargeted loss."
            )
        self.track_loss = track_loss
        self.random_start = check_bool("random_start", random_start)
        self.seed = None if seed is None else check_non_negative_int("seed", seed)
        self.radius_reduction = check_bool("radius_reduction", radius_reduction)

    def stages(self) -> list[tuple[float, int]]:
        """The ``(radius as a multiple of eps, steps)`` of each run: ``[(1, N)]``, or SEA's radius reduction
        ``[(2, int(0.3 N)), (1.5, int(0.3 N)), (1, N - 2 int(0.3 N))]``."""
        if not self.radius_reduction:
            return [(1.0, self.num_steps)]
        first = int(0.3 * self.num_steps)
        return [(2.0, first), (1.5, first), (1.0, self.num_steps - 2 * first)]

    def _random_start(self, images: torch.Tensor, eps: float) -> torch.Tensor:
        """A random point of the ball of radius ``eps`` (data units) around each image, clipped to the data range."""
        generator = None
        if self.seed is not None:
            generator = torch.Generator(device=images.device).manual_seed(self.seed)
        draw = torch.rand if self.norm == "linf" else torch.randn
        noise = draw(images.shape, generator=generator, dtype=images.dtype, device=images.device)
        if self.norm == "linf":
            delta = eps * (2 * noise - 1)
        else:
            delta = eps * noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (images.ndim - 1))
        return (images + delta).clamp(*self.data_range)

    def _unit_step(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))

    def _score(self, objective: AttackObjective, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the tracked objective (the tracked loss, or minus the tracked loss on the target) and the
        fraction of pixels lost to the attack (untargeted: misclassified; targeted: at the target); both ``(B,)``."""
        labels = objective.objective_labels
        track_loss = self.loss if self.track_loss is None else self.track_loss
        value = attack_loss(logits, labels, track_loss, reduction="none")
        hits = (predicted_classes(logits, keepdim=True) == labels).flatten(1).float().mean(1)
        if objective.targeted:
            return -value, hits
        return value, 1.0 - hits

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        eps = self.eps_data
        if self.num_steps == 0 or eps == 0:
            return images
        stages = self.stages()
        x = self._random_start(images, stages[0][0] * eps) if self.random_start else images
        for i, (factor, num_steps) in enumerate(stages):
            radius = factor * eps
            if i > 0:
                x = project(x, images, radius, self.norm, self.data_range)
            x = self._run(objective, images, x, radius, num_steps)
        return x

    def _run(
        self, objective: AttackObjective, images: torch.Tensor, start: torch.Tensor, eps: float, num_steps: int
    ) -> torch.Tensor:
        """One APGD run of ``num_steps`` steps from ``start`` in the ball of radius ``eps`` (data units) around
        ``images``; returns per image the iterate of the most pixels lost."""
        if num_steps == 0:
            return start
        shape = (-1, *[1] * (images.ndim - 1))
        logits, grad = objective.logits_and_gradient(start)
        value, lost = self._score(objective, logits)
        step_size = torch.full((images.shape[0],), 2.0 * eps, dtype=images.dtype, device=images.device)
        x, x_prev = start, start
        best_x, best_grad, best_value = x, grad, value.clone()  # the highest tracked loss, where a halving restarts
        best_adv, best_lost = x, lost.clone()  # the most pixels lost: the result
        values = [value]  # the tracked loss at every iterate, for condition 1
        checkpoints, last_check = set(apgd_checkpoints(num_steps)), 0
        halved_last = torch.ones_like(value, dtype=torch.bool)  # no condition 2 at the first checkpoint
        best_at_last = best_value.clone()
        for k in range(num_steps):
            a = self.momentum if k > 0 else 1.0
            z = project(x + step_size.view(shape) * self._unit_step(grad), images, eps, self.norm, self.data_range)
            x, x_prev = project(x + a * (z - x) + (1 - a) * (x - x_prev), images, eps, self.norm, self.data_range), x
            if k < num_steps - 1:
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
            if k + 1 in checkpoints and k + 1 < num_steps:  # no halving after the last step
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
            "track_loss": self.track_loss,
            "random_start": self.random_start,
            "seed": self.seed,
            "radius_reduction": self.radius_reduction,
        }


def _where(condition: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` for the samples where ``condition`` ``(B,)`` holds, ``b`` elsewhere."""
    return torch.where(condition.view(-1, *[1] * (a.ndim - 1)), a, b)
