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
Gradient perturbation (GP): Taghanaki, Abhishek and Hamarneh, "Improved Inference via Deep Input Transfer", MICCAI
2019, https://arxiv.org/abs/1904.02307, eq. 3-6. The input of a trained segmenter is moved toward the input whose
segmentation is the ground truth, by gradient descent on a logit difference.

Not a sign attack run backwards: the step is the raw input gradient scaled by its L-inf norm, not its sign, and no
epsilon ball bounds the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from torch import nn

from monai_ext.attacks.inferer import describe_inferer, with_inferer
from monai_ext.attacks.losses import two_class_logits
from monai_ext.attacks.objective import AttackObjective, as_plain, attack_mode, predicted_classes
from monai_ext.attacks.worst_case import dice_score
from monai_ext.utils.checks import (
    check_fraction,
    check_image_batch,
    check_interval,
    check_label_shape,
    check_non_negative_int,
    check_positive,
)

__all__ = ["GPResult", "GradientPerturbation", "gp_objective", "matches_label"]

logger = logging.getLogger(__name__)


class GPResult(NamedTuple):
    """What :py:meth:`GradientPerturbation.perturb` returns for a batch of ``B`` images."""

    #: ``I + Delta``, the perturbed images, same shape, type and device as the input images.
    images: torch.Tensor
    #: ``Delta = I_K - I``, the total perturbation, same shape (a plain tensor).
    delta: torch.Tensor
    #: the number of steps taken per image, ``(B,)`` long: 0 for an image already segmented right.
    iterations: torch.Tensor
    #: whether the prediction of each perturbed image matches its label (pixel error 0, or within the Dice
    #: tolerance), ``(B,)`` bool.
    converged: torch.Tensor


def gp_objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """
    The objective ``G`` of GP (eq. 3) per image: the sum over the pixels of the logit of the predicted class minus the
    logit of the true class. The predicted class is the argmax of ``logits`` (taken without gradient), so a pixel
    segmented right contributes zero, and ``G >= 0`` with ``G == 0`` exactly when every pixel is right (up to ties).

    Args:
        logits: ``(B, C, *spatial)``; ``C == 1`` is a binary network with a single logit ``z`` (class 1 when ``z > 0``),
            read as the two logits ``(0, z)``.
        labels: true class indices ``(B, 1, *spatial)``, any dtype.

    Returns:
        ``G`` per image, ``(B,)``, differentiable with respect to ``logits``.
    """
    logits = two_class_logits(logits)
    predicted = predicted_classes(logits.detach(), keepdim=True)
    difference = logits.gather(1, predicted) - logits.gather(1, labels.long())
    return difference.flatten(1).sum(dim=1)


def _gp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``G`` summed over the batch: its input gradient is each image's own ``grad G`` (the images do not interact)."""
    return gp_objective(logits, labels).sum()


def matches_label(logits: torch.Tensor, labels: torch.Tensor, dice_tolerance: float = 0.0) -> torch.Tensor:
    """
    Whether each image's prediction matches its label: no pixel wrong (``dice_tolerance == 0``), or a Dice of at least
    ``1 - dice_tolerance`` (:py:func:`~monai_ext.attacks.dice_score`: the mean over the foreground classes, a class
    absent from both prediction and label counting 1).

    Args:
        logits: ``(B, C, *spatial)`` (``C == 1``: a single-logit binary network).
        labels: class indices ``(B, 1, *spatial)``.
        dice_tolerance: in ``[0, 1]``.

    Returns:
        ``(B,)`` bool.
    """
    if dice_tolerance == 0:
        return (predicted_classes(logits, keepdim=True) == labels.long()).flatten(1).all(dim=1)
    return dice_score(logits, labels) >= 1.0 - dice_tolerance


