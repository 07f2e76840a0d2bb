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
A sweep over attack budgets that shares work across budgets, exactly.

An iterative L-inf attack with a fixed step ``alpha`` and no random start moves each value by at most ``k * alpha``
in ``k`` steps, so it does not touch its ball while ``k * alpha <= eps``: the runs for all budgets follow one
trajectory (the trunk) up to that step and branch from it after. For the NLCEN paper's 18 budgets
``{0.5, 1, 2, 4, 6, ..., 32}`` levels with Kurakin's schedule (:py:func:`~monai_ext.attacks.kurakin_num_steps`),
one run per budget makes 327 forward + backward passes; the trunk and the branches make at most 86 (32 trunk steps
plus ``T - floor(eps)`` per budget), and 69 here, since a branch's first step reuses the trunk's gradient at the
branch point.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from monai.utils import convert_to_dst_type
from torch import nn

from monai_ext.attacks.ball import project
from monai_ext.attacks.base import Attack
from monai_ext.attacks.objective import AttackObjective
from monai_ext.utils.checks import check_callable, check_non_negative

__all__ = ["SharedTrajectories", "shared_sweep", "shares_trajectory"]

AttackLike = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _defined_in(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def shares_trajectory(attack: object) -> bool:
    """
    Whether runs of ``attack`` at several budgets can share their first iterates: it has a ``trajectory_key()`` that
    is not ``None`` (an L-inf attack with a fixed step and no random start: :py:class:`~monai_ext.attacks.IterativeFGSM`,
    :py:class:`~monai_ext.attacks.PGD`, :py:class:`~monai_ext.attacks.SegPGD`, :py:class:`~monai_ext.attacks.CosPGD`)
    and its class defines ``perturb`` no lower than its steps (``direction``), so a subclass with its own
    ``perturb`` (layered PGD) is run on its own.
    """
    key = getattr(attack, "trajectory_key", None)
    if key is None or key() is None:
        return False
    cls = type(attack)
    perturb, direction = _defined_in(cls, "perturb"), _defined_in(cls, "direction")
    return direction is not None and issubclass(direction, perturb)


@dataclass
class _Trunk:
    """One batch's trunk: the clean images and labels, the trunk iterate after ``step`` steps and its unit step
    (``None`` until computed), and the largest budget served so far."""

    images: torch.Tensor
    labels: torch.Tensor
    iterate: torch.Tensor
    step: int = 0
    direction: torch.Tensor | None = None
    last_eps: float = 0.0


class SharedTrajectories:
    """
    A factory ``eps -> attack`` over ``attack_factory`` that shares the work of the budgets ``epsilons``: the attack it
    gives for a budget returns exactly what ``attack_factory(eps)`` returns, but runs of the same batch (the same
    clean images and labels, on the same network) at several budgets share their trunk (see the module's
    docstring). Budgets of attacks that do not share (:py:func:`shares_trajectory`: a random start, L2, a layered
    attack, an ensemble) and budgets above the largest of ``epsilons`` run on their own.

    The trunk of each batch is kept between calls, so a sweep that runs every batch at each budget in turn (the
    evaluator of :py:class:`~monai_ext.engines.LevelSweep`) shares it too; budgets taken in increasing order share
    the most (a smaller budget after a larger one starts its own trunk, still exact). The trunks assume the network
    does not change between calls: use a new object for new weights. It wraps ``attack_factory``
    (``__wrapped__``), so a sweep's settings describe the attack factory, whose results these are.

    Args:
        attack_factory: ``eps -> callable(network, images, labels) -> images`` (an attack class, a
            ``functools.partial`` of one).
        epsilons: the budgets of the sweep, in the attack's unit, each ``>= 0``.

    Example::

        attacks = SharedTrajectories(functools.partial(IterativeFGSM, target="inverse"), [0.5, 1, 2, 4, 8])
        adv = {eps: attacks(eps)(network, images, labels) for eps in [0.5, 1, 2, 4, 8]}
    """

    def __init__(self, attack_factory: Callable[[float], AttackLike], epsilons: Sequence[float]) -> None:
        self.attack_factory = check_callable("attack_factory", attack_factory, "a callable eps -> attack")
        self.__wrapped__ = attack_factory
        self.epsilons = [check_non_negative("epsilon", eps) for eps in epsilons]
        self.attacks = {eps: attack_factory(eps) for eps in self.epsilons}
        self.trunk_eps: dict[Hashable, float] = {}  # per trajectory key, the largest budget: the trunk's
        for eps, attack in self.attacks.items():
            if shares_trajectory(attack):
                key = attack.trajectory_key()
                self.trunk_eps[key] = max(eps, self.trunk_eps.get(key, eps))
        self.trunks: dict[tuple, list[_Trunk]] = {}
        self.passes = 0  # unit steps computed on shared trunks and branches (forward + backward passes)

    def __call__(self, eps: float) -> AttackLike:
        """The attack at budget ``eps``: ``attack_factory(eps)``, sharing its work with the other budgets."""
        eps = float(eps)
        attack = self.attacks.get(eps) or self.attack_factory(eps)
        if not shares_trajectory(attack) or eps > self.trunk_eps.get(attack.trajectory_key(), -1.0):
            return attack
        return lambda network, images, labels: self._run(attack, eps, network, images, labels)

    def _run(
        self, attack: Attack, eps: float, network: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        key = attack.trajectory_key()
        trunk_attack = self.attacks[self.trunk_eps[key]]
        with attack.attack_context(network, images, labels) as (objective, x):
            # keyed by the network itself, not its id: a trunk keeps its network alive, so no other can take its id
            trunk = self._trunk((key, network), x, objective.labels)
            if eps < trunk.last_eps or attack.num_steps < trunk.step:  # behind the stored trunk: a fresh one
                trunk = _Trunk(x, objective.labels, x)
            trunk.last_eps = eps
            adv = self._walk(attack, trunk_attack.eps_data, objective, trunk)
        return convert_to_dst_type(adv.detach().to(dtype=images.dtype), images)[0]

    def _trunk(self, key: tuple, images: torch.Tensor, labels: torch.Tensor) -> _Trunk:
        """The stored trunk of this batch, or a new one."""
        trunks = self.trunks.setdefault(key, [])
        for trunk in trunks:
            same = trunk.images.shape == images.shape and trunk.labels.shape == labels.shape
            if same and torch.equal(trunk.images, images) and torch.equal(trunk.labels, labels):
                return trunk
        trunks.append(_Trunk(images, labels, images))
        return trunks[-1]

    def _walk(self, attack: Attack, trunk_eps: float, objective: AttackObjective, trunk: _Trunk) -> torch.Tensor:
        """
        Run ``attack``'s steps from ``trunk``: along the trunk while its iterate equals the trunk's (advancing the
        trunk), then on its own. Budgets taken in increasing order branch no earlier than smaller ones: the
        projection ``clip(x + clamp(y - x, -eps, eps))`` is monotone in ``eps``, so a budget between two that agree
        agrees too.
        """
        eps, alpha, images = attack.eps_data, attack.to_data_units(attack.alpha), trunk.images
        adv, on_trunk = trunk.iterate, True
        for step in range(trunk.step, attack.num_steps):
            if on_trunk:
                if trunk.direction is None:
                    trunk.direction = attack.direction(objective, trunk.iterate, step)
                    self.passes += 1
                candidate = trunk.iterate + alpha * trunk.direction
                adv = project(candidate, images, eps, "linf", attack.data_range)
                following = project(candidate, images, trunk_eps, "linf", attack.data_range)
                on_trunk = torch.equal(adv, following)
                if on_trunk:
                    trunk.iterate, trunk.direction, trunk.step = following, None, step + 1
            else:
                adv = project(
                    adv + alpha * attack.direction(objective, adv, step), images, eps, "linf", attack.data_range
                )
                self.passes += 1
        return adv


def shared_sweep(
    attack_factory: Callable[[float], AttackLike],
    epsilons: Sequence[float],
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> dict[float, torch.Tensor]:
    """
    The adversarial images of a batch at every budget, ``{eps: attack_factory(eps)(network, images, labels)}``,
    computed with the trunk shared across the budgets (:py:class:`SharedTrajectories`, exact) where the attack
    allows it, one run per budget otherwise.

    Args:
        attack_factory: ``eps -> attack`` (an attack class, a ``functools.partial`` of one).
        epsilons: the budgets, in the attack's unit, each ``>= 0``.
        network: the network, logits ``(B, C, *spatial)`` in eval mode.
        images: ``(B, C_in, *spatial)``.
        labels: class indices ``(B, 1, *spatial)``.

    Returns:
        the adversarial images per budget (as floats, in the order of ``epsilons``).

    Example::

        adv = shared_sweep(functools.partial(IterativeFGSM, target="inverse"), [0.5, 1, 2, 4, 8], net, x, y)
    """
    sharing = SharedTrajectories(attack_factory, epsilons)
    done = {eps: sharing(eps)(network, images, labels) for eps in sorted(set(sharing.epsilons))}
    return {eps: done[eps] for eps in sharing.epsilons}
