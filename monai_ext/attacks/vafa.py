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
Volumetric adversarial frequency attack (VAFA): Hanif et al., "Frequency Domain Adversarial Training for Robust
Volumetric Medical Segmentation", MICCAI 2023, https://arxiv.org/abs/2307.07269 (code: asif-hanif/vafa). A learned
lossy compression: the blockwise 3D DCT coefficients are quantised with a quantisation table learned to raise the
segmentation loss, within ``q_max`` and a structural similarity bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.losses import SSIMLoss

from monai_ext.attacks.ball import LEVELS
from monai_ext.attacks.base import Attack
from monai_ext.attacks.block_dct import block_dct, block_idct
from monai_ext.attacks.losses import LossLike, attack_loss
from monai_ext.attacks.objective import AttackObjective, TargetLike
from monai_ext.utils.checks import (
    check_choice,
    check_fraction,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
    check_spatial_dims,
    check_spatial_size,
)

__all__ = ["VAFA", "quantise", "smooth_round"]

#: the sharpness of the smooth rounding at the first step; it falls linearly towards 0 (hard rounding) over the steps
ALPHA = 0.1
OPTIMIZERS = ("sign", "adam")


def smooth_round(z: torch.Tensor, alpha: float) -> torch.Tensor:
    """
    A differentiable rounding (AdvDrop, Duan et al., ICCV 2021, which VAFA's code uses): on each unit interval a tanh
    step of sharpness ``k = log(2 / alpha - 1)``, scaled to run from ``floor(z)`` to ``floor(z) + 1``,
    ``floor(z) + (1 + tanh(k (z - floor(z) - 1/2)) / tanh(k / 2)) / 2``. It is continuous, tends to ``round(z)`` as
    ``alpha -> 0`` and lies between ``z`` and ``round(z)`` (tanh is concave on the positive axis), so
    ``|smooth_round(z) - z| <= |round(z) - z| <= 1/2``.

    Args:
        z: any tensor.
        alpha: in ``(0, 1)``; smaller is closer to hard rounding.
    """
    k = math.log(2 / alpha - 1)
    floor = torch.floor(z)
    return floor + (1 + torch.tanh(k * (z - floor - 0.5)) / math.tanh(k / 2)) / 2


def quantise(coefficients: torch.Tensor, step: torch.Tensor, alpha: float) -> torch.Tensor:
    """
    Quantise and dequantise: ``smooth_round(coefficients / step, alpha) * step``, each coefficient to (nearly) the
    nearest multiple of its step. The error of each coefficient is at most half its step,
    ``|quantise(c, q, alpha) - c| <= q / 2`` (:py:func:`smooth_round`).

    Args:
        coefficients: DCT coefficients, any shape.
        step: the quantisation steps, ``> 0``, broadcastable to ``coefficients``, in the units of the coefficients.
        alpha: the sharpness of the rounding, in ``(0, 1)``.
    """
    return smooth_round(coefficients / step, alpha) * step


