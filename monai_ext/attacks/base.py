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
The small base every gradient attack of ``monai_ext.attacks`` stands on.

An attack is a plain callable over a batch, ``attack(network, images, labels) -> adversarial images``. This module
holds what the attacks share:

- units: a budget is given in intensity levels of an 8-bit scale (``unit="levels"``: ``8`` means ``8 / 255`` of the
  data range) or as a fraction of the data range (``unit="fraction"``), and :py:func:`to_data_units` turns it into
  the units of the data;
- :py:func:`project`: onto the L-inf or L2 ball around the clean images, then into the data range;
- :py:func:`attack_loss`: the loss an attack climbs (cross-entropy, Dice, or binary cross-entropy for a single-logit
  network; the Jensen-Shannon divergence and the masked cross-entropy of SEA), over the batch or per sample;
  :py:func:`pixel_losses` and :py:func:`two_class_logits` give its per-pixel terms;
- :py:func:`check_target` and :py:func:`resolve_target`: the labels a targeted attack descends to (``"inverse"``, a
  full-area class, a callable);
- :py:func:`attack_mode`: the network in eval mode during the attack, every module's mode restored afterwards;
- :py:class:`AttackObjective`: the one door through which an attack runs its network: the logits, and the gradient of
  the loss with respect to the input only (window chunk by window chunk through a sliding window,
  :py:mod:`monai_ext.attacks.sliding_window`);
- :py:class:`Attack`: the ``__call__`` that the attacks share, its :py:meth:`Attack.attack_context`, and its optional
  MONAI inferer (:py:class:`~monai_ext.attacks.InfererNetwork`).

