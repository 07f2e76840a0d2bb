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
The worst case over several attacks per image, as the segmentation ensemble attack SEA of Croce, Singh and Hein,
"Towards Reliable Evaluation and Fast Training of Robust Semantic Segmentation Models", ECCV 2024,
https://arxiv.org/abs/2306.12941, keeps per image the result of whichever of its attacks hurt most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from torch import nn

from monai_ext.attacks.apgd import APGD
from monai_ext.attacks.cospgd import CosPGD
from monai_ext.attacks.inferer import describe_inferer, with_inferer
from monai_ext.attacks.objective import AttackObjective, attack_mode, predicted_classes
from monai_ext.attacks.sea import SEA_STEPS, pixel_accuracy_score, sea_members
from monai_ext.attacks.segpgd import SegPGD
from monai_ext.metrics.per_image import compute_per_image_dice
from monai_ext.utils.checks import check_callable, check_choice, check_label_shape, check_positive_int

__all__ = ["ENSEMBLE_PRESETS", "WorstCaseAttack", "dice_score", "ensemble_attack"]

#: the presets of :py:func:`ensemble_attack`
ENSEMBLE_PRESETS = ("broad", "sea")

AttackLike = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def dice_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """
    The Dice of each image's prediction (:py:func:`~monai_ext.attacks.objective.predicted_classes`: the argmax, or a
    single logit ``> 0``) against its labels: :py:func:`monai_ext.metrics.compute_per_image_dice`, the mean over the
    foreground classes (background excluded; a class absent from both counts 1, from the labels only 0).

    Args:
        logits: ``(B, C, *spatial)``.
        labels: class indices ``(B, 1, *spatial)``.

    Returns:
        ``(B,)`` in ``[0, 1]``, float64.
    """
    num_classes = max(logits.shape[1], 2)
    return compute_per_image_dice(predicted_classes(logits, keepdim=True), labels, num_classes=num_classes)


