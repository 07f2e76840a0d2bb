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
FC-DenseNet, "the one hundred layers Tiramisu": Jegou, Drozdzal, Vazquez, Romero and Bengio, "The One Hundred Layers
Tiramisu: Fully Convolutional DenseNets for Semantic Segmentation", CVPR workshops 2017,
https://arxiv.org/abs/1611.09326; here as an image-to-image network with a linear last layer, the translator of
Taghanaki et al., "Improved Inference via Deep Input Transfer", MICCAI 2019.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Dropout, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from monai_ext.utils.checks import (
    check_fraction,
    check_input_shape,
    check_positive_int,
    check_spatial_dims,
    check_spatial_divisible,
)

__all__ = ["FC_DENSENET_CONFIGS", "FCDenseNet"]

#: layers per dense block (down path; the up path mirrors it), layers of the bottleneck block and growth rate
#: of the three networks of the Tiramisu paper (Table 2 and section 4), by their number of layers.
FC_DENSENET_CONFIGS: dict[int, tuple[tuple[int, ...], int, int]] = {
    56: ((4, 4, 4, 4, 4), 4, 12),
    67: ((5, 5, 5, 5, 5), 5, 16),
    103: ((4, 5, 7, 10, 12), 15, 16),
}


class _DenseLayer(nn.Sequential):
    """Norm, activation, 3x3 convolution to ``growth_rate`` maps, dropout (the Tiramisu's "layer")."""

    def __init__(
        self, spatial_dims: int, in_channels: int, growth_rate: int, dropout: float, norm: str | tuple, act: str | tuple
    ) -> None:
        super().__init__(
            get_norm_layer(norm, spatial_dims, in_channels),
            get_act_layer(act),
            Conv[Conv.CONV, spatial_dims](in_channels, growth_rate, kernel_size=3, padding=1),
            Dropout[Dropout.DROPOUT, spatial_dims](dropout),
        )


