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
``prepare_batch`` doors for MONAI's engines that change the images of each batch (:py:class:`ImagePrepareBatch`): the
one that attacks them, for adversarial evaluation and online adversarial training.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, PrepareBatchDefault
from monai.inferers import Inferer
from torch import nn

from monai_ext.attacks import with_inferer
from monai_ext.utils.checks import check_callable, check_fraction

__all__ = ["AdversarialPrepareBatch", "ImagePrepareBatch"]


class ImagePrepareBatch(PrepareBatch):
    """
    The base of the ``prepare_batch`` doors that replace the images of each batch: the inner ``prepare_batch`` moves
    the batch to the device, then :py:meth:`images` makes the new images from the images and their labels.

    Args:
        prepare_batch: the inner ``prepare_batch`` that moves the batch to the device and returns
            ``(images, labels)`` or ``(images, labels, args, kwargs)``; ``None`` is MONAI's
            :py:class:`~monai.engines.utils.PrepareBatchDefault`. Extra ``args``/``kwargs`` go to the engine's
            inferer unchanged.
    """

    def __init__(self, prepare_batch: Callable | None = None) -> None:
        self.prepare_batch = PrepareBatchDefault() if prepare_batch is None else prepare_batch

    @abstractmethod
    def images(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The new images ``(B, C, *spatial)`` of a batch of ``images`` with ``labels`` ``(B, 1, *spatial)``."""

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor] | torch.Tensor | Sequence[torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        """
        Args `batchdata`, `device`, `non_blocking` refer to the ignite API:
        https://pytorch.org/ignite/v0.4.8/generated/ignite.engine.create_supervised_trainer.html.
        `kwargs` supports other args for `Tensor.to()` API.

        Returns:
            what the inner ``prepare_batch`` returns, with the images replaced by :py:meth:`images`.
        """
        batch = self.prepare_batch(batchdata, device, non_blocking, **kwargs)
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 4):
            raise ValueError("the inner prepare_batch must return (images, labels) or (images, labels, args, kwargs).")
        labels = batch[1]
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs the labels of the images, but the batch has none.")
        return (self.images(batch[0], labels), labels, *batch[2:])


class AdversarialPrepareBatch(ImagePrepareBatch):
    """
    A ``prepare_batch`` for :py:class:`monai.engines.SupervisedEvaluator` and
    :py:class:`monai.engines.SupervisedTrainer` that moves each batch to the device (with ``prepare_batch``,
    MONAI's default by default), then replaces its images by adversarial ones, ``attack(network, images, labels)``.

    - In an evaluator, the metrics (e.g. ``MeanDice``) become adversarial metrics: the evaluator's inferer sees the
      attacked images, its label is the true label.
    - In a trainer, this is online adversarial training: each iteration trains on batches attacked against the
      current weights. With ``mix < 1`` only part of each batch is attacked, the rest stays clean.

    The engine calls ``prepare_batch(batchdata, device, non_blocking, **to_kwargs)`` and does not pass itself, so the
    network to attack is given here (the engine's own ``network``, to attack the network being trained or
    evaluated). The attacks of :py:mod:`monai_ext.attacks` put it in eval mode for the attack and restore its modes,
    and leave its parameters and gradients untouched, so a trainer's step is not disturbed. The attack runs with
    gradients enabled even though the evaluator computes its forward pass without them.

    Example (bundle config)::

        "prepare_batch": {
            "_target_": "monai_ext.engines.utils.AdversarialPrepareBatch",
            "attack": {"_target_": "monai_ext.attacks.IterativeFGSM", "eps": 8, "target": "inverse"},
            "network": "@network",
            "inferer": "@inferer"
        }

    Args:
        attack: the attack, any callable ``(network, images, labels) -> images`` over a batch.
        network: the network to attack.
        mix: fraction of each batch replaced by adversarial images, in ``[0, 1]``: the first
            ``round(mix * B)`` samples (half up) are attacked (a shuffling loader makes them a random subset);
            ``1.0`` (default) attacks them all, ``0.0`` none.
        prepare_batch: the inner ``prepare_batch`` that moves the batch to the device and returns
            ``(images, labels)`` or ``(images, labels, args, kwargs)``; ``None`` is MONAI's
            :py:class:`~monai.engines.utils.PrepareBatchDefault`. Extra ``args``/``kwargs`` go to the engine's
            inferer unchanged; the attack calls ``network(images)`` only.
        inferer: the inferer the attack runs the network through (the evaluator's: a ``SlidingWindowInferer`` on
            whole volumes), see :py:func:`~monai_ext.attacks.with_inferer`; ``None`` (default): the network as it is.
    """

    def __init__(
        self,
        attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
        network: nn.Module,
        mix: float = 1.0,
        prepare_batch: Callable | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        self.attack = check_callable("attack", attack, "a callable (network, images, labels) -> images")
        self.network = with_inferer(check_callable("network", network, "a torch.nn.Module (or a callable)"), inferer)
        self.mix = check_fraction("mix", mix)
        super().__init__(prepare_batch)

    def num_adversarial(self, batch_size: int) -> int:
        """Number of samples attacked in a batch of ``batch_size``: ``round(mix * batch_size)``, half up."""
        return min(batch_size, math.floor(self.mix * batch_size + 0.5))

    def images(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch with its first :py:meth:`num_adversarial` images attacked."""
        num = self.num_adversarial(images.shape[0])
        if num == images.shape[0]:
            images = self.attack(self.network, images, labels)
        elif num > 0:
            adv = self.attack(self.network, images[:num], labels[:num])
            images = images.clone()
            images[:num] = adv
        return images
