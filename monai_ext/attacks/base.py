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
- :py:func:`attack_loss`: the per-pixel loss an attack climbs (cross-entropy, Dice, or binary cross-entropy for a
  single-logit network);
- :py:func:`resolve_target`: the labels a targeted attack descends to (``"inverse"``, a full-area class, a callable);
- :py:func:`attack_mode`: the network in eval mode during the attack, every module's mode restored afterwards;
- :py:class:`AttackObjective`: the gradient of the loss with respect to the input only;
- :py:class:`Attack`: argument and input validation and the ``__call__`` that the attacks share.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.losses import DiceLoss
from monai.utils import ImageMetaKey, convert_to_dst_type
from torch import nn

from monai_ext.transforms.utils import source_name

__all__ = [
    "LEVELS",
    "NORMS",
    "UNITS",
    "LOSSES",
    "Attack",
    "AttackObjective",
    "attack_loss",
    "attack_mode",
    "check_budget",
    "check_choice",
    "check_num_steps",
    "network_logits",
    "project",
    "resolve_target",
    "to_data_units",
]

#: number of intensity steps of an 8-bit scale: ``unit="levels"`` measures a budget in ``1 / LEVELS`` of the range.
LEVELS = 255
UNITS = ("levels", "fraction")
NORMS = ("linf", "l2")
LOSSES = ("ce", "dice")

