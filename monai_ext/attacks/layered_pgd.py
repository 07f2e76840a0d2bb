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
Layered PGD, method 1 of the robust training paper (Avramidis et al., "Robustness in Medical AI: a training scheme for
more robust semantic segmentation", draft, eq. 2): a targeted PGD toward the full-area target of each class in turn,
each pass starting from the previous pass's result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from monai_ext.attacks.losses import LossLike
from monai_ext.attacks.objective import AttackObjective
from monai_ext.attacks.pgd import PGD
from monai_ext.utils.checks import check_bool

__all__ = ["LayeredPGD"]


class LayeredPGD(PGD):
    """
    Layered PGD: for each class ``c`` of ``classes`` in turn, ``num_steps`` steps of targeted PGD toward the full-area
    target ``c`` (every pixel of class ``c``), starting from the result of the pass before (the first pass from the
    clean images, or a random point of the ball with ``random_start``)::

        x_0 = x;   x_k = PGD_{target = classes[k - 1]}(start = x_{k - 1});   x_adv = x_K

    What bounds the chain decides what it builds. The draft's eq. 2,
    ``X_adv+1 = clip(X_adv + sum_c -eta_{X_adv, Y_c})`` with ``eta = eps * sign(grad)`` (eq. 1), adds one term of size
    ``eps`` per class and clips only to the data range. By default (``per_pass_ball=True``) each pass is projected
    onto its own ball of radius ``eps`` around its start (the first pass's around the clean images, where a random
    start lies): the perturbation of pass ``k``, ``x_k - x_{k - 1}``, stays within ``eps`` and the chain within
    ``len(classes) * eps`` of the clean images, as in eq. 2; no pass moves a pixel by more than ``eps``, so the
    result is the sum of the passes and not the last pass's alone. With
    ``per_pass_ball=False`` every step is projected onto one ball of radius ``eps`` around the clean images: the chain
    stays within ``eps``, but each pass (``num_steps * alpha``, ``2.5 eps`` at the bundle's step size) can cross the
    whole ball, so the last pass leads. Measured with ``scripts/layered_pgd_survival.py`` (JSRT, four classes, a
    U-Net trained and untrained; ``bundles/robust_training/docs/README.md``): the final perturbation agrees in sign
    with a plain PGD toward the last class on 82-84 % of the pixels with one ball and 73 % with a ball per pass; where
    a pass and the last class push apart, the untrained network's one-ball chain keeps 15-28 % of the earlier passes'
    signs (overwritten) against 40-55 % with a ball per pass. Every step is clipped to ``data_range``.

    Args:
        eps: radius of each pass's ball (``per_pass_ball=True``) or of the chain's one ball, in ``unit``, ``>= 0``.
        alpha: step size in ``unit``, ``>= 0``.
        num_steps: steps per pass (per class), ``>= 0``; 100 (the paper's) by default.
        classes: the class order, a sequence of class indices; ``None`` (default) is every class of the network,
            ``0, 1, ..., C - 1`` (``C`` read from one forward pass; 2 for a single-logit network).
        per_pass_ball: project each pass onto its own ball around the pass's start (default, eq. 2), or every step
            onto one ball around the clean images (``False``).
        norm: ``"linf"`` (default) or ``"l2"``.
        random_start: start the first pass from a random point of the ball (once, not at every pass: each pass
            starts where the previous one ended).
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: ``"ce"`` (default), ``"dice"`` or a callable; see :py:func:`monai_ext.attacks.losses.attack_loss`.
        seed: seed of the random start; see :py:class:`~monai_ext.attacks.PGD`.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.

    :py:meth:`with_record` gives, per image, ``{"classes": [...]}``: the class order the chain followed;
    :py:meth:`passes` the images after every pass.

    Example::

        attack = LayeredPGD(eps=0.01, alpha=0.00025, num_steps=100, unit="fraction")  # 1% of the range per pass
        adv = attack(network, images, labels)  # images (B, C, H, W) in [0, 1], labels (B, 1, H, W)
        adv, records = attack.with_record(network, images, labels)  # records[b]["classes"]: [0, 1, ...]
        x_1, x_2, ..., x_K = attack.passes(network, images, labels)  # x_K is adv
    """

    def __init__(
        self,
        eps: float,
        alpha: float,
        num_steps: int = 100,
        classes: Sequence[int] | None = None,
        per_pass_ball: bool = True,
        norm: str = "linf",
        random_start: bool = False,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "ce",
        seed: int | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(
            eps=eps,
            alpha=alpha,
            num_steps=num_steps,
            norm=norm,
            random_start=random_start,
            unit=unit,
            data_range=data_range,
            loss=loss,
            target=None,
            seed=seed,
            inferer=inferer,
        )
        self.classes = None if classes is None else self._check_classes(classes)
        self.per_pass_ball = check_bool("per_pass_ball", per_pass_ball)

    @staticmethod
    def _check_classes(classes: Sequence[int]) -> list[int]:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or len(classes) == 0:
            raise ValueError(f"classes must be a non-empty sequence of class indices (or None), got {classes!r}.")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise ValueError(f"classes must hold class indices >= 0, got {list(classes)!r}.")
        return list(classes)

    def class_order(self, objective: AttackObjective, images: torch.Tensor) -> list[int]:
        """``classes``, or every class of the network (``0 .. C - 1``, ``C`` from one forward pass on ``images``)."""
        if self.classes is not None:
            return list(self.classes)
        return list(range(max(int(objective.logits(images).shape[1]), 2)))

    def iterate_passes(
        self, objective: AttackObjective, images: torch.Tensor, classes: Sequence[int]
    ) -> Iterator[torch.Tensor]:
        """
        The chain, pass by pass.

        Args:
            objective: the attack objective on ``images``.
            images: ``(B, C_in, *spatial)``, the clean images.
            classes: the target of each pass (:py:meth:`class_order`).

        Yields:
            ``x_1, ..., x_K``: the images after each pass, ``(B, C_in, *spatial)``.
        """
        adv = self.random_init(images, self.eps_data) if self.random_start else images
        for k, target in enumerate(classes):
            center = adv if self.per_pass_ball and k > 0 else images  # a random start lies in the clean ball
            adv = self.iterate(objective.with_target(target), center, adv)
            yield adv

    def passes(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> list[torch.Tensor]:
        """
        Attack a batch as :py:meth:`~monai_ext.attacks.base.Attack.__call__` does and keep the images after every
        pass (to see what each pass adds and what of it the later passes leave).

        Args:
            network: a segmentation network, logits ``(B, C, *spatial)`` in eval mode.
            images: ``(B, C_in, *spatial)`` floating point, inside ``data_range``.
            labels: true class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``.

        Returns:
            ``[x_1, ..., x_K]``, one ``(B, C_in, *spatial)`` plain tensor per class of :py:meth:`class_order`;
            ``x_K`` is the attack's result.
        """
        with self.attack_context(network, images, labels) as (objective, x):
            classes = self.class_order(objective, x)
            return [adv.detach().to(dtype=images.dtype) for adv in self.iterate_passes(objective, x, classes)]

    def perturb_with_record(
        self, objective: AttackObjective, images: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        classes = self.class_order(objective, images)
        for adv in self.iterate_passes(objective, images, classes):
            continue  # the last pass's images are the result
        return adv, [{"classes": list(classes)} for _ in range(images.shape[0])]

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        return self.perturb_with_record(objective, images)[0]

    def settings(self) -> dict:
        settings = {**super().settings(), "classes": self.classes, "per_pass_ball": self.per_pass_ball}
        del settings["target"]  # one full-area target per pass: ``classes``
        return settings