class _DenseBlock(nn.Module):
    """
    ``num_layers`` layers, each fed the concatenation of the block's input and every earlier layer's output.
    Returns that whole concatenation (down path), or only the layers' outputs with ``new_only`` (the up path and
    the bottleneck: the input is not upsampled again, which keeps the up path's width in check).
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_layers: int, growth_rate: int, dropout: float,
                 norm: str | tuple, act: str | tuple, new_only: bool) -> None:  # fmt: skip
        super().__init__()
        self.new_only = new_only
        self.layers = nn.ModuleList(
            _DenseLayer(spatial_dims, in_channels + i * growth_rate, growth_rate, dropout, norm, act)
            for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new: list[torch.Tensor] = []
        for layer in self.layers:
            out = layer(x)
            x = torch.cat([x, out], dim=1)
            new.append(out)
        return torch.cat(new, dim=1) if self.new_only else x


class _Down(nn.Module):
    """A dense block, then the transition down (norm, activation, 1x1 convolution, dropout, 2x2 max pooling)."""

    def __init__(self, spatial_dims: int, in_channels: int, num_layers: int, growth_rate: int, dropout: float,
                 norm: str | tuple, act: str | tuple) -> None:  # fmt: skip
        super().__init__()
        self.block = _DenseBlock(spatial_dims, in_channels, num_layers, growth_rate, dropout, norm, act, False)
        self.out_channels = in_channels + num_layers * growth_rate
        self.transition = nn.Sequential(
            get_norm_layer(norm, spatial_dims, self.out_channels),
            get_act_layer(act),
            Conv[Conv.CONV, spatial_dims](self.out_channels, self.out_channels, kernel_size=1),
            Dropout[Dropout.DROPOUT, spatial_dims](dropout),
            Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.block(x)
        return skip, self.transition(skip)


class _Up(nn.Module):
    """The transition up (3x3 transposed convolution of stride 2), the skip concatenated, a dense block."""

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, num_layers: int, growth_rate: int,
                 dropout: float, norm: str | tuple, act: str | tuple, new_only: bool) -> None:  # fmt: skip
        super().__init__()
        self.upsample = Conv[Conv.CONVTRANS, spatial_dims](
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, output_padding=1
        )
        block_in = in_channels + skip_channels
        self.block = _DenseBlock(spatial_dims, block_in, num_layers, growth_rate, dropout, norm, act, new_only)
        self.out_channels = num_layers * growth_rate + (0 if new_only else block_in)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upsample(x), skip], dim=1))


class FCDenseNet(nn.Module):
    """
    FC-DenseNet (the Tiramisu) of Jegou et al. 2017, as an image-to-image network with a linear last layer.

    .. code-block:: text

        conv 3x3 (in -> init_features)
        down level i:  dense block (concatenating), transition down (1x1 conv, 2x2 max pool)     x 5
        bottleneck:    dense block (new maps only)
        up level i:    3x3 transposed conv stride 2, concat skip i, dense block (new maps only; the last: all)  x 5
        head:          1x1 conv -> out_channels, no activation (linear)

    ``num_layers`` picks the paper's networks: 103 (blocks of 4, 5, 7, 10, 12 layers, a bottleneck of 15, growth
    16), 67 (5 layers per block, growth 16) or 56 (4 layers per block, growth 12). A layer is norm, activation, 3x3
    convolution and dropout.

    With ``residual`` the network returns ``x + head(features)``: it predicts the change of the image, and its head
    starts at zero, so that the untrained network is the identity. The translator of deep input transfer (Taghanaki
    et al. 2019) maps ``I`` to ``I + Delta`` this way: the head predicts the perturbation ``Delta``, which "can have
    negative values" (hence the linear last layer), and before any training the translator leaves the segmenter's
    input as it is.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        out_channels: output channels; ``None`` (default) is ``in_channels`` (image to image). ``residual`` needs
            them equal.
        num_layers: 103 (default, the paper's), 67 or 56; see :data:`FC_DENSENET_CONFIGS`.
        growth_rate: maps each layer adds; ``None`` takes the paper's for ``num_layers``.
        init_features: maps of the first convolution (48 in the paper).
        dropout: dropout rate of every layer and transition down (0.2 in the paper).
        residual: return ``x + head(features)``, the head initialised to zero.
        norm: MONAI norm spec (batch norm in the paper).
        act: MONAI activation spec (ReLU in the paper).

    Shapes:
        input ``(B, in_channels, *spatial)``, every spatial size divisible by 32 (five 2x2 poolings); output
        ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        num_layers: int = 103,
        growth_rate: int | None = None,
        init_features: int = 48,
        dropout: float = 0.2,
        residual: bool = False,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims, (2, 3))
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = (
            self.in_channels if out_channels is None else check_positive_int("out_channels", out_channels)
        )
        if num_layers not in FC_DENSENET_CONFIGS or isinstance(num_layers, bool):
            raise ValueError(f"num_layers must be one of {sorted(FC_DENSENET_CONFIGS)}, got {num_layers!r}.")
        block_layers, bottleneck_layers, default_growth = FC_DENSENET_CONFIGS[int(num_layers)]
        growth = default_growth if growth_rate is None else check_positive_int("growth_rate", growth_rate)
        init_features = check_positive_int("init_features", init_features)
        dropout = check_fraction("dropout", dropout, allow_one=False)
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be True or False, got {residual!r}.")
        if residual and self.out_channels != self.in_channels:
            raise ValueError(f"residual needs out_channels == in_channels, got {self.out_channels} and {in_channels}.")
        self.residual = residual
        self.divisor = 2 ** len(block_layers)

        self.stem = Conv[Conv.CONV, spatial_dims](in_channels, init_features, kernel_size=3, padding=1)
        channels, skips = init_features, []
        self.down = nn.ModuleList()
        for n in block_layers:
            level = _Down(spatial_dims, channels, n, growth, dropout, norm, act)
            self.down.append(level)
            channels = level.out_channels
            skips.append(channels)
        self.bottleneck = _DenseBlock(spatial_dims, channels, bottleneck_layers, growth, dropout, norm, act, True)
        channels = bottleneck_layers * growth
        self.up = nn.ModuleList()
        for i, n in enumerate(reversed(block_layers)):
            last = i == len(block_layers) - 1
            level = _Up(spatial_dims, channels, skips[-1 - i], n, growth, dropout, norm, act, new_only=not last)
            self.up.append(level)
            channels = level.out_channels
        self.head = Conv[Conv.CONV, spatial_dims](channels, self.out_channels, kernel_size=1)
        if residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, self.spatial_dims, self.in_channels)
        check_spatial_divisible(x, self.divisor, "FC-DenseNet pools 2x2 five times")
        h = self.stem(x)
        skips: list[torch.Tensor] = []
        for level in self.down:
            skip, h = level(h)
            skips.append(skip)
        h = self.bottleneck(h)
        for i, level in enumerate(self.up):
            h = level(h, skips[len(skips) - 1 - i])
        out = self.head(h)
        return x + out if self.residual else out
