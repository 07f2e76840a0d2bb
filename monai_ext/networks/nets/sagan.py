"""
The two networks of SAGAN segmentation (Siddiqui, "Self Attention Network for Medical Image Segmentation"):

- :class:`SAGANGenerator`: "U-net architecture with ResNet layers" that maps an image to class logits, built from
  spectral-norm residual blocks with SAGAN self-attention in the encoder and, mirrored, in the decoder;
- :class:`SAGANDiscriminator`: the SAGAN discriminator ("remains the same as of the original SAGAN paper":
  spectral-norm residual blocks, self-attention, ReLU, global sum pooling, a spectral-norm linear score), made
  conditional: it judges a segmentation map (one-hot ground truth or softmax prediction) together with its image.

The paper gives no further architecture details (depth, widths, where the attention sits); the defaults follow
SAGAN (Zhang et al. 2019), which places self-attention on middle-to-high level feature maps, at a quarter of the
image size (its ``feat32`` of 128 x 128 images): encoder/decoder level 2 of the generator, after the second block
of the discriminator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from monai_ext.networks.blocks.sagan import SelfAttention, SNResidualBlock, sn_conv
from monai_ext.networks.utils import fold_parametrizations
from monai_ext.utils.checks import check_input_shape, check_positive_int, check_spatial_dims, check_spatial_divisible

__all__ = ["SAGANDiscriminator", "SAGANGenerator"]


def _check_channels(channels: Sequence[int], min_levels: int) -> tuple[int, ...]:
    channels = tuple(channels)
    if len(channels) < min_levels or any(isinstance(c, bool) or int(c) != c or c < 1 for c in channels):
        raise ValueError(f"channels must list at least {min_levels} positive integers, got {list(channels)}.")
    return tuple(int(c) for c in channels)


def _check_levels(name: str, levels: Sequence[int], num_levels: int) -> tuple[int, ...]:
    levels = tuple(levels)
    bad = [lvl for lvl in levels if isinstance(lvl, bool) or int(lvl) != lvl or not 0 <= lvl < num_levels]
    if bad or len(set(levels)) != len(levels):
        raise ValueError(f"{name} must be distinct levels in [0, {num_levels - 1}], got {list(levels)}.")
    return tuple(sorted(int(lvl) for lvl in levels))


class SAGANGenerator(nn.Module):
    """
    Segmentation generator of SAGAN segmentation: a U-Net of spectral-norm residual blocks
    (:class:`~monai_ext.networks.blocks.SNResidualBlock`, batch norm, ReLU) with SAGAN self-attention.

    .. code-block:: text

        encoder level 0:  block(in -> c0)                                   [+ attention]   at the input size
        encoder level i:  avg pool 2, block(c(i-1) -> ci)                   [+ attention]   at 1 / 2^i
        decoder level i:  nearest up 2, concat encoder level i, block(c(i+1) + ci -> ci) [+ attention]
        head:             norm -> act -> conv 1x1 (c0 -> out_channels)

    As in a U-Net, the blocks of a level run at that level's resolution (pooling before the encoder block,
    upsampling before the decoder block), which keeps the full-resolution work to two blocks. Self-attention
    follows the encoder block and the decoder block of every level in ``attention_levels`` (the same levels in
    both paths). Every convolution, the attention projections included,
    is spectrally normalised when ``spectral_norm`` is true (SAGAN normalises both networks).

    The forward returns class logits in training and eval mode alike, so MONAI's inferers and bundle checks work.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: image channels.
        out_channels: number of classes (background included).
        channels: feature channels of the levels, from the input resolution down; ``len(channels) - 1``
            downsamplings, so every spatial size must be divisible by ``2 ** (len(channels) - 1)``.
        attention_levels: levels (0 = input resolution) with self-attention in the encoder and the decoder.
        norm: MONAI norm spec of the residual blocks and the head.
        act: MONAI activation spec.
        spectral_norm: spectrally normalise every convolution.

    Shapes:
        input ``(B, in_channels, *spatial)``, output ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        attention_levels: Sequence[int] = (2,),
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        out_channels = check_positive_int("out_channels", out_channels)
        self.channels = _check_channels(channels, 2)
        self.attention_levels = _check_levels("attention_levels", attention_levels, len(self.channels))
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self._divisor = 2 ** (len(self.channels) - 1)
        self._divisor_reason = f"2 ** (len(channels) - 1) with channels {list(self.channels)}"
        ch = self.channels
        common = {"norm": norm, "act": act, "spectral_norm": spectral_norm}

        def attention(level: int) -> nn.Module:
            if level in self.attention_levels:
                return SelfAttention(spatial_dims, ch[level], spectral_norm=spectral_norm)
            return nn.Identity()

        self.encoder = nn.ModuleList(
            [SNResidualBlock(spatial_dims, in_channels, ch[0], preactivation=False, **common)]
            + [SNResidualBlock(spatial_dims, ch[i - 1], ch[i], **common) for i in range(1, len(ch))]
        )
        self.encoder_attention = nn.ModuleList([attention(i) for i in range(len(ch))])
        # decoder modules are indexed by level 0 .. len(ch) - 2 (the deepest level has no decoder stage)
        self.decoder = nn.ModuleList(
            [SNResidualBlock(spatial_dims, ch[i + 1] + ch[i], ch[i], **common) for i in range(len(ch) - 1)]
        )
        self.decoder_attention = nn.ModuleList([attention(i) for i in range(len(ch) - 1)])
        self.down = Pool[Pool.AVG, spatial_dims](kernel_size=2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Sequential(
            get_norm_layer(norm, spatial_dims, ch[0]),
            get_act_layer(act),
            sn_conv(spatial_dims, ch[0], out_channels, 1, spectral_norm=spectral_norm),
        )

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this."""
        return self._divisor

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script(net)`` compiles a copy with its spectral norms folded (eval-mode outputs unchanged)."""
        return fold_parametrizations(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *spatial)``, every spatial size divisible by :py:attr:`divisor`.

        Returns:
            logits ``(B, out_channels, *spatial)``.
        """
        check_input_shape(x, self.spatial_dims, self.in_channels)
        check_spatial_divisible(x, self._divisor, self._divisor_reason)
        skips: list[torch.Tensor] = []
        h = x
        for level, (block, attn) in enumerate(zip(self.encoder, self.encoder_attention)):
            h = attn(block(self.down(h) if level > 0 else h))
            skips.append(h)
        # the decoder runs from the deepest level up; TorchScript walks a ModuleList only forwards (with a constant
        # index), so each step picks its level's modules from a forward walk
        for level in range(len(self.decoder) - 1, -1, -1):
            for i, (decoder, attention) in enumerate(zip(self.decoder, self.decoder_attention)):
                if i == level:
                    h = attention(decoder(torch.cat([self.up(h), skips[i]], dim=1)))
        return self.head(h)


class SAGANDiscriminator(nn.Module):
    """
    Conditional SAGAN discriminator: scores how real a segmentation map looks for its image.

    The image ``(B, in_channels, *spatial)`` and the segmentation map ``(B, num_classes, *spatial)`` (one-hot ground
    truth or softmax prediction) are concatenated along the channels and passed through SAGAN's discriminator:

    .. code-block:: text

        block 0:       block(in_channels + num_classes -> c0, down), no pre-activation   at 1/2
        block i:       block(c(i-1) -> ci, down)  (the last block keeps the resolution)
        [+ attention after the blocks listed in attention_levels]
        act -> sum over all positions -> spectral-norm linear (c_last -> 1)

    The blocks have no normalisation layer besides spectral norm, as in SAGAN. The score is unbounded (hinge loss,
    :py:class:`monai_ext.losses.HingeDiscriminatorLoss`): large for real pairs, small for generated ones.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: image channels.
        num_classes: channels of the segmentation map.
        channels: output channels of the blocks; all but the last block halve the resolution, so every spatial size
            must be divisible by ``2 ** (len(channels) - 1)``. The default has SAGAN's depth for 128 x 128 images
            (five downsampling blocks and one more, ending at 4 x 4) at half its widths.
        attention_levels: indices of the blocks followed by self-attention (block ``i < len(channels) - 1`` outputs
            ``1 / 2^(i + 1)`` of the input size); ``(1,)`` is SAGAN's place, a quarter of the input size.
        act: MONAI activation spec.
        spectral_norm: spectrally normalise every convolution and the final linear layer.

    Shapes:
        inputs ``(B, in_channels, *spatial)`` and ``(B, num_classes, *spatial)``, output ``(B, 1)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 256, 512, 512),
        attention_levels: Sequence[int] = (1,),
        act: str | tuple = "relu",
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        num_classes = check_positive_int("num_classes", num_classes)
        self.channels = _check_channels(channels, 1)
        self.attention_levels = _check_levels("attention_levels", attention_levels, len(self.channels))
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self._divisor = 2 ** (len(self.channels) - 1)
        self._divisor_reason = f"2 ** (len(channels) - 1) with channels {list(self.channels)}"
        self._spatial_axes = list(range(2, spatial_dims + 2))
        ch = self.channels
        last = len(ch) - 1

        def block(i: int) -> nn.Module:
            resample = "down" if i < last else "none"
            if i == 0:
                return SNResidualBlock(
                    spatial_dims, in_channels + num_classes, ch[0], resample, act=act,
                    spectral_norm=spectral_norm, preactivation=False,
                )  # fmt: skip
            return SNResidualBlock(spatial_dims, ch[i - 1], ch[i], resample, act=act, spectral_norm=spectral_norm)

        self.blocks = nn.ModuleList([block(i) for i in range(len(ch))])
        self.attention = nn.ModuleList(
            [
                SelfAttention(spatial_dims, ch[i], spectral_norm=spectral_norm) if i in self.attention_levels
                else nn.Identity()
                for i in range(len(ch))
            ]
        )  # fmt: skip
        self.act = get_act_layer(act)
        linear = nn.Linear(ch[-1], 1)
        self.linear = _spectral_norm(linear) if spectral_norm else linear

    @property
    def divisor(self) -> int:
        """Every spatial size of the inputs must be a multiple of this."""
        return self._divisor

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script(net)`` compiles a copy with its spectral norms folded (eval-mode outputs unchanged)."""
        return fold_parametrizations(self)

    def forward(self, image: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
        """
        Args:
            image: ``(B, in_channels, *spatial)``.
            segmentation: ``(B, num_classes, *spatial)``, one-hot or class probabilities.

        Returns:
            realness scores ``(B, 1)``.
        """
        check_input_shape(image, self.spatial_dims, self.in_channels, name="image")
        expected = [image.shape[0], self.num_classes] + list(image.shape[2:])
        if list(segmentation.shape) != expected:
            raise ValueError(
                f"segmentation must have shape (B, num_classes={self.num_classes}, *spatial) matching the image "
                f"{list(image.shape)}, got shape {list(segmentation.shape)}."
            )
        check_spatial_divisible(image, self._divisor, self._divisor_reason, name="image")
        h = torch.cat([image, segmentation.to(image.dtype)], dim=1)
        for block, attn in zip(self.blocks, self.attention):
            h = attn(block(h))
        return self.linear(self.act(h).sum(dim=self._spatial_axes))
