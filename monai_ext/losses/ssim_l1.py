# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""SSIM + L1 loss of an image-to-image network: eq. 7 of Taghanaki et al., "Improved Inference via Deep Input
Transfer", MICCAI 2019."""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_ext.utils.checks import check_non_negative, check_positive, check_spatial_dims

__all__ = ["SSIML1Loss"]


class SSIML1Loss(_Loss):
    """
    ``lambda_ssim * (1 - SSIM(input, target)) + lambda_l1 * mean |input - target|``, averaged over the batch: the
    translator loss of deep input transfer (eq. 7; the paper's GP_Ts) with MONAI's ``SSIMLoss`` (a Gaussian window of
    11 and sigma 1.5, the SSIM paper's), and with ``lambda_ssim=0`` the L1 loss alone (its GP_T).

    The paper writes ``SSIM(I, I + Delta)``, between the input and the target, which does not depend on the network:
    read as ``SSIM(Phi(I), I + Delta)``, between the translation and its target, as here.

    Args:
        spatial_dims: 2 or 3.
        lambda_l1: weight of the L1 term, ``>= 0`` (the paper's ``lambda``; its value is not given: 1 by default).
        lambda_ssim: weight of the SSIM term, ``>= 0``; ``0`` leaves SSIM out (L1 alone).
        data_range: the intensity range SSIM's constants are scaled to (``L`` of the SSIM paper), ``> 0``: the range
            of the images before perturbation, 1 for images in ``[0, 1]``.
        win_size: side of SSIM's window; every spatial size of the images must be at least this.

    Shapes:
        ``input`` and ``target`` ``(B, C, *spatial)``; returns a scalar.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        lambda_l1: float = 1.0,
        lambda_ssim: float = 1.0,
        data_range: float = 1.0,
        win_size: int = 11,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims, (2, 3))
        self.lambda_l1 = check_non_negative("lambda_l1", lambda_l1)
        self.lambda_ssim = check_non_negative("lambda_ssim", lambda_ssim)
        if self.lambda_l1 == 0 and self.lambda_ssim == 0:
            raise ValueError("lambda_l1 and lambda_ssim are both 0: the loss would be constant.")
        data_range = check_positive("data_range", data_range)
        self.ssim = SSIMLoss(spatial_dims, data_range=data_range, win_size=win_size) if self.lambda_ssim else None
        self.l1 = nn.L1Loss()

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.lambda_l1 * self.l1(input, target)
        if self.ssim is not None:
            loss = loss + self.lambda_ssim * self.ssim(input, target)
        return loss
