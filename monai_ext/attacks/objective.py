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
What an attack climbs and how it runs its network: :py:func:`check_target` and :py:func:`resolve_target` (the labels
a targeted attack descends to: ``"inverse"``, a full-area class, a callable), :py:func:`attack_mode` (the network in
eval mode during the attack, every module's mode restored afterwards), :py:func:`network_logits`,
:py:func:`~monai_ext.attacks.losses.predicted_classes` (the prediction an attack reads off the logits, re-exported
here), and :py:class:`AttackObjective`, the one door through which an attack runs its network: the logits, and the gradient of
the loss with respect to the input only (window chunk by window chunk through a sliding window,
:py:mod:`monai_ext.attacks.sliding_window`).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from monai.data import MetaTensor
from torch import nn

from monai_ext.attacks.losses import LossLike, attack_loss, predicted_classes
from monai_ext.attacks.sliding_window import sliding_window_gradient, windowed
from monai_ext.utils.checks import check_class_indices, check_label_shape

__all__ = [
    "AttackObjective",
    "TargetLike",
    "as_plain",
    "attack_mode",
    "check_target",
    "network_logits",
    "predicted_classes",
    "resolve_target",
]

TargetLike = None | str | int | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def attack_mode(network: nn.Module) -> Iterator[nn.Module]:
    """
    Put ``network`` in eval mode for an attack and give every module back its own mode afterwards.

    Eval mode makes the attack see the network that predicts at test time (batch norm with running statistics,
    which it then does not update, no dropout, one output for a network with deep supervision). Each module's mode is
    restored, not just the top one, so a network with some modules frozen in eval mode keeps them so.
    """
    modes = [(module, module.training) for module in network.modules()]
    if not any(training for _, training in modes):  # in eval mode throughout already: nothing to set or restore
        # (``eval`` and ``train`` recurse through ``nn.Module.__setattr__``: 1.5 ms a call for MONAI's U-Net)
        yield network
        return
    network.eval()
    try:
        yield network
    finally:
        # one recursive ``train`` from the top, then only the modules whose own mode differs from it (``train``
        # recurses, so restoring every module one by one costs quadratic time in the network's depth)
        top_mode = modes[0][1]
        network.train(top_mode)
        for module, training in modes[1:]:
            if training != top_mode:
                module.training = training


def network_logits(network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """
    The logits of ``network`` on ``images``: the output, or its first element when the network returns a list or tuple
    (deep supervision, refined prediction first).

    Raises:
        ValueError: when the output is not a ``(B, C, *spatial)`` tensor with the batch and spatial shape of ``images``.
    """
    out = network(images)
    if isinstance(out, (list, tuple)):
        if len(out) == 0:
            raise ValueError("the network returned an empty list or tuple.")
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the network must return a logits tensor (B, C, *spatial), got {type(out).__name__}.")
    if out.ndim != images.ndim or out.shape[0] != images.shape[0] or out.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"the network output of shape {tuple(out.shape)} does not match images of shape {tuple(images.shape)}: "
            "expected logits (B, C, *spatial) with the batch and spatial shape of the images."
        )
    return out


def as_plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor`` (a ``MetaTensor`` without its meta data)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def check_target(target: TargetLike) -> TargetLike:
    """
    Check the target of an attack: ``None`` (untargeted), ``"inverse"``, a class index ``>= 0`` or a callable
    ``(images, labels) -> target labels``; see :py:func:`resolve_target`.

    Returns:
        ``target``, a class index as an ``int``.
    """
    if target is None or callable(target) or (isinstance(target, str) and target == "inverse"):
        return target
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if target < 0:
            raise ValueError(f"target class must be >= 0, got {target}.")
        return int(target)
    raise ValueError(
        f"unknown target {target!r}, must be None (untargeted), 'inverse', a class index or a callable "
        "(images, labels) -> target labels."
    )


def resolve_target(target: TargetLike, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """
    The labels the loss of an attack is taken on: the true labels (untargeted), or the target labels it descends to.

    Args:
        target: ``None``: untargeted, the true ``labels``. ``"inverse"``: the inverse of the ground truth, the target
            of the NLCEN paper (He et al., AAAI 2019). For binary segmentation it is ``1 - y``; with ``K`` classes
            every pixel moves to the next class, ``(y + 1) mod K`` (every pixel wrong, the same formula as ``1 - y``
            when ``K == 2``). An ``int`` ``c``: every pixel of class ``c`` (a full-area target, as in the layered PGD
            of the robust training paper). A callable ``(images, labels) -> target labels``: any other target;
            ``lambda images, labels: labels`` runs a sign attack in the helpful direction, towards the ground truth
            (a targeted sign-PGD inside its ball; this is not the gradient perturbation of Taghanaki et al., which
            descends a logit difference with an L-inf-normalised gradient and no ball: see
            :py:class:`monai_ext.attacks.GradientPerturbation`).
        images: clean images ``(B, C_in, *spatial)``.
        labels: true class indices ``(B, 1, *spatial)``.
        num_classes: number of classes ``K`` of the network, 2 for a single-logit binary network.

    Returns:
        class indices ``(B, 1, *spatial)``: ``labels`` itself when untargeted, else long target labels.
    """
    target = check_target(target)
    if target is None:
        return labels
    if isinstance(target, str):  # "inverse"
        return (labels.long() + 1) % num_classes
    if isinstance(target, int):
        if target >= num_classes:
            raise ValueError(f"target class {target} is out of range for a network with {num_classes} classes.")
        return torch.full_like(labels, target, dtype=torch.long)
    out = target(images, labels)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"a target callable must return a tensor of class indices, got {type(out).__name__}.")
    out = check_label_shape(as_plain(out).to(labels.device), images, name="target labels")
    check_class_indices(out, num_classes, name="target labels")
    return out.long()


class AttackObjective:
    """
    What an attack climbs: the loss on the true labels (untargeted) or minus the loss on the target labels
    (targeted), as a function of the input images only.

    Every forward pass of an attack goes through :py:meth:`logits` (no gradient) or :py:meth:`logits_and_gradient`.
    When ``network`` is an :py:class:`~monai_ext.attacks.InfererNetwork` of MONAI's sliding window, the gradient is
    taken window chunk by window chunk (:py:func:`~monai_ext.attacks.sliding_window.sliding_window_gradient`: equal
    to autograd through the whole sliding window, with the memory of one chunk of windows); through any other network
    or inferer, by autograd through ``network(images)``.

    Args:
        network: the network, already in the mode to attack (see :py:func:`attack_mode`), or an
            :py:class:`~monai_ext.attacks.InfererNetwork`.
        images: clean images ``(B, C_in, *spatial)``, handed to a target callable.
        labels: true class indices ``(B, 1, *spatial)``.
        loss: see :py:func:`~monai_ext.attacks.losses.attack_loss`.
        target: ``None`` (untargeted) or see :py:func:`resolve_target`.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        labels: torch.Tensor,
        loss: LossLike = "ce",
        target: TargetLike = None,
    ) -> None:
        self.network = network
        self.images = images
        self.labels = labels
        self.loss = loss
        self.target = target
        self.objective_labels: torch.Tensor | None = None  # resolved on the first forward, when C is known

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def _labels_for(self, logits: torch.Tensor) -> torch.Tensor:
        if self.objective_labels is None:
            num_classes = max(int(logits.shape[1]), 2)
            check_class_indices(self.labels, num_classes)
            self.objective_labels = resolve_target(self.target, self.images, self.labels, num_classes)
        return self.objective_labels

    def with_target(self, target: TargetLike) -> AttackObjective:
        """The objective of the same network, images, labels and loss toward ``target``, see :py:func:`resolve_target`."""
        return AttackObjective(self.network, self.images, self.labels, self.loss, target)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """
        The network's logits at ``images`` ``(N, C_in, *spatial)``, without gradient: ``(N, C, *spatial)`` (any ``N``:
        a search may score candidates of several images at once).
        """
        with torch.no_grad():
            return network_logits(self.network, images)

    def gradient(self, images: torch.Tensor, loss: LossLike | None = None) -> torch.Tensor:
        """
        The ascent direction of the attack at ``images``: the gradient of the loss on the true labels
        (untargeted) or minus the gradient of the loss on the target labels (targeted), with respect to the input
        only (``torch.autograd.grad``: no parameter's ``.grad`` is touched).

        Args:
            images: where to take the gradient, ``(B, C_in, *spatial)``.
            loss: the loss of this step instead of the objective's own (SegPGD weights it anew at every step).

        Returns:
            a tensor of the shape of ``images``, detached.
        """
        return self.logits_and_gradient(images, loss)[1]

    def logits_and_gradient(
        self, images: torch.Tensor, loss: LossLike | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The network's logits at ``images`` and the ascent direction there (:py:meth:`gradient`), from one forward
        and one backward pass: an iterative method that also needs the prediction (to stop, or to choose its
        objective) pays no second forward pass.

        Returns:
            the logits ``(B, C, *spatial)`` and the ascent direction (the shape of ``images``), both detached.
        """
        loss = self.loss if loss is None else loss
        if windowed(self.network):
            logits, grad = sliding_window_gradient(
                functools.partial(network_logits, self.network.network),
                self.network.inferer,
                images,
                lambda whole: attack_loss(whole, self._labels_for(whole), loss),
            )
            return logits, -grad if self.targeted else grad
        x = images.detach().requires_grad_(True)
        logits = network_logits(self.network, x)
        value = attack_loss(logits, self._labels_for(logits), loss)
        (grad,) = torch.autograd.grad(value, x, allow_unused=True)
        if grad is None:  # the output does not depend on the input
            grad = torch.zeros_like(x)
        return logits.detach(), -grad if self.targeted else grad