LossLike = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TargetLike = None | str | int | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_budget(name: str, value: float, allow_zero: bool = True) -> float:
    """
    Check an attack budget (epsilon, step size): a finite real number, ``>= 0`` (``> 0`` if not ``allow_zero``).

    Returns:
        ``value`` as a float.

    Raises:
        ValueError: when ``value`` is not a real number, is NaN or inf, is negative, or is zero where not allowed.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy and 0-d tensor scalars
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a real number, got {value!r}.") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}.")
    return value


def check_num_steps(num_steps: int) -> int:
    """
    Check a number of attack iterations: a whole number ``>= 0``.

    Raises:
        ValueError: when ``num_steps`` is not a whole number or is negative.
    """
    if isinstance(num_steps, bool) or not (
        isinstance(num_steps, numbers.Integral) or (isinstance(num_steps, float) and num_steps.is_integer())
    ):
        raise ValueError(f"num_steps must be an integer >= 0, got {num_steps!r}.")
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}.")
    return int(num_steps)


def _check_data_range(data_range: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (min, max) of numbers, got {data_range!r}.") from None
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        raise ValueError(f"data_range must be a finite pair (min, max) with min < max, got {data_range!r}.")
    return low, high


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices`` (case-insensitive) and return it in lower case."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"unknown {name} {value!r}, must be one of {', '.join(map(repr, choices))}.")
    return value.lower()


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
    low, high = _check_data_range(data_range)
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
    eps = check_budget("eps", eps)
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
        low, high = _check_data_range(data_range)
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
        raise ValueError(f"the network must return a logits tensor (B, C, *spatial), got {type(out).__name__}.")
    if out.ndim != images.ndim or out.shape[0] != images.shape[0] or out.shape[2:] != images.shape[2:]:
        raise ValueError(
            f"the network output of shape {tuple(out.shape)} does not match images of shape {tuple(images.shape)}: "
            "expected logits (B, C, *spatial) with the batch and spatial shape of the images."
        )
    return out


def _as_plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def _check_label_shape(labels: torch.Tensor, images: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """``labels`` as ``(B, 1, *spatial)``, from ``(B, 1, *spatial)`` or ``(B, *spatial)``."""
    batch, spatial = images.shape[0], tuple(images.shape[2:])
    if labels.ndim == images.ndim - 1 and labels.shape[0] == batch and tuple(labels.shape[1:]) == spatial:
        return labels.unsqueeze(1)
    if labels.ndim == images.ndim and labels.shape[0] == batch and labels.shape[1] == 1 and labels.shape[2:] == spatial:
        return labels
    raise ValueError(
        f"{name} of shape {tuple(labels.shape)} do not match images of shape {tuple(images.shape)}: expected class "
        f"indices of shape {(batch, 1, *spatial)} or {(batch, *spatial)}."
    )


def _check_label_values(labels: torch.Tensor, num_classes: int, name: str = "labels") -> None:
    if labels.is_floating_point():
        if not torch.isfinite(labels).all():
            raise ValueError(f"{name} contain NaN or inf values.")
        if not torch.equal(labels, labels.round()):
            raise ValueError(f"{name} must hold class indices (whole numbers), got fractional values.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes - 1}] for a network with {num_classes} classes, "
            f"got values in [{labels.min().item()}, {labels.max().item()}]."
        )


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, loss: LossLike = "ce") -> torch.Tensor:
    """
    The loss an attack climbs (untargeted) or descends (targeted), averaged over the batch and the pixels.

    Args:
        logits: network output ``(B, C, *spatial)``. ``C == 1`` is a binary network with a single logit.
        labels: class indices ``(B, 1, *spatial)`` or ``(B, *spatial)``, any dtype.
        loss: ``"ce"``: cross-entropy on the logits (binary cross-entropy with logits when ``C == 1``), the
            per-pixel loss of the FGSM and I-FGSM papers; ``"dice"``: MONAI's ``DiceLoss`` with softmax and
            ``to_onehot_y`` (sigmoid when ``C == 1``); or a callable ``(logits, labels) -> scalar`` that receives
            the labels as ``(B, 1, *spatial)`` in the logits' dtype, like a MONAI loss.

    Returns:
        a scalar tensor.
    """
    labels = _check_label_shape(labels, logits)
    num_channels = logits.shape[1]
    if callable(loss):
        return loss(logits, labels.to(logits.dtype))
    loss = check_choice("loss", loss, LOSSES)
    if loss == "ce":
        if num_channels == 1:
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels[:, 0].long())
    if num_channels == 1:
        return DiceLoss(sigmoid=True)(logits, labels.to(logits.dtype))
    return DiceLoss(softmax=True, to_onehot_y=True)(logits, labels.to(logits.dtype))


def resolve_target(target: TargetLike, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """
    The labels a targeted attack descends to.

    Args:
        target: ``"inverse"``: the inverse of the ground truth, the target of the NLCEN paper (He et al., AAAI
            2019). For binary segmentation it is ``1 - y``; with ``K`` classes every pixel moves to the next class,
            ``(y + 1) mod K`` (every pixel wrong, the same formula as ``1 - y`` when ``K == 2``). An ``int`` ``c``:
            every pixel of class ``c`` (a full-area target, as in the layered PGD of the robust training paper). A
            callable ``(images, labels) -> target labels``: any other target; ``lambda images, labels: labels``
            runs the attack in the helpful direction, towards the ground truth (gradient perturbation).
        images: clean images ``(B, C_in, *spatial)``.
        labels: true class indices ``(B, 1, *spatial)``.
        num_classes: number of classes ``K`` of the network, 2 for a single-logit binary network.

    Returns:
        target class indices ``(B, 1, *spatial)``, long.
    """
    if target == "inverse":
        out = (labels.long() + 1) % num_classes
    elif isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < num_classes:
            raise ValueError(f"target class {target} is out of range for a network with {num_classes} classes.")
        out = torch.full_like(labels, target, dtype=torch.long)
    elif callable(target):
        out = target(images, labels)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"a target callable must return a tensor of class indices, got {type(out).__name__}.")
        out = _check_label_shape(_as_plain(out).to(labels.device), images, name="target labels")
        _check_label_values(out, num_classes, name="target labels")
        out = out.long()
    else:
        raise ValueError(
            f"unknown target {target!r}, must be None (untargeted), 'inverse', a class index or a callable "
            "(images, labels) -> target labels."
        )
    return out


class AttackObjective:
    """
    What an attack climbs: the loss on the true labels (untargeted) or minus the loss on the target labels
    (targeted), as a function of the input images only.

    Args:
        network: the network, already in the mode to attack (see :py:func:`attack_mode`).
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
            _check_label_values(self.labels, num_classes)
            if self.target is None:
                self.objective_labels = self.labels
            else:
                self.objective_labels = resolve_target(self.target, self.images, self.labels, num_classes)
        return self.objective_labels

    def loss_value(self, images: torch.Tensor) -> torch.Tensor:
        """The attack loss (on the true labels, or on the target labels if targeted) at ``images``, no gradient."""
        with torch.no_grad():
            logits = network_logits(self.network, images)
            return attack_loss(logits, self._labels_for(logits), self.loss)

    def gradient(self, images: torch.Tensor) -> torch.Tensor:
        """
        The ascent direction of the attack at ``images``: the gradient of the loss on the true labels
        (untargeted) or minus the gradient of the loss on the target labels (targeted), with respect to the input
        only (``torch.autograd.grad``: no parameter's ``.grad`` is touched).

        Returns:
            a tensor of the shape of ``images``, detached.
        """
        x = images.detach().requires_grad_(True)
        logits = network_logits(self.network, x)
        loss = attack_loss(logits, self._labels_for(logits), self.loss)
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        if grad is None:  # the output does not depend on the input
            grad = torch.zeros_like(x)
        return -grad if self.targeted else grad


