"""
Building blocks of SAGAN segmentation (Siddiqui, "Self Attention Network for Medical Image Segmentation"),
which takes them from SAGAN (Zhang, Goodfellow, Metaxas, Odena, "Self-Attention Generative Adversarial
Networks", ICML 2019) and spectral normalisation (Miyato et al., ICLR 2018):

- :class:`SelfAttention`: the SAGAN self-attention module (section 3 of Zhang et al.), with the learned gate
  ``gamma`` initialised to 0 and the residual ``y = gamma * o + x``;
- :class:`SNResidualBlock`: a pre-activation residual block whose convolutions are spectrally normalised
  (``torch.nn.utils.parametrizations.spectral_norm``), downsampling, upsampling or keeping the resolution,
  as the residual blocks of SAGAN's generator and discriminator.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from monai_ext.networks.blocks.attention import spatial_attention
from monai_ext.utils.checks import (
    check_choice,
    check_input_shape,
    check_positive_int,
    check_spatial_dims,
    check_spatial_divisible,
)

__all__ = ["RESAMPLE_MODES", "SNResidualBlock", "SelfAttention", "sn_conv"]

#: resampling of :class:`SNResidualBlock`: keep the resolution, halve it (average pooling), double it (nearest).
RESAMPLE_MODES: tuple[str, str, str] = ("none", "down", "up")


def sn_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    bias: bool = True,
    spectral_norm: bool = True,
) -> nn.Module:
    """
    A stride-1 convolution with ``same`` padding (odd ``kernel_size``), spectrally normalised when
    ``spectral_norm`` is true: its weight, reshaped to ``(out_channels, in_channels * prod(kernel))``, is divided
    by its largest singular value, estimated by one power iteration per training-mode forward.
    """
    kernel_size = check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}.")
    conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    return _spectral_norm(conv) if spectral_norm else conv


class SelfAttention(nn.Module):
    """
    SAGAN self-attention (Zhang et al. 2019, eq. 1-3). With the 1x1 projections ``f`` (key), ``g`` (query),
    ``h`` (value) to ``inter_channels`` ``C'`` and ``v`` (output) back to ``C``:

    .. math::

        \\beta_{j,i} = \\operatorname{softmax}_i\\big(f(x_i)^T g(x_j)\\big), \\qquad
        o_j = v\\Big(\\sum_i \\beta_{j,i}\\, h(x_i)\\Big), \\qquad y_j = \\gamma\\, o_j + x_j,

    over all ``N = prod(spatial)`` positions, with no ``1/sqrt(C')`` scaling (as in SAGAN) and the learned scalar
    gate ``gamma`` initialised to 0, so the block is the identity at initialisation and learns how much
    non-local evidence to add. ``C' = C / 8`` by default, the paper's choice for ``f``, ``g`` and ``h``.

    The attention runs in :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1.0`` on
    contiguous ``(B, 1, N, C')`` tensors, so fused kernels (flash attention on CPU, memory-efficient attention on
    CUDA) apply and the ``N x N`` matrix is never materialised; query, key and value share the width ``C'`` because
    the CPU flash kernel requires it.

    Biases: the key has none (``g(x_j)^T b_f`` is constant over ``i`` and cancels in the softmax); the value has
    none (the weights sum to 1, so its bias would only add a constant that the output projection's bias already
    can). All four projections are spectrally normalised when ``spectral_norm`` is true (SAGAN normalises every
    layer of both networks).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input (and output) channels ``C``.
        inter_channels: query/key/value channels ``C'``; default ``max(in_channels // 8, 1)``.
        spectral_norm: spectrally normalise the four projections.

    Shapes:
        input ``(B, C, *spatial)``, output ``(B, C, *spatial)``.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, inter_channels: int | None = None, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        inter_channels = check_positive_int("inter_channels", inter_channels, allow_none=True)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // 8, 1) if inter_channels is None else inter_channels
        c, c_inter = in_channels, self.inter_channels
        self.query = sn_conv(spatial_dims, c, c_inter, bias=True, spectral_norm=spectral_norm)  # g
        self.key = sn_conv(spatial_dims, c, c_inter, bias=False, spectral_norm=spectral_norm)  # f
        self.value = sn_conv(spatial_dims, c, c_inter, bias=False, spectral_norm=spectral_norm)  # h
        self.out = sn_conv(spatial_dims, c_inter, c, bias=True, spectral_norm=spectral_norm)  # v
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """
        Attention output ``o`` before the gate.

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, C, *spatial)``.
        """
        return self.out(spatial_attention(self.query(x), self.key(x), self.value(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``gamma * o + x``, ``(B, in_channels, *spatial)``.
        """
        check_input_shape(x, self.spatial_dims, self.in_channels)
        return self.gamma * self.attention(x) + x


class SNResidualBlock(nn.Module):
    """
    Pre-activation residual block with spectrally normalised convolutions, the block of SAGAN's generator and
    discriminator (Miyato et al.'s ResNet GAN blocks):

    .. code-block:: text

        main:     [norm] -> act -> [up] -> conv kxk -> [norm] -> act -> conv kxk -> [down]
        shortcut: [up] -> conv 1x1 -> [down]      (identity when the channels and the resolution are kept)

    ``up`` is nearest-neighbour upsampling by 2, ``down`` is 2x2 average pooling. With ``preactivation=False``
    the first ``[norm] -> act`` is left out (the first block of a network, which sees the raw input) and, as in
    SAGAN's first discriminator block, the shortcut pools before its 1x1 convolution. ``norm=None`` is the
    discriminator's block (spectral norm only); the generator uses batch norm.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels.
        out_channels: output channels.
        resample: ``"none"``, ``"down"`` (halve every spatial size) or ``"up"`` (double it).
        norm: MONAI norm spec (``"batch"``, ``"instance"``, ``("group", {"num_groups": 8})``) or None.
        act: MONAI activation spec, ``"relu"`` by default.
        kernel_size: odd kernel size of the two main convolutions.
        spectral_norm: spectrally normalise every convolution.
        preactivation: apply ``[norm] -> act`` before the first convolution.

    Shapes:
        input ``(B, in_channels, *spatial)``; output ``(B, out_channels, *spatial')`` with ``spatial' = spatial``,
        ``spatial // 2`` or ``2 * spatial``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        resample: str = "none",
        norm: str | tuple | None = None,
        act: str | tuple = "relu",
        kernel_size: int = 3,
        spectral_norm: bool = True,
        preactivation: bool = True,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        out_channels = check_positive_int("out_channels", out_channels)
        resample = check_choice("resample", resample, RESAMPLE_MODES)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resample = resample
        self.preactivation = preactivation

        def norm_layer(channels: int) -> nn.Module:
            return nn.Identity() if norm is None else get_norm_layer(norm, spatial_dims, channels)

        self.pre = nn.Sequential(norm_layer(in_channels), get_act_layer(act)) if preactivation else nn.Identity()
        self.conv1 = sn_conv(spatial_dims, in_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.mid = nn.Sequential(norm_layer(out_channels), get_act_layer(act))
        self.conv2 = sn_conv(spatial_dims, out_channels, out_channels, kernel_size, spectral_norm=spectral_norm)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels and resample == "none"
            else sn_conv(spatial_dims, in_channels, out_channels, 1, spectral_norm=spectral_norm)
        )
        self.up: nn.Module = nn.Upsample(scale_factor=2, mode="nearest") if resample == "up" else nn.Identity()
        self.down: nn.Module = Pool[Pool.AVG, spatial_dims](kernel_size=2) if resample == "down" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *spatial)``; with ``resample="down"`` every spatial size must be even.

        Returns:
            ``(B, out_channels, *spatial')``.
        """
        check_input_shape(x, self.spatial_dims, self.in_channels)
        if self.resample == "down":
            check_spatial_divisible(x, 2, "resample='down' needs even sizes")
        h = self.down(self.conv2(self.mid(self.conv1(self.up(self.pre(x))))))
        if self.preactivation:
            skip = self.down(self.shortcut(self.up(x)))
        else:  # SAGAN's first discriminator block: pool, then project
            skip = self.shortcut(self.down(self.up(x)))
        return h + skip
