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
Non-local context encoding network (NLCEN): He et al., "Non-Local Context Encoder: Robust Biomedical Image
Segmentation against Adversarial Attacks", AAAI 2019, https://arxiv.org/abs/1904.12181.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import FeaturePyramidNetwork
from monai.networks.layers.factories import Conv
from monai.networks.nets.resnet import ResNet, ResNetBottleneck, get_inplanes, resnet_params
from torch import nn

from monai_ext.networks.blocks import NLCE
from monai_ext.utils.checks import check_choice, check_positive_int, check_spatial_dims

__all__ = ["NLCEN"]

_INTERP_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


class NLCEN(nn.Module):
    """
    Non-local context encoding network (NLCEN), a coarse-to-fine segmentation network:

    - **global phase**: a ResNet backbone (MONAI's :py:class:`monai.networks.nets.ResNet`, randomly initialised)
      gives the features of conv2..conv5 (``layer1``..``layer4``, strides 4, 8, 16, 32); an
      :py:class:`monai_ext.networks.blocks.NLCE` on each gives E2..E5; MONAI's
      :py:class:`~monai.networks.blocks.FeaturePyramidNetwork` (1x1 laterals, nearest top-down upsampling and
      addition, 3x3 output convolutions) gives P2..P5, each with ``fpn_channels`` channels. Each Pi feeds its own
      3x3 convolution to ``out_channels``, interpolated (bilinear in 2D, trilinear in 3D) to the input size: the
      four coarse predictions, each supervised on its own.
    - **refinement phase**: P2, P3, P4, P5 go through 0, 1, 2, 3 residual bottleneck blocks
      (:py:class:`monai.networks.nets.resnet.ResNetBottleneck`, ``fpn_channels`` in and out), are interpolated to
      the size of P2 and concatenated; a 3x3 convolution on the fused map gives the refined prediction, which is
      interpolated to the input size. This is the network's prediction at test time.

    Train with the loss of eq. 5, ``L = 1/4 * sum_i L_g^i + 0.25 * L_r``, i.e. weight 0.25 on each of the five
    train-mode outputs: ``monai.losses.DeepSupervisionLoss(loss, weights=[0.25] * 5)`` does exactly that with the
    list this network returns in train mode (all five outputs are at input resolution, so no target is resized).

    The ablations of the paper are switches: ``use_nlce=False`` ("w/o NLCE", the NLCE modules become identities),
    ``use_nonlocal=False`` ("w/o NL") and ``use_context=False`` ("w/o CE"), passed to every NLCE.

    Any input size works (sizes need not be multiples of 32): every upsampling goes to an exact ``size``.

    Args:
        spatial_dims: number of spatial dimensions of the input, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        backbone: ResNet variant of the backbone, one of ``resnet10``, ``resnet18`` (the paper's choice for JSRT),
            ``resnet34``, ``resnet50`` (the paper's choice for ISBI 2016), ``resnet101``, ``resnet152``,
            ``resnet200``. The backbone is randomly initialised (no weights are downloaded) and uses projection
            (1x1 convolution) shortcuts, as the ImageNet ResNets do.
        fpn_channels: channels of the pyramid maps P2..P5 and of the refinement bottlenecks; 256 as in FPN.
            Must be divisible by 4 (the bottleneck width is ``fpn_channels // 4``). Smaller values (64, 128) make
            a much lighter network for CPU training.
        use_nlce: whether to put an NLCE on each of conv2..conv5; ``False`` replaces them with identities.
        use_nonlocal: passed to every NLCE: whether to use its non-local (spatial dependency) part.
        use_context: passed to every NLCE: whether to use its context encoding (channel attention) part.
        num_codes: number of codewords K of every NLCE's codebook.
        nlce_inter_channels: ``inter_channels`` of every NLCE; ``None`` takes the NLCE default.
        nlce_code_channels: ``code_channels`` of every NLCE; ``None`` takes the NLCE default.
        deep_supervision: whether the train-mode forward returns the five outputs (default) or, if ``False``,
            only the refined logits (for a plain loss; the coarse heads then get no gradient).

    Forward:
        input: ``(B, in_channels, *spatial)``.

        - eval mode (``self.training`` is ``False``): the refined logits, one tensor ``(B, out_channels, *spatial)``,
          so MONAI inferers, ``verify_net_in_out`` and MONAI Label work unchanged.
        - train mode with ``deep_supervision=True``: a list of five tensors
          ``[refined, coarse2, coarse3, coarse4, coarse5]``, each ``(B, out_channels, *spatial)`` at input
          resolution; ``coarse{i}`` is the prediction from Pi.

    Example::

        >>> net = NLCEN(spatial_dims=2, in_channels=1, out_channels=2, backbone="resnet18")
        >>> loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True), weights=[0.25] * 5)
        >>> outputs = net(torch.rand(2, 1, 96, 96))  # train mode: 5 tensors (2, 2, 96, 96)
        >>> net.eval(); net(torch.rand(2, 1, 96, 96)).shape
        torch.Size([2, 2, 96, 96])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        backbone: str = "resnet18",
        fpn_channels: int = 256,
        use_nlce: bool = True,
        use_nonlocal: bool = True,
        use_context: bool = True,
        num_codes: int = 32,
        nlce_inter_channels: int | None = None,
        nlce_code_channels: int | None = None,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims, allowed=(2, 3))
        backbone = check_choice("backbone", backbone, tuple(resnet_params))
        in_channels = check_positive_int("in_channels", in_channels)
        out_channels = check_positive_int("out_channels", out_channels)
        num_codes = check_positive_int("num_codes", num_codes)
        fpn_channels = check_positive_int("fpn_channels", fpn_channels)
        if fpn_channels % 4 != 0:
            raise ValueError(f"fpn_channels must be a positive multiple of 4, got {fpn_channels}.")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.fpn_channels = fpn_channels
        self.use_nlce = use_nlce
        self.deep_supervision = deep_supervision
        self.interp_mode = _INTERP_MODE[spatial_dims]

        # backbone: the ResNet of ``ResNetFeatures`` (7x7 stride-2 stem, max pooling), but with projection
        # shortcuts: MedicalNet's shortcut "A" of ResNetFeatures(resnet18/34) cuts the gradient of the shortcut
        # (it pads ``x.data``), which matters for a network meant to be attacked through its input gradient.
        block, layers, _, _, _ = resnet_params[backbone]
        self.backbone = ResNet(
            block=block,
            layers=layers,
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=2,
            shortcut_type="B",
            feed_forward=False,
            bias_downsample=False,
        )
        expansion = 4 if block == "bottleneck" else 1
        feature_channels = [c * expansion for c in get_inplanes()]  # conv2..conv5
        self.feature_channels = feature_channels

        # E2..E5
        self.nlce = nn.ModuleList(
            [
                (
                    NLCE(
                        spatial_dims=spatial_dims,
                        in_channels=c,
                        inter_channels=nlce_inter_channels,
                        num_codes=num_codes,
                        code_channels=nlce_code_channels,
                        use_nonlocal=use_nonlocal,
                        use_context=use_context,
                    )
                    if use_nlce
                    else nn.Identity()
                )
                for c in feature_channels
            ]
        )

        # P2..P5
        self.fpn = FeaturePyramidNetwork(spatial_dims, feature_channels, fpn_channels)

        conv_type = Conv[Conv.CONV, spatial_dims]
        # coarse predictions from P2..P5
        self.coarse_heads = nn.ModuleList(
            [conv_type(fpn_channels, out_channels, kernel_size=3, padding=1) for _ in feature_channels]
        )
        # refinement: 0, 1, 2, 3 bottlenecks on P2, P3, P4, P5, then a 3x3 convolution on their concatenation
        self.refine_blocks = nn.ModuleList(
            [
                nn.Sequential(*[ResNetBottleneck(fpn_channels, fpn_channels // 4, spatial_dims) for _ in range(n)])
                for n in range(len(feature_channels))
            ]
        )
        self.refine_head = conv_type(len(feature_channels) * fpn_channels, out_channels, kernel_size=3, padding=1)

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """
        Backbone features of conv2..conv5.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            four tensors ``(B, feature_channels[i], *spatial / 2**(i + 2))`` (sizes rounded up).
        """
        bb = self.backbone
        x = bb.maxpool(bb.act(bb.bn1(bb.conv1(x))))
        c2 = bb.layer1(x)
        c3 = bb.layer2(c2)
        c4 = bb.layer3(c3)
        return [c2, c3, c4, bb.layer4(c4)]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """
        Global phase up to the pyramid.

        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``[P2, P3, P4, P5]``, each ``(B, fpn_channels, *spatial / 2**(i + 2))``.
        """
        features = self.extract_features(x)
        enhanced: dict[str, torch.Tensor] = {}
        for i, nlce in enumerate(self.nlce):
            enhanced[f"e{i + 2}"] = nlce(features[i])
        return list(self.fpn(enhanced).values())

    def _resize(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        if list(x.shape[2:]) == size:
            return x
        return F.interpolate(x, size=size, mode=self.interp_mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """
        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            in eval mode (or with ``deep_supervision=False``) the refined logits ``(B, out_channels, *spatial)``;
            in train mode ``[refined, coarse2, coarse3, coarse4, coarse5]``, each ``(B, out_channels, *spatial)``.
        """
        size = list(x.shape[2:])
        p = self.pyramid(x)

        p2_size = list(p[0].shape[2:])
        fused = torch.cat([self._resize(blocks(p[i]), p2_size) for i, blocks in enumerate(self.refine_blocks)], dim=1)
        refined = self._resize(self.refine_head(fused), size)
        if not (self.training and self.deep_supervision):
            return refined

        outputs = [refined]
        for i, head in enumerate(self.coarse_heads):
            outputs.append(self._resize(head(p[i]), size))
        return outputs