def _check_images(images: torch.Tensor, low: float, high: float) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor (B, C, *spatial), got {type(images).__name__}.")
    if images.ndim < 3:
        raise ValueError(f"images must have shape (B, C, *spatial), got shape {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point to be attacked, got dtype {images.dtype}.")
    if images.numel() == 0:
        return
    flat = images.detach().flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images{_sample_names(images, bad)} contain NaN or inf values (batch index {bad}).")
    tol = 1e-6 * (high - low)
    outside = (flat.amin(dim=1) < low - tol) | (flat.amax(dim=1) > high + tol)
    if outside.any():
        bad = torch.nonzero(outside).flatten().tolist()
        raise ValueError(
            f"images{_sample_names(images, bad)} (batch index {bad}) have values in "
            f"[{flat.min().item():g}, {flat.max().item():g}], outside data_range ({low:g}, {high:g}): scale or clip "
            "the images, or give the attack their data_range."
        )


def _sample_names(images: torch.Tensor, indices: list[int]) -> str:
    """The file names of some samples of a batch, as ``" 'a.png', 'b.png'"``, or ``""`` when none is known."""
    if not isinstance(images, MetaTensor):
        return ""
    names = images.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if isinstance(names, (list, tuple)) and len(names) == images.shape[0]:
        return " " + ", ".join(f"'{names[i]}'" for i in indices)
    return f" {source_name(images)}" if names is not None else ""


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
    """

    def __init__(
        self,
        eps: float,
        unit: str = "levels",
        data_range: Sequence[float] = (0.0, 1.0),
        loss: LossLike = "ce",
        target: TargetLike = None,
    ) -> None:
        self.eps = check_budget("eps", eps)
        self.unit = check_choice("unit", unit, UNITS)
        self.data_range = _check_data_range(data_range)
        if not callable(loss):
            loss = check_choice("loss", loss, LOSSES)
        self.loss = loss
        if isinstance(target, bool) or not (
            target is None or target == "inverse" or isinstance(target, int) or callable(target)
        ):
            raise ValueError(
                f"unknown target {target!r}, must be None (untargeted), 'inverse', a class index or a callable "
                "(images, labels) -> target labels."
            )
        elif isinstance(target, int) and target < 0:
            raise ValueError(f"target class must be >= 0, got {target}.")
        self.target = target

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
        _check_images(images, *self.data_range)
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"labels must be a torch.Tensor of class indices, got {type(labels).__name__}.")
        x = _as_plain(images).detach()
        y = _check_label_shape(_as_plain(labels).detach().to(x.device), x)
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()  # a normal tensor even if the batch was made in inference mode
            y = y.clone()
            if isinstance(network, nn.Module):
                with attack_mode(network):
                    adv = self.perturb(AttackObjective(network, x, y, self.loss, self.target), x)
            else:
                adv = self.perturb(AttackObjective(network, x, y, self.loss, self.target), x)
        adv = adv.detach().to(dtype=images.dtype)
        return convert_to_dst_type(adv, images)[0]

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
        """The attack's settings (``eps``, ``unit``, ... as given), for logs and results files."""
        return {
            "eps": self.eps,
            "unit": self.unit,
            "data_range": self.data_range,
            "loss": self.loss,
            "target": self.target,
        }