Argument and input checks come from :py:mod:`monai_ext.utils.checks`.
"""

from __future__ import annotations

import functools
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.losses import DiceLoss
from monai.utils import convert_to_dst_type
from torch import nn

from monai_ext.attacks.inferer import describe_inferer, with_inferer
from monai_ext.attacks.sliding_window import sliding_window_gradient, windowed
from monai_ext.utils.checks import (
    check_choice,
    check_class_indices,
    check_image_batch,
    check_interval,
    check_label_shape,
    check_non_negative,
)

__all__ = [
    "LEVELS",
    "LOSSES",
    "NORMS",
    "UNITS",
    "Attack",
    "AttackObjective",
    "attack_loss",
    "attack_mode",
    "check_target",
    "network_logits",
    "pixel_losses",
    "project",
    "resolve_target",
    "to_data_units",
    "two_class_logits",
]

#: number of intensity steps of an 8-bit scale: ``unit="levels"`` measures a budget in ``1 / LEVELS`` of the range.
LEVELS = 255
UNITS = ("levels", "fraction")
NORMS = ("linf", "l2")
LOSSES = ("ce", "dice", "jsd", "masked_ce")
#: losses that are a mean of per-pixel terms (:py:func:`pixel_losses`)
PIXEL_LOSSES = ("ce", "jsd", "masked_ce")
REDUCTIONS = ("mean", "none")

LossLike = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TargetLike = None | str | int | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def to_data_units(value: float, unit: str = "levels", data_range: Sequence[float] = (0.0, 1.0)) -> float:
    """
    Turn a budget (epsilon, step size) into the units of the data.

    Args:
        value: the budget, ``>= 0``.
        unit: ``"levels"``: intensity levels of an 8-bit scale, ``value / 255`` of the data range (the convention of
            the FGSM and I-FGSM papers: ``eps=8`` on images in ``[0, 1]`` is ``8 / 255``); ``"fraction"``: a fraction
            of the data range (``0.01`` is 1% of it).
        data_range: ``(min, max)`` intensity range of the images.

    Returns:
        the budget in data units: ``value / 255 * (max - min)`` or ``value * (max - min)``.
    """
    unit = check_choice("unit", unit, UNITS)
    low, high = check_interval("data_range", data_range)
    scale = (high - low) / LEVELS if unit == "levels" else high - low
    return float(value) * scale


def project(
    adv: torch.Tensor,
    clean: torch.Tensor,
    eps: float,
    norm: str = "linf",
    data_range: Sequence[float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """
    Project adversarial images onto the epsilon ball around the clean images, then clip them to the data range.

    Clipping after projecting keeps the images in the ball: the clean images lie in the data range, so clipping only
    moves a value towards its clean value.

    Args:
        adv: adversarial images ``(B, C, *spatial)``.
        clean: clean images, same shape.
        eps: radius of the ball in data units, ``>= 0``. For ``"linf"`` the largest change of any value; for
            ``"l2"`` the Euclidean norm of the change over all values of one sample (all channels and voxels).
        norm: ``"linf"`` or ``"l2"``.
        data_range: ``(min, max)`` to clip to, or ``None`` not to clip.

    Returns:
        the projected images, same shape as ``adv``.
    """
    norm = check_choice("norm", norm, NORMS)
    eps = check_non_negative("eps", eps)
    if norm == "linf":
        # the difference is clamped, as in torchattacks and most reference code, so that iterated attacks match
        # them bit for bit: sign() turns any rounding difference of a near-zero gradient into a whole step
        adv = clean + torch.clamp(adv - clean, min=-eps, max=eps)
    else:
        delta = adv - clean
        norms = delta.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (delta.ndim - 1)))
        factor = torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)
        adv = clean + delta * factor
    if data_range is not None:
        low, high = check_interval("data_range", data_range)
        adv = adv.clamp(low, high)
    return adv


@contextmanager
def attack_mode(network: nn.Module) -> Iterator[nn.Module]:
    """
    Put ``network`` in eval mode for an attack and give every module back its own mode afterwards.

    Eval mode makes the attack see the network that predicts at test time (batch norm with running statistics,
    which it then does not update, no dropout, one output for a network with deep supervision). Each module's mode is
    restored, not just the top one, so a network with some modules frozen in eval mode keeps them so.
    """
    modes = [(module, module.training) for module in network.modules()]
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


def _as_plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """
    The logits of a single-logit binary network ``(B, 1, *spatial)`` as two-class logits ``(B, 2, *spatial)``,
    ``(0, z)``: their softmax is ``(1 - sigmoid(z), sigmoid(z))``, their cross-entropy the binary cross-entropy of
    ``z`` and their argmax ``z > 0``. Logits with ``C >= 2`` channels are returned as they are.
    """
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


def pixel_losses(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """
    Per-pixel losses of the logits ``(B, C, *spatial)`` against class indices ``labels`` ``(B, 1, *spatial)``, as
    ``(B, *spatial)``; a single-logit network is taken as two-class logits, :py:func:`two_class_logits`.

    - ``"ce"``: the cross-entropy ``-log p_y``;
    - ``"jsd"``: the Jensen-Shannon divergence between the softmax ``p`` and the one-hot label ``e_y``,
      ``(KL(p || m) + KL(e_y || m)) / 2`` with ``m = (p + e_y) / 2``, in nats (at most ``log 2``): the bounded loss of
      SEA (Croce, Singh and Hein, ECCV 2024, https://arxiv.org/abs/2306.12941), which no single pixel can dominate;
    - ``"masked_ce"``: the cross-entropy of the pixels the network still classifies correctly (``argmax p == y``,
      a mask that is not differentiated), zero elsewhere: the masked cross-entropy of SEA, which spends the budget on
      the pixels not yet fooled. Averaged over all pixels, as in SEA.
    """
    logits = two_class_logits(logits)
    target = labels[:, 0].long()
    if loss == "jsd":
        p = F.softmax(logits, dim=1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(p.dtype)
        log_m = torch.log((p + onehot) / 2)
        return (F.kl_div(log_m, p, reduction="none") + F.kl_div(log_m, onehot, reduction="none")).sum(1) / 2
    ce = F.cross_entropy(logits, target, reduction="none")
    if loss == "masked_ce":
        return ce * (logits.argmax(1) == target).to(ce.dtype)
    return ce


def attack_loss(
    logits: torch.Tensor, labels: torch.Tensor, loss: LossLike = "ce", reduction: str = "mean"
) -> torch.Tensor:
    """
    The loss an attack climbs (untargeted) or descends (targeted), averaged over the pixels and the batch.

    Args:
        logits: network output ``(B, C, *spatial)``. ``C == 1`` is a binary network with a single logit.
        labels: class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``, any dtype.
        loss: ``"ce"``: cross-entropy on the logits (binary cross-entropy with logits when ``C == 1``), the
            per-pixel loss of the FGSM and I-FGSM papers; ``"dice"``: MONAI's ``DiceLoss`` with softmax and
            ``to_onehot_y`` (sigmoid when ``C == 1``); ``"jsd"`` and ``"masked_ce"``: the Jensen-Shannon divergence
            and the masked cross-entropy of SEA, see :py:func:`pixel_losses` (``"masked_ce"`` is an untargeted loss);
            or a callable ``(logits, labels) -> scalar`` that receives the labels as ``(B, 1, *spatial)`` in the
            logits' dtype, like a MONAI loss.
        reduction: ``"mean"``: a scalar, the mean over the batch; ``"none"``: the loss of each sample, ``(B,)`` (a
            callable is called on one sample at a time).

    Returns:
        a scalar tensor, or ``(B,)`` with ``reduction="none"``.
    """
    labels = check_label_shape(labels, logits)
    if check_choice("reduction", reduction, REDUCTIONS) == "none":
        if callable(loss) or loss == "dice":
            return torch.stack([attack_loss(logits[i : i + 1], labels[i : i + 1], loss) for i in range(len(logits))])
        return pixel_losses(logits, labels, check_choice("loss", loss, LOSSES)).flatten(1).mean(1)
    num_channels = logits.shape[1]
    if callable(loss):
        return loss(logits, labels.to(logits.dtype))
    loss = check_choice("loss", loss, LOSSES)
    if loss == "ce":
        if num_channels == 1:
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels[:, 0].long())
    if loss in PIXEL_LOSSES:
        return pixel_losses(logits, labels, loss).mean()
    if num_channels == 1:
        return DiceLoss(sigmoid=True)(logits, labels.to(logits.dtype))
    return DiceLoss(softmax=True, to_onehot_y=True)(logits, labels.to(logits.dtype))


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
    out = check_label_shape(_as_plain(out).to(labels.device), images, name="target labels")
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
        loss: see :py:func:`attack_loss`.
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


class Attack(ABC):
    """
    Base of the gradient attacks: ``attack(network, images, labels) -> adversarial images``.

    A subclass implements :py:meth:`perturb`; ``__call__`` validates the inputs, puts the network in eval mode,
    enables gradients (also inside ``torch.no_grad`` or ``torch.inference_mode``) and gives back detached images of
    the type, shape, dtype and device of the input (a ``MetaTensor`` keeps its meta data).

    Args:
        eps: the attack budget, the radius of the ball around the clean images, in ``unit``; ``>= 0``.
        unit: ``"levels"`` (intensity levels of an 8-bit scale: ``eps / 255`` of the data range) or ``"fraction"``
            (a fraction of the data range); see :py:func:`to_data_units`.
        data_range: ``(min, max)`` intensity range of the images; adversarial images are clipped to it and images
            outside it are refused.
        loss: ``"ce"``, ``"dice"`` or a callable; see :py:func:`attack_loss`.
        target: ``None``: untargeted, ascend the loss on the true labels. Otherwise a targeted attack descends the
            loss on the target labels: ``"inverse"``, a class index or a callable; see :py:func:`resolve_target`.
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
        if self.loss == "masked_ce" and self.target is not None:
            raise ValueError("loss 'masked_ce' masks the pixels still classified correctly: it is an untargeted loss.")
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
        ``torch.inference_mode``), puts the network in eval mode (:py:func:`attack_mode`) and yields the objective (of
        the network run through the attack's ``inferer``) and the clean images as a plain tensor.
        """
        network = with_inferer(network, self.inferer)
        check_image_batch(images, self.data_range)
        x = _as_plain(images).detach()
        y = check_label_shape(_as_plain(labels), x).detach().to(x.device)
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