class WorstCaseAttack:
    """
    Run several attacks on a batch and keep, per image, the adversarial image with the lowest ``score`` (Dice by
    default): the worst case over the attacks, never better for the network than any one of them. Ties go to the
    earlier attack. Each attack sees the clean batch.

    After each call, ``winners`` holds per image the index of the attack whose image was kept, and ``wins`` counts
    the images each attack won over all calls (``names`` gives the attacks' class names).

    Args:
        attacks: the attacks, callables ``(network, images, labels) -> images``.
        score: ``(logits, labels) -> (B,)``, lower is worse for the network; :py:func:`dice_score` by default.
        inferer: a MONAI inferer the network is run through, by every attack and by the score
            (:py:func:`~monai_ext.attacks.with_inferer`); ``None``: the network as it is handed over.

    Example::

        attack = WorstCaseAttack([APGD(8, loss="ce"), APGD(8, loss="jsd"), SegPGD(8, 2, 100)])
        adv = attack(network, images, labels)  # images (B, C, *spatial), labels (B, 1, *spatial)
        attack.winners  # (B,) index of the attack kept per image
    """

    def __init__(
        self,
        attacks: Sequence[AttackLike],
        score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = dice_score,
        inferer: Inferer | None = None,
    ) -> None:
        if isinstance(attacks, (str, bytes)) or not isinstance(attacks, Sequence) or not attacks:
            raise ValueError(f"attacks must be a non-empty sequence of attacks, got {attacks!r}.")
        self.attacks = [check_callable("attacks", a, "a callable (network, images, labels) -> images") for a in attacks]
        self.score = check_callable("score", score, "a callable (logits, labels) -> per-image scores (B,)")
        self.inferer = inferer
        self.names = [type(a).__name__ for a in self.attacks]
        self.wins = [0] * len(self.attacks)
        self.winners: torch.Tensor | None = None

    def __call__(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            network: the network, logits ``(B, C, *spatial)`` in eval mode.
            images: ``(B, C_in, *spatial)``.
            labels: true class indices ``(B, 1, *spatial)``.

        Returns:
            the worst adversarial image per image, as the attacks return them (type, dtype, device of ``images``).
        """
        network = with_inferer(network, self.inferer)
        best, best_score, winners = None, None, None
        for index, attack in enumerate(self.attacks):
            adv = attack(network, images, labels)
            score = self._score(network, adv, labels)
            if best is None:
                best, best_score, winners = adv, score, torch.zeros_like(score, dtype=torch.long)
                continue
            worse = score < best_score
            best = torch.where(worse.view(-1, *[1] * (adv.ndim - 1)), adv, best)
            best_score = torch.where(worse, score, best_score)
            winners = torch.where(worse, index, winners)
        self.winners = winners.cpu()
        for index in self.winners.tolist():
            self.wins[index] += 1
        return convert_to_dst_type(best, images)[0]

    def _score(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with attack_mode(network) if isinstance(network, nn.Module) else nullcontext():
            logits = AttackObjective(network, images, labels).logits(images)
        labels = check_label_shape(labels, logits).to(logits.device)
        return torch.as_tensor(self.score(logits, labels)).flatten().to(logits.device)

    def win_counts(self) -> dict[str, int]:
        """
        ``wins`` by attack name; a class that appears more than once is told apart by its loss (``"APGD (jsd)"``)
        or, failing that, its position (``"PGD #2"``).
        """
        keys = []
        for index, (name, attack) in enumerate(zip(self.names, self.attacks)):
            if self.names.count(name) > 1:
                loss = getattr(attack, "loss", None)
                name = f"{name} ({loss})" if isinstance(loss, str) else f"{name} #{index + 1}"
            keys.append(name if name not in keys else f"{name} #{index + 1}")
        return dict(zip(keys, self.wins))

    def settings(self) -> dict:
        """The attacks' names and settings and the score (and the inferer, when it is not plain), for logs and results
        files."""
        settings = {
            "attacks": [{"name": n, **getattr(a, "settings", dict)()} for n, a in zip(self.names, self.attacks)],
            "score": getattr(self.score, "__qualname__", repr(self.score)),
        }
        inferer = describe_inferer(self.inferer)
        return settings if inferer is None else {**settings, "inferer": inferer}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.attacks))})"


def ensemble_attack(
    eps: float,
    num_steps: int | None = None,
    norm: str = "linf",
    unit: str = "levels",
    data_range: Sequence[float] = (0.0, 1.0),
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    inferer: Inferer | None = None,
    preset: str = "broad",
    class_weights: Sequence[float] | None = None,
) -> WorstCaseAttack:
    """
    A worst case per image (:py:class:`WorstCaseAttack`) over a preset of attacks, all untargeted:

    - ``"broad"`` (default): APGD with the cross-entropy, APGD with the Jensen-Shannon divergence and with the masked
      cross-entropy, SegPGD and CosPGD, ``num_steps`` steps each (100 by default), from the clean images (APGD from a
      seeded random start); SegPGD and CosPGD take the step ``alpha = 2.5 eps / num_steps`` (Madry et al.'s rule); the
      worst by Dice (:py:func:`dice_score`).
    - ``"sea"``: SEA (Croce, Singh and Hein, ECCV 2024) as its paper reports it: APGD with its three losses
      (:py:func:`~monai_ext.attacks.sea.sea_members`: class-balanced masked CE, masked CE, JSD; radius reduction,
      random start), ``num_steps`` steps each (300 by default), the worst by pixel accuracy
      (:py:func:`~monai_ext.attacks.sea.pixel_accuracy_score`), as SEA chooses; ``score=dice_score`` keeps the worst
      by Dice instead.

    Args:
        eps: the budget in ``unit``.
        num_steps: steps of each attack, ``>= 1``; ``None``: the preset's (100, or SEA's 300).
        norm: ``"linf"`` or ``"l2"``.
        unit: ``"levels"`` or ``"fraction"``.
        data_range: ``(min, max)`` intensity range of the images.
        score: see :py:class:`WorstCaseAttack`; ``None``: the preset's.
        inferer: see :py:class:`WorstCaseAttack`.
        preset: ``"broad"`` or ``"sea"``.
        class_weights: ``"sea"`` only: the balanced loss's class weights; ``None``: from each image's label.
    """
    preset = check_choice("preset", preset, ENSEMBLE_PRESETS)
    common = {"norm": norm, "unit": unit, "data_range": data_range}
    if preset == "sea":
        num_steps = SEA_STEPS if num_steps is None else check_positive_int("num_steps", num_steps)
        members = sea_members(eps, num_steps, class_weights=class_weights, **common)
        return WorstCaseAttack(members, pixel_accuracy_score if score is None else score, inferer)
    if class_weights is not None:
        raise ValueError("class_weights are the 'sea' preset's (its balanced loss); the 'broad' preset takes none.")
    num_steps = 100 if num_steps is None else check_positive_int("num_steps", num_steps)
    alpha = 2.5 * eps / num_steps
    return WorstCaseAttack(
        [
            APGD(eps, num_steps, loss="ce", **common),
            APGD(eps, num_steps, loss="jsd", **common),
            APGD(eps, num_steps, loss="masked_ce", **common),
            SegPGD(eps, alpha, num_steps, random_start=False, **common),
            CosPGD(eps, alpha, num_steps, random_start=False, **common),
        ],
        dice_score if score is None else score,
        inferer,
    )
