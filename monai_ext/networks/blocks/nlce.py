"""Non-local context encoder (NLCE) and its two parts.

He et al., "Non-Local Context Encoder: Robust Biomedical Image Segmentation against Adversarial
Attacks", AAAI 2019, section "Non-Local Context Encoder":

- :class:`NonLocalBlock`: embedded-Gaussian non-local operation, eq. (1)-(2)
  (Wang et al., "Non-local Neural Networks", CVPR 2018), with the residual ``z_i = W_z y_i + x_i``;
- :class:`ContextEncoding`: the encoding layer of eq. (3)
  (Zhang et al., "Context Encoding for Semantic Segmentation" (EncNet), CVPR 2018);
- :class:`NLCE`: both, followed by the channel-wise attention ``F_z * sigmoid(W_gamma e)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm
from torch import nn

from monai_ext.networks.blocks.attention import spatial_attention
from monai_ext.utils.checks import check_input_shape, check_positive_int, check_spatial_dims

__all__ = ["NLCE", "ContextEncoding", "NonLocalBlock"]


class NonLocalBlock(nn.Module):
    """
    Embedded-Gaussian non-local block, eq. (1)-(2) of the NLCE paper (Wang et al. 2018):

    .. math::

        y_i = \\sum_j \\operatorname{softmax}_j\\big(\\theta(x_i)^T \\phi(x_j)\\big)\\, g(x_j), \\qquad
        z_i = W_z y_i + x_i.

    ``theta``, ``phi`` and ``g`` are 1x1 convolutions to ``inter_channels``; the pairwise function is the plain
    exponential of the dot product (eq. 1, no ``1/sqrt(d)`` scaling) normalised by its sum over ``j``, so the
    attention is computed by :func:`torch.nn.functional.scaled_dot_product_attention` with ``scale=1.0`` and
    the ``N x N`` affinity matrix is never materialised here (fused kernels keep memory linear in ``N``).
    ``W_z`` is a 1x1 convolution back to ``in_channels`` followed by batch norm (ordinary init, not zeroed,
    so the block is not an identity at initialisation and gradients reach ``theta``/``phi``/``g``).

    ``phi`` and ``g`` have no bias: ``theta(x_i)^T b_phi`` is constant over ``j`` and cancels in the softmax,
    and ``g``'s bias (the softmax weights sum to 1) as well as ``W_z``'s conv bias are per-channel constants
    that the following batch norm removes. ``theta`` keeps its bias (``b_theta^T phi(x_j)`` depends on ``j``).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input (and output) channels ``C``.
        inter_channels: embedding channels of ``theta``, ``phi``, ``g``; default ``max(in_channels // 2, 1)``.

    Shapes:
        input ``(B, C, *spatial)``, output ``(B, C, *spatial)``; ``N = prod(spatial)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        inter_channels = check_positive_int("inter_channels", inter_channels, allow_none=True)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // 2, 1) if inter_channels is None else inter_channels

        conv_type = Conv[Conv.CONV, spatial_dims]
        self.theta = conv_type(in_channels, self.inter_channels, kernel_size=1)
        self.phi = conv_type(in_channels, self.inter_channels, kernel_size=1, bias=False)
        self.g = conv_type(in_channels, self.inter_channels, kernel_size=1, bias=False)
        self.w_z = nn.Sequential(
            conv_type(self.inter_channels, in_channels, kernel_size=1, bias=False),
            Norm[Norm.BATCH, spatial_dims](in_channels),
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """
        Non-local response ``y`` of eq. (2), before ``W_z``.

        Args:
            x: ``(B, C, *spatial)``.

        Returns:
            ``(B, inter_channels, *spatial)``.
        """
        return spatial_attention(self.theta(x), self.phi(x), self.g(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``z = W_z y + x``, ``(B, in_channels, *spatial)``.
        """
        check_input_shape(x, self.spatial_dims, self.in_channels)
        return self.w_z(self.attention(x)) + x


class ContextEncoding(nn.Module):
    """
    Context encoding of eq. (3) of the NLCE paper (the EncNet encoding layer, Zhang et al. 2018).

    The input is projected by 1x1 conv + BN + ReLU to ``C'' = code_channels`` features ``z'_i``; with a learned
    codebook ``D = {d_k}`` (``K x C''``) and smoothing factors ``s_k``:

    .. math::

        a_{ik} = \\frac{\\exp(-s_k \\|r_{ik}\\|^2)}{\\sum_l \\exp(-s_l \\|r_{il}\\|^2)},\\quad r_{ik} = z'_i - d_k,
        \\qquad e_k = \\sum_i a_{ik} r_{ik}, \\qquad e = \\sum_k \\operatorname{ReLU}(\\operatorname{BN}(e_k)),

    where BN is a ``BatchNorm1d`` over the ``K`` codewords (as in EncNet) and the final reduction is the sum of
    the paper (EncNet takes the mean; this only rescales ``e``).

    Sign convention: ``s`` is stored with the paper's sign (weights ``exp(-s_k ||r||^2)``) and initialised
    uniformly in ``[0, 1]``, which is EncNet's initialisation (``s`` uniform in ``[-1, 0]`` used as
    ``exp(+s_k ||r||^2)``) written in the paper's convention: at initialisation nearer codewords get larger
    weights. Codewords are initialised uniformly in ``+-1/sqrt(K * C'')`` as in EncNet.

    The ``(B, N, K, C'')`` residual tensor is never built: ``||r_ik||^2 = ||z'_i||^2 - 2 z'_i.d_k + ||d_k||^2``
    and ``e_k = sum_i a_ik z'_i - (sum_i a_ik) d_k`` are matrix products; the largest intermediate is ``(B, N, K)``.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels ``C``.
        num_codes: number of codewords ``K``.
        code_channels: codeword dimension ``C''``; default ``min(in_channels, 64)``, which keeps the 1x1
            projection and the codebook small at deep, wide feature levels (e.g. 2048 ResNet channels)
            while leaving narrow inputs unreduced.

    Shapes:
        input ``(B, C, *spatial)``, output ``e``: ``(B, C'')``. In training mode the codeword batch norm
        needs ``B * C'' > 1`` (like any batch norm, it cannot normalise a single value).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, num_codes: int = 32, code_channels: int | None = None
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        num_codes = check_positive_int("num_codes", num_codes)
        code_channels = check_positive_int("code_channels", code_channels, allow_none=True)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_codes = num_codes
        self.code_channels = min(in_channels, 64) if code_channels is None else code_channels

        self.proj = nn.Sequential(
            Conv[Conv.CONV, spatial_dims](in_channels, self.code_channels, kernel_size=1, bias=False),
            Norm[Norm.BATCH, spatial_dims](self.code_channels),
            nn.ReLU(inplace=True),
        )
        self.codewords = nn.Parameter(torch.empty(num_codes, self.code_channels))
        self.scale = nn.Parameter(torch.empty(num_codes))
        self.codeword_norm = nn.BatchNorm1d(num_codes)
        self.reset_codebook()

    def reset_codebook(self) -> None:
        """EncNet initialisation: codewords ~ U(+-1/sqrt(K C'')), s ~ U(0, 1) (paper sign, see class doc)."""
        bound = 1.0 / math.sqrt(self.num_codes * self.code_channels)
        nn.init.uniform_(self.codewords, -bound, bound)
        nn.init.uniform_(self.scale, 0.0, 1.0)

    def assignment(self, z: torch.Tensor) -> torch.Tensor:
        """
        Soft-assignment weights ``a_ik``.

        Args:
            z: projected features ``z'``, ``(B, N, C'')``.

        Returns:
            ``(B, N, K)``, summing to 1 over ``K``.
        """
        d = self.codewords.to(z.dtype)
        dist = (z * z).sum(-1, keepdim=True) - 2.0 * (z @ d.t()) + (d * d).sum(-1)  # ||r_ik||^2, (B, N, K)
        return torch.softmax(-self.scale.to(z.dtype) * dist, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            global context ``e``, ``(B, code_channels)``.
        """
        check_input_shape(x, self.spatial_dims, self.in_channels)
        z = self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C'')
        a = self.assignment(z)  # (B, N, K)
        d = self.codewords.to(z.dtype)
        e_k = a.transpose(1, 2) @ z - a.sum(1).unsqueeze(-1) * d  # sum_i a_ik (z'_i - d_k), (B, K, C'')
        return F.relu(self.codeword_norm(e_k)).sum(1)


class NLCE(nn.Module):
    """
    Non-local context encoder (NLCE) module of He et al. 2019 (Figure 2):

    .. math::

        F_z = \\operatorname{NonLocal}(x)\\ \\text{(eq. 1-2)}, \\quad e = \\operatorname{Enc}(F_z)\\ \\text{(eq. 3)},
        \\quad \\gamma = \\operatorname{sigmoid}(W_\\gamma e), \\quad \\text{out} = F_z \\otimes \\gamma,

    where ``gamma`` (``B x C``) scales the channels of ``F_z`` at every spatial position.

    Ablation switches: ``use_nonlocal=False`` takes ``F_z = x``; ``use_context=False`` returns ``F_z`` without
    channel attention. With both switches off the module is the identity (and has no parameters).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input (and output) channels ``C``.
        inter_channels: non-local embedding channels; default ``max(in_channels // 2, 1)``.
        num_codes: number of codewords ``K`` of the context encoding.
        code_channels: codeword dimension ``C''``; default ``min(in_channels, 64)``.
        use_nonlocal: whether to apply the non-local block.
        use_context: whether to apply the context encoding channel attention.

    Shapes:
        input ``(B, C, *spatial)``, output ``(B, C, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        inter_channels: int | None = None,
        num_codes: int = 32,
        code_channels: int | None = None,
        use_nonlocal: bool = True,
        use_context: bool = True,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_positive_int("in_channels", in_channels)
        inter_channels = check_positive_int("inter_channels", inter_channels, allow_none=True)
        num_codes = check_positive_int("num_codes", num_codes)
        code_channels = check_positive_int("code_channels", code_channels, allow_none=True)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.use_nonlocal = use_nonlocal
        self.use_context = use_context

        self.non_local: nn.Module = (
            NonLocalBlock(spatial_dims, in_channels, inter_channels) if use_nonlocal else nn.Identity()
        )
        self.context: ContextEncoding | None = None
        self.fc: nn.Linear | None = None
        if use_context:
            self.context = ContextEncoding(spatial_dims, in_channels, num_codes, code_channels)
            self.fc = nn.Linear(self.context.code_channels, in_channels)  # W_gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, in_channels, *spatial)``.

        Returns:
            ``F_z * gamma``, ``(B, in_channels, *spatial)``.
        """
        check_input_shape(x, self.spatial_dims, self.in_channels)
        f_z = self.non_local(x)
        if self.context is None or self.fc is None:
            return f_z
        gamma = torch.sigmoid(self.fc(self.context(f_z)))  # (B, C)
        return f_z * gamma.view(list(gamma.shape) + [1] * self.spatial_dims)