class VAFA(Attack):
    """
    Volumetric adversarial frequency attack: each image is cut into blocks (``8 x 8 x 8`` voxels by default; edges
    padded by replication), each block's orthonormal DCT coefficients ``c`` (of the image less the middle of
    ``data_range``, as JPEG centres 8-bit values on 128) are quantised with a quantisation table ``q``, one step per
    image, channel, block and coefficient, and the blocks are transformed back:
    ``x' = clip(IDCT(smooth_round(c / q) * q))`` (:py:func:`quantise`, :py:func:`smooth_round`). The table climbs
    the objective

        ``L(f(x'), y) - ssim_weight * max(0, ssim_threshold - SSIM(x, x'))``

    one step per iteration, clipped to ``[1, q_max]``. The gradient of ``L`` reaches ``q`` the way every attack of
    ``monai_ext`` takes it: ``g = objective.gradient(x')`` with respect to the input (through the attack's
    ``inferer``, a sliding window on whole volumes included), then back through the quantisation to ``q``
    (``torch.autograd.grad`` of ``x'`` with ``g`` as its output gradient). ``g`` is scaled by the batch size, so that
    every image climbs its own loss whatever the batch.

    Units: ``q``, ``q_init`` and ``q_max`` are quantisation steps in intensity levels of an 8-bit scale (``1 / 255``
    of ``data_range``), the units of the paper, which quantises the DCT of images scaled to ``[0, 255]``.

    Budget: this is not an attack in a voxel ball (``eps`` is ``inf``; no projection is made). Its budget is
    ``q_max``, a ball in the DCT domain: each coefficient moves by at most ``q / 2 <= q_max / 2`` levels, so each
    block moves by at most ``sqrt(sum_i (q_i / 2) ** 2) <= q_max / 2 * sqrt(block volume)`` levels in L2 norm (the
    DCT is orthonormal; clipping to ``data_range`` only moves values towards the clean ones). And a bound kept
    exactly: every returned image has ``SSIM(x, x') >= ssim_threshold`` (MONAI's SSIM with a Gaussian window of
    ``ssim_win_size``, per image, the mean over its channels). The result is, per image, the iterate of highest loss
    among those within the bound; an image whose iterates all fall below it is returned clean.

    From the paper (Algorithm 1, eq. 2): the blockwise 3D DCT, one table per block, sign steps of 1 level clipped to
    ``[1, q_max]``, 20 steps, blocks of 8, ``q_max = 20``, the Dice loss and an SSIM term. From the authors' code:
    the smooth rounding, its sharpness ``alpha`` falling from 0.1 towards 0 over the steps, the centring, and the
    start at ``q_max`` (``q_init=None``): Algorithm 1 starts at 1 (``q_init=1``), which in our tests stays near 1,
    weaker than a random table. Differences: the paper subtracts ``1 - SSIM`` (the hinge above with threshold 1) and
    keeps no bound; the code keeps ``q >= 5`` and rescales every slice of the result to ``[0, 1]``, which this attack
    does not (it clips to ``data_range``).

    Args:
        q_max: the largest quantisation step in levels, ``>= 1``; the paper uses 20 (and 10 to 80).
        q_init: the starting table, in ``[1, q_max]``; ``None`` (default): ``q_max``, as the authors' code.
        block_size: the block size, one int or one per spatial axis; the paper uses 8 (and 4 to 96; 32 in its table 5).
        num_steps: the number of iterations (forward and backward passes), ``>= 1``.
        lr: the step of ``q`` per iteration: in levels for ``optimizer="sign"``, Adam's learning rate for ``"adam"``.
        optimizer: ``"sign"``: ``q <- clip(q + lr * sign(grad_q))`` (the paper); ``"adam"``: Adam ascending with
            learning rate ``lr``, then the same clip.
        ssim_threshold: the bound every result keeps, ``SSIM(x, x') >= ssim_threshold``, in ``[0, 1]``.
        ssim_weight: the weight of the SSIM hinge in the objective, ``>= 0`` (the paper's 1).
        spatial_dims: 3 (volumes, 3D blocks: the paper) or 2 (images, 2D blocks).
        ssim_win_size: the size of SSIM's Gaussian window (sigma 1.5), at most the smallest image side.
        data_range: ``(min, max)`` intensity range of the images; results are clipped to it.
        loss: ``"dice"`` (default, the paper's), ``"ce"`` or a callable; see
            :py:func:`monai_ext.attacks.losses.attack_loss`.
        target: ``None`` (untargeted, default) or a target; see :py:func:`monai_ext.attacks.objective.resolve_target`.
        inferer: a MONAI inferer to run the network through; see :py:class:`~monai_ext.attacks.Attack`.

    Shapes: images ``(B, C, H, W, D)`` (``(B, C, H, W)`` with ``spatial_dims=2``) in ``data_range``, labels
    ``(B, 1, *spatial)`` class indices; the result has the shape of the images. :py:meth:`with_record` also gives, per
    image, the chosen iterate (``step``, ``None`` for the clean fallback), its ``ssim`` and its ``objective``.

    Example::

        attack = VAFA(q_max=20, block_size=8, num_steps=20, ssim_threshold=0.95)
        adv = attack(network, volumes, labels)  # volumes (B, 1, H, W, D) in [0, 1], labels (B, 1, H, W, D)
    """

    def __init__(
        self,
        q_max: float = 20.0,
        q_init: float | None = None,
        block_size: int | Sequence[int] = 8,
        num_steps: int = 20,
        lr: float = 1.0,
        optimizer: str = "sign",
        ssim_threshold: float = 0.95,
        ssim_weight: float = 1.0,
        spatial_dims: int = 3,
        ssim_win_size: int = 11,
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "dice",
        target: TargetLike = None,
        inferer: Inferer | None = None,
    ) -> None:
        super().__init__(eps=0.0, unit="levels", data_range=data_range, loss=loss, target=target, inferer=inferer)
        self.eps = math.inf  # no voxel ball: the budget is q_max and the SSIM bound
        self.q_max = check_number("q_max", q_max, low=1.0)
        self.q_init = None if q_init is None else check_number("q_init", q_init, low=1.0, high=self.q_max)
        self.spatial_dims = check_spatial_dims(spatial_dims, (2, 3))
        size = check_spatial_size("block_size", block_size, self.spatial_dims)
        sizes = [size] if isinstance(size, int) else size
        self.block_size = sizes * (self.spatial_dims // len(sizes))  # one size, or one per spatial axis
        self.num_steps = check_positive_int("num_steps", num_steps)
        self.lr = check_positive("lr", lr)
        self.optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
        self.ssim_threshold = check_fraction("ssim_threshold", ssim_threshold)
        self.ssim_weight = check_non_negative("ssim_weight", ssim_weight)
        self.ssim_win_size = check_positive_int("ssim_win_size", ssim_win_size)
        low, high = self.data_range
        self.ssim = SSIMLoss(self.spatial_dims, data_range=high - low, win_size=self.ssim_win_size, reduction="none")

    def compress(
        self, coefficients: torch.Tensor, q: torch.Tensor, alpha: float, spatial: Sequence[int]
    ) -> torch.Tensor:
        """
        The paper's frequency perturbation: the images of the quantised coefficients, clipped to ``data_range``.

        Args:
            coefficients: the blockwise DCT of the centred clean images, ``(B, C, *num_blocks, *block_size)``.
            q: the quantisation table in levels, same shape.
            alpha: the sharpness of the rounding, in ``(0, 1)``.
            spatial: the spatial shape of the images.

        Returns:
            ``(B, C, *spatial)``.
        """
        low, high = self.data_range
        step = q * ((high - low) / LEVELS)
        return (block_idct(quantise(coefficients, step, alpha), spatial) + (low + high) / 2).clamp(low, high)

    def _objective_values(self, objective: AttackObjective, logits: torch.Tensor) -> torch.Tensor:
        """Per image, the loss on the true labels, or minus the loss on the target labels: ``(B,)``."""
        value = attack_loss(logits, objective.objective_labels, self.loss, reduction="none")
        return -value if objective.targeted else value

    def perturb(self, objective: AttackObjective, images: torch.Tensor) -> torch.Tensor:
        return self.perturb_with_record(objective, images)[0]

    def perturb_with_record(
        self, objective: AttackObjective, images: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        spatial = images.shape[2:]
        if len(spatial) != self.spatial_dims or min(spatial) < self.ssim_win_size:
            raise ValueError(
                f"VAFA with spatial_dims={self.spatial_dims} and ssim_win_size={self.ssim_win_size} needs images "
                f"(B, C, *spatial) with {self.spatial_dims} spatial axes of at least {self.ssim_win_size}, got shape "
                f"{tuple(images.shape)}."
            )
        low, high = self.data_range
        coefficients = block_dct(images - (low + high) / 2, self.block_size)
        q = torch.full_like(coefficients, self.q_max if self.q_init is None else self.q_init, requires_grad=True)
        adam = torch.optim.Adam([q], lr=self.lr, maximize=True) if self.optimizer == "adam" else None
        batch = images.shape[0]
        best, best_value = images.clone(), torch.full((batch,), -math.inf, device=images.device)
        best_ssim = torch.ones(batch, device=images.device)
        best_step = torch.full((batch,), -1, dtype=torch.long, device=images.device)
        for step in range(self.num_steps):
            adv = self.compress(coefficients, q, ALPHA * (1 - step / self.num_steps), spatial)
            logits, grad = objective.logits_and_gradient(adv.detach())
            ssim = 1 - self.ssim(adv, images).view(-1)
            value = self._objective_values(objective, logits).to(best_value.dtype)
            better = (ssim.detach() >= self.ssim_threshold) & (value > best_value)
            best = torch.where(better.view(-1, *[1] * (images.ndim - 1)), adv.detach(), best)
            best_value = torch.where(better, value, best_value)
            best_ssim = torch.where(better, ssim.detach().to(best_ssim.dtype), best_ssim)
            best_step = torch.where(better, step, best_step)
            if step + 1 == self.num_steps:
                break
            penalty = F.relu(self.ssim_threshold - ssim).sum()
            (grad_q,) = torch.autograd.grad((adv * grad).sum() * batch - self.ssim_weight * penalty, q)
            with torch.no_grad():
                if adam is None:
                    q += self.lr * grad_q.sign()
                else:
                    q.grad = grad_q
                    adam.step()
                q.clamp_(1.0, self.q_max)
        records = [
            {"step": s, "ssim": m, "objective": v} if s >= 0 else {"step": None, "ssim": 1.0, "objective": None}
            for s, m, v in zip(best_step.tolist(), best_ssim.tolist(), best_value.tolist())
        ]
        return best, records

    def settings(self) -> dict:
        settings = {k: v for k, v in super().settings().items() if k not in ("eps", "unit")}
        return {
            **settings,
            "q_max": self.q_max,
            "q_init": self.q_init,
            "block_size": self.block_size,
            "num_steps": self.num_steps,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "ssim_threshold": self.ssim_threshold,
            "ssim_weight": self.ssim_weight,
            "spatial_dims": self.spatial_dims,
            "ssim_win_size": self.ssim_win_size,
        }
