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
A network seen through a MONAI inferer, the way a bundle's evaluator runs it: :py:class:`InfererNetwork` is the one
seam by which an inferer (a ``SlidingWindowInferer`` on whole 3D volumes) reaches every attack. The attacks run it
through :py:class:`~monai_ext.attacks.AttackObjective`, which takes the input gradient through a sliding window window
chunk by window chunk (:py:func:`~monai_ext.attacks.sliding_window.sliding_window_gradient`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn

from monai_ext.utils.files import json_safe

__all__ = ["InfererNetwork", "describe_inferer", "is_plain_inferer", "with_inferer"]

#: inferer attributes that choose where, or in what order of buffers, the inferer computes, not what it computes
PLACEMENT = ("device", "sw_device", "progress", "cpu_thresh", "buffer_steps", "buffer_dim", "roi_weight_map")


class InfererNetwork(nn.Module):
    """
    A network run through an inferer: ``forward(x) = inferer(x, network)``, logits ``(B, C, *spatial)`` of the whole
    input (a ``SlidingWindowInferer`` blends its windows into the whole volume).

    The wrapped network is a submodule (``self.network``), so the attacks' eval-mode guard
    (:py:func:`~monai_ext.attacks.attack_mode`) reaches its modules; the inferer is not a module and holds no
    weights. Build one per engine or per dataset (:py:func:`with_inferer`) and hand it to the attacks as their
    network.

    Args:
        network: the network, ``(B, C_in, *roi) -> (B, C, *roi)`` logits in eval mode.
        inferer: a MONAI inferer, ``inferer(images, network) -> logits``.

    Example::

        inferer = SlidingWindowInferer(roi_size=(96, 96, 64), sw_batch_size=2, overlap=0.5, mode="gaussian")
        adv = PGD(eps=4, alpha=1, num_steps=20)(InfererNetwork(network, inferer), volume, label)
    """

    def __init__(self, network: Callable[[torch.Tensor], Any], inferer: Inferer) -> None:
        super().__init__()
        if not callable(network):
            raise TypeError(f"network must be a torch.nn.Module or a callable, got {type(network).__name__}.")
        if not isinstance(inferer, Inferer):
            raise TypeError(f"inferer must be a monai.inferers.Inferer, got {type(inferer).__name__}.")
        self.network = network
        self.inferer = inferer

    def forward(self, images: torch.Tensor) -> Any:
        """``inferer(images, network)``: the network's output on the whole ``images`` ``(B, C_in, *spatial)``."""
        return self.inferer(images, self.network)

    def extra_repr(self) -> str:
        return f"inferer={describe_inferer(self.inferer)}"


def is_plain_inferer(inferer: Inferer | None) -> bool:
    """Whether ``inferer`` runs the network on its input as it is: ``None`` or a ``SimpleInferer``."""
    return inferer is None or type(inferer) is SimpleInferer


def describe_inferer(inferer: Inferer | None) -> dict[str, Any] | None:
    """
    A JSON-able description of ``inferer`` for settings and results files: ``None`` for a plain one
    (:py:func:`is_plain_inferer`), else its class name and the public attributes that choose its result (for a
    ``SlidingWindowInferer``: ``roi_size``, ``sw_batch_size``, ``overlap``, ``mode``, ``sigma_scale``,
    ``padding_mode``, ``cval``, ``with_coord``; not the devices, the progress bar or the buffering, see
    :py:data:`PLACEMENT`), a value JSON cannot hold as its ``repr``.
    """
    if is_plain_inferer(inferer):
        return None
    values = {k: v for k, v in vars(inferer).items() if not k.startswith("_") and k not in PLACEMENT}
    return {"name": type(inferer).__name__, **{k: _jsonable(v) for k, v in values.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):  # MONAI's modes (``BlendMode``, ``PytorchPadMode``): their value
        value = value.value
    try:
        return json_safe(value)
    except TypeError:
        return repr(value)


def with_inferer(network: Callable[[torch.Tensor], Any], inferer: Inferer | None) -> Callable[[torch.Tensor], Any]:
    """
    ``network`` run through ``inferer``: ``network`` itself when the inferer is plain (:py:func:`is_plain_inferer`)
    or when ``network`` already is an :py:class:`InfererNetwork` of an inferer described alike, else
    ``InfererNetwork(network, inferer)``.

    Raises:
        ValueError: when ``network`` is an :py:class:`InfererNetwork` of another inferer.
    """
    if is_plain_inferer(inferer):
        return network
    if isinstance(network, InfererNetwork):
        if describe_inferer(network.inferer) != describe_inferer(inferer):
            raise ValueError(
                f"the network is already run through {describe_inferer(network.inferer)}, the attack asks for "
                f"{describe_inferer(inferer)}: give the attack no inferer, or the bare network."
            )
        return network
    return InfererNetwork(network, inferer)
