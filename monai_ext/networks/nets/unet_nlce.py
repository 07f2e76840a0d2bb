# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""MONAI's UNet with a non-local context encoder (NLCE) at its bottom, the "Generalization" study of NLCEN."""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.layers.factories import Act, Norm
from monai.networks.nets import UNet
from torch import nn

from monai_ext.networks.blocks import NLCE
from monai_ext.utils.checks import check_positive_int

__all__ = ["NLCEUNet"]


class NLCEUNet(UNet):
    """
    :py:class:`monai.networks.nets.UNet` with one :py:class:`monai_ext.networks.blocks.NLCE` between its last
    downsampling stage and its first upsampling stage, as in the "Generalization" experiment of He et al.,
    "Non-Local Context Encoder: Robust Biomedical Image Segmentation against Adversarial Attacks", AAAI 2019.

    The NLCE follows the UNet's bottom layer (the stride-1 block at the lowest resolution, ``channels[-1]``
    channels), so the bottom becomes ``nn.Sequential(bottom_block, NLCE)``; everything else is MONAI's UNet and
    all of its arguments work as there (see :py:class:`monai.networks.nets.UNet` for them and for the input size
    constraints).

    Args:
        spatial_dims, in_channels, out_channels, channels, strides, kernel_size, up_kernel_size, num_res_units,
        act, norm, dropout, bias, adn_ordering: as in :py:class:`monai.networks.nets.UNet`.
        use_nlce: whether to add the NLCE; ``False`` gives a plain UNet (same parameters as MONAI's UNet).
        use_nonlocal: whether the NLCE uses its non-local (spatial dependency) part.
        use_context: whether the NLCE uses its context encoding (channel attention) part.
        num_codes: number of codewords K of the NLCE's codebook.
        nlce_inter_channels: ``inter_channels`` of the NLCE; ``None`` takes the NLCE default.
        nlce_code_channels: ``code_channels`` of the NLCE; ``None`` takes the NLCE default.

    Forward:
        ``(B, in_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)``, one tensor in train and eval mode.

    Example::

        >>> net = NLCEUNet(2, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
        >>> net(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 2, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        kernel_size: Sequence[int] | int = 3,
        up_kernel_size: Sequence[int] | int = 3,
        num_res_units: int = 0,
        act: tuple | str = Act.PRELU,
        norm: tuple | str = Norm.INSTANCE,
        dropout: float = 0.0,
        bias: bool = True,
        adn_ordering: str = "NDA",
        use_nlce: bool = True,
        use_nonlocal: bool = True,
        use_context: bool = True,
        num_codes: int = 32,
        nlce_inter_channels: int | None = None,
        nlce_code_channels: int | None = None,
    ) -> None:
        num_codes = check_positive_int("num_codes", num_codes)
        # read by `_get_bottom_layer`, which `UNet.__init__` calls
        self.use_nlce = use_nlce
        self.nlce_args = {
            "inter_channels": nlce_inter_channels,
            "num_codes": num_codes,
            "code_channels": nlce_code_channels,
            "use_nonlocal": use_nonlocal,
            "use_context": use_context,
        }
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            strides=strides,
            kernel_size=kernel_size,
            up_kernel_size=up_kernel_size,
            num_res_units=num_res_units,
            act=act,
            norm=norm,
            dropout=dropout,
            bias=bias,
            adn_ordering=adn_ordering,
        )

    def _get_bottom_layer(self, in_channels: int, out_channels: int) -> nn.Module:
        """
        Returns the UNet bottom layer followed by the NLCE (on ``out_channels`` channels).

        Args:
            in_channels: number of input channels.
            out_channels: number of output channels.
        """
        bottom = super()._get_bottom_layer(in_channels, out_channels)
        if not self.use_nlce:
            return bottom
        return nn.Sequential(bottom, NLCE(spatial_dims=self.dimensions, in_channels=out_channels, **self.nlce_args))
