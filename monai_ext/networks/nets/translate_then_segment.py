# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""A translator in front of a segmenter as one network: the test-time pipeline of deep input transfer."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TranslateThenSegment"]


class TranslateThenSegment(nn.Module):
    """
    ``segmenter(translator(x))``: the inference of Taghanaki et al., "Improved Inference via Deep Input Transfer"
    (MICCAI 2019, Fig. 1 bottom), where a translator ``Phi`` maps a test image toward the input the trained
    segmenter segments right, as one ``nn.Module``, so that MONAI's inferers, ``verify_net_in_out``, TorchScript
    export and MONAI Label see one network and one state dict (``translator.*``, ``segmenter.*``).

    The parts stay reachable as ``.translator`` and ``.segmenter``: a bundle trains the segmenter alone, then the
    translator in front of it, and saves the whole.

    Args:
        translator: image to image, ``(B, C_in, *spatial) -> (B, C_in, *spatial)``, e.g.
            :py:class:`~monai_ext.networks.nets.FCDenseNet` with ``residual=True`` (the identity until trained).
        segmenter: ``(B, C_in, *spatial) -> (B, num_classes, *spatial)`` logits.

    Shapes:
        input ``(B, C_in, *spatial)``, output the segmenter's logits ``(B, num_classes, *spatial)``.
    """

    def __init__(self, translator: nn.Module, segmenter: nn.Module) -> None:
        super().__init__()
        for name, part in (("translator", translator), ("segmenter", segmenter)):
            if not isinstance(part, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(part).__name__}.")
        self.translator = translator
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(self.translator(x))
