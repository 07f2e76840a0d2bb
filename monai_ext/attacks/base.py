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
The base every gradient attack of ``monai_ext.attacks`` stands on: :py:class:`Attack`, the ``__call__`` that the
attacks share (input checks, eval mode, gradients enabled, the type of the input given back), its
:py:meth:`Attack.attack_context` and its optional MONAI inferer (:py:class:`~monai_ext.attacks.InfererNetwork`).
An attack is a plain callable over a batch, ``attack(network, images, labels) -> adversarial images``.

What an attack is built from lives beside it: budgets and the projection in :py:mod:`monai_ext.attacks.ball`, the
losses in :py:mod:`monai_ext.attacks.losses`, targets and the objective in :py:mod:`monai_ext.attacks.objective`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from torch import nn

from monai_ext.attacks.ball import UNITS, to_data_units
from monai_ext.attacks.inferer import describe_inferer, with_inferer
from monai_ext.attacks.losses import LOSSES, LossLike, is_untargeted_loss
from monai_ext.attacks.objective import AttackObjective, TargetLike, as_plain, attack_mode, check_target
from monai_ext.utils.checks import (
    check_choice,
    check_image_batch,
    check_interval,
    check_label_shape,
    check_non_negative,
)

__all__ = ["Attack"]


class Attack(ABC):
    """
    Base of the gradient attacks: ``attack(network, images, labels) -> adversarial images``.

    A subclass implements :py:meth:`perturb`; ``__call__`` validates the inputs, puts the network in eval mode,
    enables gradients (also inside ``torch.no_grad`` or ``torch.inference_mode``) and gives back detached images of
    the type, shape, dtype and device of the input (a ``MetaTensor`` keeps its meta data).

    Args:
        eps: the attack budget, the radius of the ball around the clean images, in ``unit``; ``>= 0``.
        unit: ``"levels"`` (intensity levels of an 8-bit scale: ``eps / 255`` of the data range) or ``"fraction"``
            (a fraction of the data range); see :py:func:`~monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images; adversarial images are clipped to it and images
            outside it are refused.
        loss: ``"ce"``, ``"dice"`` or a callable; see :py:func:`~monai_ext.attacks.losses.attack_loss`.
        target: ``None``: untargeted, ascend the loss on the true labels. Otherwise a targeted attack descends the
            loss on the target labels: ``"inverse"``, a class index or a callable; see :py:func:`~monai_ext.attacks.objective.resolve_target`.
        inferer: a MONAI inferer the network is run through (a bundle's ``SlidingWindowInferer`` on whole volumes),
            see :py:func:`~monai_ext.attacks.with_inferer`; ``None`` (default): the network as it is, or as it is
            handed over (an engine hands an :py:class:`~monai_ext.attacks.InfererNetwork` of its own inferer).
    """

    def __init__(
        self,
        eps: float,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "ce",
        target: TargetLike = None,
        inferer: Inferer | None = None,
    ) -> None:
        self.eps = check_non_negative("eps", eps)
        self.unit = check_choice("unit", unit, UNITS)
        self.data_range = check_interval("data_range", data_range)
        self.loss = loss if callable(loss) else check_choice("loss", loss, LOSSES)
        self.target = check_target(target)
        if is_untargeted_loss(self.loss) and self.target is not None:
            raise ValueError(
                f"loss {self.loss!r} masks the pixels still classified correctly: it is an untargeted loss."
            )
        if inferer is not None and not isinstance(inferer, Inferer):
            raise TypeError(f"inferer must be a monai.inferers.Inferer or None, got {type(inferer).__name__}.")
        self.inferer = inferer

    def to_data_units(self, value: float) -> float:
        """``value`` in the attack's ``unit`` turned into data units."""
        return to_data_units(value, self.unit, self.data_range)

    @property
    def eps_data(self) -> float:
        """The budget ``eps`` in data units."""
        return self.to_data_units(self.eps)

    def __call__(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """
        Attack a batch.

        Args:
            network: a segmentation network, logits ``(B, C, *spatial)`` in eval mode (a list or tuple output is
                taken by its first element). Its modes, parameters, gradients and buffers are left as they were.
            images: ``(B, C_in, *spatial)`` floating point, inside ``data_range``.
            labels: true class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``.

        Returns:
            adversarial images, detached, same type, shape, dtype and device as ``images``.
        """
        return self.with_record(network, images, labels)[0]

    def with_record(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """
        Attack a batch as :py:meth:`__call__` does, and say what the attack chose for each image.

        Returns:
            ``(adversarial images, records)``: the images as :py:meth:`__call__` returns them, and one JSON-able
            dict per image from :py:meth:`perturb_with_record` (empty for an attack that makes no per-image choice).
        """
        with self.attack_context(network, images, labels) as (objective, x):
            adv, records = self.perturb_with_record(objective, x)
        adv = adv.detach().to(dtype=images.dtype)
        return convert_to_dst_type(adv, images)[0], records

    @contextmanager
    def attack_context(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> Iterator[tuple[AttackObjective, torch.Tensor]]:
        """
        What an attack runs in: checks the inputs, enables gradients (also inside ``torch.no_grad`` or
        ``torch.inference_mode``), puts the network in eval mode (:py:func:`~monai_ext.attacks.objective.attack_mode`) and yields the objective (of
        the network run through the attack's ``inferer``) and the clean images as a plain tensor.
        """
        network = with_inferer(network, self.inferer)
        check_image_batch(images, self.data_range)
        x = as_plain(images).detach()
        y = check_label_shape(as_plain(labels), x).detach().to(x.device)
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()  # a normal tensor even if the batch was made in inference mode
            y = y.clone()
            objective = AttackObjective(network, x, y, self.loss, self.target)
            with attack_mode(network) if isinstance(network, nn.Module) else nullcontext():
                yield objective, x

    def perturb_with_record(
        self, objective: AttackObjective, images: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """
        :py:meth:`perturb` and one record per image of the choices it made (the signs of sign-selection FGSM, the
        class order of layered PGD). By default no choice is recorded: an empty dict per image.
        """
        return self.perturb(objective, images), [{} for _ in range(images.shape[0])]

    @abstractmethod
    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        """
        Compute the adversarial images.

        Args:
            objective: gives the ascent direction ``objective.gradient(x)`` at any ``x``.
            images: clean images ``(B, C_in, *spatial)``, a plain tensor, inside ``data_range``.

        Returns:
            adversarial images, same shape, inside the attack's ball and ``data_range``.
        """

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{self.__class__.__name__}({args})"

    def settings(self) -> dict:
        """The attack's settings (``eps``, ``unit``, ... as given; ``inferer`` described, when it is not plain), for
        logs and results files."""
        settings = {
            "eps": self.eps,
            "unit": self.unit,
            "data_range": self.data_range,
            "loss": self.loss,
            "target": self.target,
        }
        inferer = describe_inferer(self.inferer)
        return settings if inferer is None else {**settings, "inferer": inferer}