class GradientPerturbation:
    """
    Gradient perturbation (GP) of Taghanaki et al. (MICCAI 2019, eq. 3-6): from ``I^(0) = I``, iterate

    ``I^(k+1) = I^(k) - gamma * grad G(I^(k)) / ||grad G(I^(k))||_inf``,
    ``G(I) = sum over pixels of f_pred(I) - f_gt(I)``

    per image, with ``f_pred`` the logit of the class the network predicts at each pixel (recomputed at every
    iteration) and ``f_gt`` the logit of the true class. An image stops when its prediction matches its label (no
    pixel wrong, or a mean foreground Dice within ``dice_tolerance`` of 1) or after ``num_steps`` (the paper's
    ``K``) steps, and returns ``I + Delta`` with ``Delta = I^(K) - I``.

    Sign: the paper writes ``+ gamma * delta'`` (eq. 4) but calls the method gradient descent, and descending ``G``
    is what lowers the segmentation error (``G >= 0``, zero when the segmentation is right); this descends.
    ``Delta`` is the sum of the ``gamma``-scaled steps (eq. 4), the change of the image.

    Batched: the images still moving form the active batch; an image that stops leaves it, so it costs no further
    forward or backward pass, and its result is what a run on that image alone gives. An image whose input gradient
    is zero while it is still wrong cannot move again (the next gradient is the same): it stops there, not converged.

    No clipping by default (the paper lets the perturbed values leave the intensity range; its translator ends in
    a linear layer for that reason): the range the perturbed images reach is logged. ``clip_range`` clips after
    every step instead.

    Example::

        gp = GradientPerturbation(gamma=1.0, num_steps=100)
        perturbed = gp(network, images, labels)  # I + Delta, as an attack of monai_ext.attacks
        result = gp.perturb(network, images, labels)  # GPResult(images, delta, iterations, converged)

    Args:
        gamma: step size ``gamma`` in data units, ``> 0``: the largest change of any value in one step (the paper's
            GP_Ts and GP_cG use 1.0, its GP_T 0.1, on images it calls at most 1: with images in ``[0, 1]``, 1.0 is
            the whole range).
        num_steps: the most steps per image, ``K`` (100 in the paper), ``>= 0``.
        dice_tolerance: stop when the mean foreground Dice of the prediction is at least ``1 - dice_tolerance``;
            ``0`` (default) stops only at pixel error 0. In ``[0, 1]``.
        clip_range: ``(min, max)`` to clip the perturbed images to after each step (images outside it are refused),
            or ``None`` (default) not to clip.
        inferer: a MONAI inferer the network is run through (:py:func:`~monai_ext.attacks.with_inferer`); ``None``
            (default): the network as it is handed over.
    """

    def __init__(
        self,
        gamma: float = 1.0,
        num_steps: int = 100,
        dice_tolerance: float = 0.0,
        clip_range: Sequence[float] | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        self.gamma = check_positive("gamma", gamma)
        self.num_steps = check_non_negative_int("num_steps", num_steps)
        self.dice_tolerance = check_fraction("dice_tolerance", dice_tolerance)
        self.clip_range = None if clip_range is None else check_interval("clip_range", clip_range)
        self.inferer = inferer

    def __call__(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """``I + Delta`` for a batch, as an attack of :py:mod:`monai_ext.attacks`; see :py:meth:`perturb`."""
        return self.perturb(network, images, labels).images

    def perturb(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> GPResult:
        """
        Perturb a batch toward its labels.

        Args:
            network: a segmentation network, logits ``(B, C, *spatial)`` (a list or tuple output is taken by its first
                element), run in eval mode; its modes, parameters, gradients and buffers are left as they were.
            images: ``(B, C_in, *spatial)`` floating point, finite (inside ``clip_range`` when one is given).
            labels: true class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``.

        Returns:
            :py:class:`GPResult`: ``I + Delta`` (the type, dtype and device of ``images``), ``Delta``, the steps taken
            and whether each image converged, per image.
        """
        network = with_inferer(network, self.inferer)
        check_image_batch(images, self.clip_range or (-math.inf, math.inf))
        x = as_plain(images).detach()
        y = check_label_shape(as_plain(labels), x).detach().to(x.device)
        with torch.inference_mode(False), torch.enable_grad():
            x, y = x.clone(), y.clone()  # normal tensors even if the batch was made in inference mode
            with attack_mode(network) if isinstance(network, nn.Module) else nullcontext():
                perturbed, iterations, converged = self._descend(network, x, y)
        delta = perturbed - x
        if x.numel():
            logger.info(
                "gradient perturbation of %d images: %d converged, steps mean %.1f, max %d of %d; values reached "
                "[%.4g, %.4g] from [%.4g, %.4g]",
                x.shape[0], int(converged.sum()), iterations.double().mean().item(), int(iterations.max()),
                self.num_steps, perturbed.min().item(), perturbed.max().item(), x.min().item(), x.max().item(),
            )  # fmt: skip
        out = convert_to_dst_type(perturbed.to(dtype=images.dtype), images)[0]
        return GPResult(out, delta, iterations, converged)

    def with_record(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict[str, int | bool]]]:
        """
        ``I + Delta`` and one record per image, ``{"iterations": steps taken, "converged": bool}``, as the attacks'
        ``with_record``, so that ``monai_ext.transforms.Attackd(record_key=...)`` records GP as it records them.
        """
        result = self.perturb(network, images, labels)
        steps, done = result.iterations.tolist(), result.converged.tolist()
        return result.images, [{"iterations": k, "converged": c} for k, c in zip(steps, done, strict=True)]

    def _descend(
        self, network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The GP loop over the active batch: the perturbed images, the steps taken and the convergence per image."""
        batch = images.shape[0]
        x = images.clone()
        iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
        converged = torch.zeros(batch, dtype=torch.bool, device=x.device)
        active = torch.arange(batch, device=x.device)
        for step in range(self.num_steps + 1):
            if active.numel() == 0:
                break
            xa, ya = x[active], labels[active]
            # the objective checks the labels against the network's classes on its forward pass
            objective = AttackObjective(network, xa, ya, loss=_gp_loss)
            if step == self.num_steps:  # the budget is spent: a forward pass only, to tell which converged
                converged[active] = matches_label(objective.logits(xa), ya, self.dice_tolerance)
                break
            logits, grad = objective.logits_and_gradient(xa)
            done = matches_label(logits, ya, self.dice_tolerance)
            scale = grad.flatten(1).abs().amax(dim=1)
            converged[active[done]] = True
            moving = ~done & (scale > 0)  # a zero gradient on a wrong image: it cannot move again, it stops
            if not moving.any():
                break
            shape = (-1,) + (1,) * (grad.ndim - 1)
            new = xa[moving] - self.gamma * grad[moving] / scale[moving].view(shape)
            if self.clip_range is not None:
                new = new.clamp(*self.clip_range)
            active = active[moving]
            x[active] = new
            iterations[active] += 1
        return x, iterations, converged

    def settings(self) -> dict:
        """The settings (``gamma``, ``num_steps``, ...; ``inferer`` described, when it is not plain), for logs and
        dataset records."""
        settings = {
            "method": "gradient_perturbation",
            "gamma": self.gamma,
            "num_steps": self.num_steps,
            "dice_tolerance": self.dice_tolerance,
            "clip_range": None if self.clip_range is None else list(self.clip_range),
        }
        inferer = describe_inferer(self.inferer)
        return settings if inferer is None else {**settings, "inferer": inferer}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "method")
        return f"{self.__class__.__name__}({args})"
