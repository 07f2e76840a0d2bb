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
The ResNet generator of Cycle-GAN: Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", ICCV 2017, https://arxiv.org/abs/1703.10593 (appendix 7.2, after Johnson et
al. 2016), with a linear last layer: the generator of Taghanaki et al.'s GP_cG ("Improved Inference via Deep Input
Transfer", MICCAI 2019), whose perturbations "can have negative values".
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from monai.networks.utils import normal_init
from torch import nn

from monai_ext.utils.checks import (
    check_fraction,
    check_input_shape,
    check_positive_int,
    check_spatial_dims,
    check_spatial_divisible,
)

__all__ = ["ResNetGenerator"]

_REFLECTION_PAD = {1: nn.ReflectionPad1d, 2: nn.ReflectionPad2d, 3: nn.ReflectionPad3d}


def _padded_conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> nn.Sequential:
    """Reflection padding of ``kernel_size // 2``, then MONAI's ``Convolution`` (conv, norm, dropout, act) unpadded."""
    return nn.Sequential(
        _REFLECTION_PAD[spatial_dims](kernel_size // 2),
        Convolution(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, padding=0, **kwargs),
    )


class _ResidualBlock(nn.Module):
    """``x + (pad, conv 3, norm, act, [dropout], pad, conv 3, norm)(x)``: Cycle-GAN's ``R<k>`` block."""

    def __init__(self, spatial_dims: int, channels: int, norm: str | tuple, act: str | tuple, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _padded_conv(spatial_dims, channels, channels, 3, norm=norm, act=act, dropout=dropout or None),
            _padded_conv(spatial_dims, channels, channels, 3, norm=norm, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """
    Cycle-GAN's image-to-image generator (Zhu et al. 2017, appendix 7.2), 2D or 3D, ending in a linear layer.

    .. code-block:: text

        c7s1-f:   reflection pad 3, conv 7x7 (in -> f), norm, ReLU
        d2f, d4f: conv 3x3 stride 2, norm, ReLU                      (spatial size / 4)
        R4f:      num_blocks residual blocks (two 3x3 convs, reflection padded)
        u2f, uf:  transposed conv 3x3 stride 2, norm, ReLU           (back to the input size)
        head:     reflection pad 3, conv 7x7 (f -> out), no activation (Cycle-GAN's tanh removed)

    Zhu et al. use ``features`` 64, instance norm, and 9 blocks for 256 x 256 images (6 for 128 x 128). Weights start
    from N(0, 0.02) as theirs (MONAI's ``normal_init``). The last layer is linear, as Taghanaki et al. (2019) make it:
    the output is not squashed into the input's intensity range, so a generator can learn ``I -> I + Delta`` with
    ``Delta`` of either sign and any size.

    With ``residual`` the network returns ``x + head(features)`` with the head initialised to zero, so the untrained
    generator is the identity (as :py:class:`~monai_ext.networks.nets.FCDenseNet` with ``residual=True``).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: image channels.
        out_channels: output channels; ``None`` (default) is ``in_channels``. ``residual`` needs them equal.
        features: maps of the first convolution (``f`` above; 64 in the paper), doubled at each downsampling.
        num_blocks: residual blocks at a quarter of the input size (9 in the paper at 256 x 256, 6 at 128 x 128).
        norm: MONAI norm spec of every convolution but the head (instance norm in the paper).
        act: MONAI activation spec (ReLU in the paper).
        dropout: dropout rate inside each residual block (0 in Cycle-GAN, 0.5 in its ``--use_dropout`` option).
        residual: return ``x + head(features)``, the head initialised to zero.

    Shapes:
        input ``(B, in_channels, *spatial)``, every spatial size divisible by 4 (two stride-2 convolutions); output
        ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        features: int = 64,
        num_blocks: int = 9,
        norm: str | tuple = "instance",
        act: str | tuple = "relu",
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = (
            self.in_channels if out_channels is None else check_positive_int("out_channels", out_channels)
        )
        f = check_positive_int("features", features)
        num_blocks = check_positive_int("num_blocks", num_blocks)
        dropout = check_fraction("dropout", dropout, allow_one=False)
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be True or False, got {residual!r}.")
        if residual and self.out_channels != self.in_channels:
            raise ValueError(f"residual needs out_channels == in_channels, got {self.out_channels} and {in_channels}.")
        self.residual = residual
        self.divisor = 4

        unit = {"norm": norm, "act": act}
        self.encoder = nn.Sequential(
            _padded_conv(spatial_dims, self.in_channels, f, 7, **unit),
            Convolution(spatial_dims, f, 2 * f, strides=2, kernel_size=3, padding=1, **unit),
            Convolution(spatial_dims, 2 * f, 4 * f, strides=2, kernel_size=3, padding=1, **unit),
        )
        self.blocks = nn.Sequential(
            *(_ResidualBlock(spatial_dims, 4 * f, norm, act, dropout) for _ in range(num_blocks))
        )
        up = {"strides": 2, "kernel_size": 3, "padding": 1, "output_padding": 1, "is_transposed": True, **unit}
        self.decoder = nn.Sequential(
            Convolution(spatial_dims, 4 * f, 2 * f, **up), Convolution(spatial_dims, 2 * f, f, **up)
        )
        self.head = _padded_conv(spatial_dims, f, self.out_channels, 7, conv_only=True)
        self.apply(normal_init)
        if residual:
            conv = self.head[1].conv
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.spatial_dims, self.in_channels)
        check_spatial_divisible(x, self.divisor, "the ResNet generator downsamples twice by 2")
        out = self.head(self.decoder(self.blocks(self.encoder(x))))
        return x + out if self.residual else out
