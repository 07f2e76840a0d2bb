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
Sign-selection FGSM, method 2 of the robust training paper (Avramidis et al., "Robustness in Medical AI: a training
scheme for more robust semantic segmentation", draft, eq. 3-5): per class ``c`` an FGSM step toward or away from the
full-area target ``c``, or none, chosen so that the loss on the true labels is lowest.

The search is written once, over directions given as a tensor (:func:`sign_combinations`, :func:`candidate_losses`,
:func:`exhaustive_signs`, :func:`greedy_signs`), and :py:class:`SignSelectionFGSM` computes the paper's directions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from monai_ext.attacks.base import Attack
from monai_ext.attacks.losses import attack_loss
from monai_ext.attacks.objective import AttackObjective, network_logits
from monai_ext.utils.checks import check_choice, check_interval, check_positive_int

__all__ = [
    "SEARCHES",
    "SignSelectionFGSM",
    "apply_signs",
    "candidate_losses",
    "exhaustive_signs",
    "greedy_signs",
    "sign_combinations",
]

SEARCHES = ("exhaustive", "greedy")

Network = Callable[[torch.Tensor], torch.Tensor]


def sign_combinations(num_classes: int) -> torch.Tensor:
    """
    Every sign vector ``s`` in ``{-1, 0, +1}^C``, ``3^C`` rows ``(3^C, C)`` (int64), in the order that breaks ties:
    fewer non-zero signs first, then lexicographically with ``-1 < 0 < +1``. Row 0 is all zeros (the clean image).
    """
    num_classes = check_positive_int("num_classes", num_classes)
    rows = sorted(itertools.product((-1, 0, 1), repeat=num_classes), key=lambda s: (sum(v != 0 for v in s), s))
    return torch.tensor(rows, dtype=torch.long)


def apply_signs(
    images: torch.Tensor, directions: torch.Tensor, signs: torch.Tensor, data_range: Sequence[float]
) -> torch.Tensor:
    """
    ``clip(x + sum_c s_c a_c)``: the image the signs choose (eq. 5 of the paper, with one sign per class).

    Args:
        images: ``(B, C_in, *spatial)``.
        directions: ``(B, C, C_in, *spatial)``, ``a_c`` of each image, in data units.
        signs: ``(B, C)`` in ``{-1, 0, 1}``.
        data_range: ``(min, max)`` to clip to.

    Returns:
        ``(B, C_in, *spatial)``.
    """
    low, high = check_interval("data_range", data_range)
    weights = signs.to(directions.dtype).view(*signs.shape, *[1] * (directions.ndim - 2))
    return (images + (weights * directions).sum(dim=1)).clamp(low, high)


def candidate_losses(
    network: Network,
    images: torch.Tensor,
    labels: torch.Tensor,
    directions: torch.Tensor,
    signs: torch.Tensor,
    data_range: Sequence[float],
    loss: str | Callable = "ce",
    chunk_size: int = 64,
) -> torch.Tensor:
    """
    The loss of every candidate image ``clip(x_b + sum_c signs[k, c] a_{b, c})`` against the true labels ``y_b``, for
    every image ``b`` and sign row ``k``, with batched forward passes of at most ``chunk_size`` candidates (the
    (image, sign row) pairs are taken in order, so a chunk may hold candidates of several images).

    Args:
        network: the network, or any callable ``(N, C_in, *spatial) -> (N, C, *spatial)`` logits
            (:py:class:`SignSelectionFGSM` passes its objective's :py:meth:`~monai_ext.attacks.AttackObjective.logits`),
            in the mode to evaluate (eval mode).
        images: ``(B, C_in, *spatial)``.
        labels: ``(B, 1, *spatial)`` class indices.
        directions: ``(B, C, C_in, *spatial)``.
        signs: ``(K, C)`` sign rows, or ``(B, K, C)`` for rows of each image.
        data_range: ``(min, max)`` to clip to.
        loss: ``"ce"``, ``"dice"`` or a callable ``(logits, labels) -> scalar`` (called per candidate): the loss of
            each candidate, :py:func:`~monai_ext.attacks.losses.attack_loss` with ``reduction="none"``.
        chunk_size: candidates per forward pass, ``>= 1``: memory stays bounded by it.

    Returns:
        ``(B, K)`` losses.
    """
    chunk_size = check_positive_int("chunk_size", chunk_size)
    batch = images.shape[0]
    rows = signs.to(images.device).expand(batch, *signs.shape[-2:]) if signs.ndim == 2 else signs.to(images.device)
    num = rows.shape[1]
    flat_rows = rows.reshape(batch * num, -1)
    owner = torch.arange(batch, device=images.device).repeat_interleave(num)
    out = torch.empty(batch * num, dtype=images.dtype, device=images.device)
    with torch.no_grad():
        for start in range(0, batch * num, chunk_size):
            index = owner[start : start + chunk_size]
            candidates = apply_signs(
                images[index], directions[index], flat_rows[start : start + chunk_size], data_range
            )
            logits = network_logits(network, candidates)
            out[start : start + chunk_size] = attack_loss(logits, labels[index], loss, reduction="none")
    return out.view(batch, num)


def exhaustive_signs(
    network: Network,
    images: torch.Tensor,
    labels: torch.Tensor,
    directions: torch.Tensor,
    data_range: Sequence[float],
    loss: str | Callable = "ce",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The signs of lowest loss over all ``3^C`` combinations (:func:`sign_combinations`; ties go to the first in its
    order: fewer non-zero signs), evaluated with :func:`candidate_losses`.

    Returns:
        ``(signs (B, C) int64, losses (B,))``.
    """
    table = sign_combinations(directions.shape[1]).to(images.device)
    losses = candidate_losses(network, images, labels, directions, table, data_range, loss, chunk_size)
    best = losses.argmin(dim=1)  # the first of equal minima: the order of ``table`` breaks ties
    return table[best], losses.gather(1, best[:, None])[:, 0]


def greedy_signs(
    network: Network,
    images: torch.Tensor,
    labels: torch.Tensor,
    directions: torch.Tensor,
    data_range: Sequence[float],
    loss: str | Callable = "ce",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    One sweep of coordinate descent over the classes, from all signs 0: for class ``c = 0, 1, ...``, try
    ``s_c = -1`` and ``s_c = +1`` with the other signs as chosen so far, and keep the lowest of the three losses
    (ties: ``0``, then ``-1``). ``1 + 2 C`` candidates per image instead of ``3^C``; the exhaustive optimum when the
    loss is separable (a sum of one term per sign), else a local one.

    Returns:
        ``(signs (B, C) int64, losses (B,))``.
    """
    batch, num_classes = directions.shape[:2]
    signs = torch.zeros(batch, num_classes, dtype=torch.long, device=images.device)
    zero = torch.zeros(1, num_classes, dtype=torch.long, device=images.device)
    best = candidate_losses(network, images, labels, directions, zero, data_range, loss, chunk_size)[:, 0]
    for c in range(num_classes):
        tries = signs[:, None, :].repeat(1, 2, 1)
        tries[:, 0, c], tries[:, 1, c] = -1, 1
        losses = candidate_losses(network, images, labels, directions, tries, data_range, loss, chunk_size)
        pick = losses.argmin(dim=1)  # -1 before +1 on a tie
        lower = losses.gather(1, pick[:, None])[:, 0] < best  # strictly lower than keeping s_c = 0
        signs[lower, c] = torch.where(pick[lower] == 0, -1, 1)
        best = torch.where(lower, losses.gather(1, pick[:, None])[:, 0], best)
    return signs, best


class SignSelectionFGSM(Attack):
    """
    Sign-selection FGSM (eq. 3-5 of the robust training paper). For each class ``c`` of the network, the FGSM
    direction toward the full-area target of ``c``,

        ``a_c = eps * sign(grad_x J(x, c))``,  ``J`` the loss on the target "every pixel of class ``c``",

    then signs ``s_c`` in ``{-1, 0, +1}`` chosen so that the loss of ``clip(x + sum_c s_c a_c)`` on the true labels
    is lowest (``s_c = -1`` moves the image toward class ``c``, ``+1`` away from it, ``0`` leaves it). The search:

    - ``"exhaustive"``: all ``3^C`` sign vectors, evaluated in batched forward passes of ``chunk_size`` candidates;
      ties go to fewer non-zero signs (the clean image wins a tie against any change). ``C = 4``: 81 candidates.
    - ``"greedy"``: one sweep of coordinate descent from all zeros, ``1 + 2 C`` candidates (for many classes);
      equal to the exhaustive result when the loss is separable over the classes.

    Each ``a_c`` has L-inf norm ``eps`` (before clipping), so the image moves at most ``eps`` times the number of
    non-zero signs from the clean image. The attack needs ``C`` input gradients and then only forward passes.

    :py:meth:`with_record` gives, per image, ``{"signs": [s_0, ..., s_{C-1}], "loss": ..., "clean_loss": ...}``:
    the chosen signs (the gap the paper names), the loss of the chosen image and of the clean image;
    :py:meth:`apply` rebuilds the image from recorded signs.

    Args:
        eps: the FGSM step ``eps`` in ``unit``, ``>= 0``.
        search: ``"exhaustive"`` (default) or ``"greedy"``.
        chunk_size: candidates per forward pass of the search, ``>= 1``.
        unit: ``"levels"`` or ``"fraction"``; see :py:func:`monai_ext.attacks.ball.to_data_units`.
        data_range: ``(min, max)`` intensity range of the images.
        loss: ``"ce"`` (the paper's cross-entropy, default) or ``"dice"``, or a callable
            ``(logits, labels) -> scalar``: both the ``J`` of the directions and the loss the signs minimise.
        inferer: a MONAI inferer the network is run through; see :py:class:`~monai_ext.attacks.base.Attack`.

    Example::

        attack = SignSelectionFGSM(eps=0.01, unit="fraction")
        images_out, records = attack.with_record(network, images, labels)  # records[b]["signs"]: [0, -1, 1, 0]
        again = attack.apply(network, images, [r["signs"] for r in records])  # == images_out
    """

    def __init__(
        self,
        eps: float,
        search: str = "exhaustive",
        chunk_size: int = 64,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: str | Callable = "ce",
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps=eps, unit=unit, data_range=data_range, loss=loss, target=None, inferer=inferer)
        self.search = check_choice("search", search, SEARCHES)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)

    def directions(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        """
        ``a_c = eps * sign(grad_x J(x, c))`` for every class ``c`` of the network: ``(B, C, C_in, *spatial)``
        (``C`` from one forward pass; 2 for a single-logit network).
        """
        num_classes = max(int(objective.logits(images).shape[1]), 2)
        eps, steps = self.eps_data, []
        for c in range(num_classes):  # a targeted objective ascends -J: negate
            steps.append(-eps * objective.with_target(c).gradient(images).sign())
        return torch.stack(steps, dim=1)

    def perturb_with_record(
        self, objective: AttackObjective, images: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        directions = self.directions(objective, images)
        search = exhaustive_signs if self.search == "exhaustive" else greedy_signs
        args = (objective.logits, images, objective.labels, directions, self.data_range, self.loss, self.chunk_size)
        signs, losses = search(*args)
        zero = torch.zeros(1, directions.shape[1], dtype=torch.long, device=images.device)
        clean = candidate_losses(*args[:4], zero, *args[4:])[:, 0]
        records = [
            {"signs": s.tolist(), "loss": float(v), "clean_loss": float(c)} for s, v, c in zip(signs, losses, clean)
        ]
        return apply_signs(images, directions, signs, self.data_range), records

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        return self.perturb_with_record(objective, images)[0]

    def apply(
        self, network: Network, images: torch.Tensor, signs: torch.Tensor | Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """
        Rebuild the images of recorded signs: the directions ``a_c`` recomputed on ``network`` (they do not depend on
        the labels), then ``clip(x + sum_c s_c a_c)``.

        Args:
            network: the network the signs were chosen on.
            images: the clean images ``(B, C_in, *spatial)``.
            signs: ``(B, C)`` recorded signs.

        Returns:
            the images, as :py:meth:`__call__` gives them for those signs.
        """
        picked = torch.as_tensor(signs, dtype=torch.long, device=images.device)
        apply = _FixedSigns(self, picked)
        return apply(network, images, torch.zeros_like(images[:, :1]))

    def settings(self) -> dict:
        settings = {**super().settings(), "search": self.search, "chunk_size": self.chunk_size}
        del settings["target"]  # one full-area target per class
        return settings


class _FixedSigns(Attack):
    """The images of given signs over the directions of ``attack``: :py:meth:`SignSelectionFGSM.apply`."""

    def __init__(self, attack: SignSelectionFGSM, signs: torch.Tensor) -> None:
        super().__init__(
            eps=attack.eps, unit=attack.unit, data_range=attack.data_range, loss=attack.loss, inferer=attack.inferer
        )
        self.attack, self.signs = attack, signs

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        directions = self.attack.directions(objective, images)
        if tuple(self.signs.shape) != tuple(directions.shape[:2]):
            raise ValueError(
                f"signs of shape {tuple(self.signs.shape)} do not match {directions.shape[0]} images and "
                f"{directions.shape[1]} classes."
            )
        return apply_signs(images, directions, self.signs, self.data_range)
