"""Softmax attention over all positions of feature maps, through PyTorch's fused kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["spatial_attention"]


def spatial_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """
    ``softmax(Q K^T) V`` over the N positions of 1D/2D/3D feature maps, unscaled (the embedded Gaussian of the
    non-local block and SAGAN's attention), without materialising the N x N matrix where PyTorch allows.

    The maps become ``(B, 1, N, C')`` tensors with a unit-stride last dimension: one head, 4D and contiguous, as the
    fused (flash / memory-efficient) kernels of ``scaled_dot_product_attention`` require; otherwise it silently falls
    back to the N x N math path.

    Args:
        query: ``(B, C', *spatial)``.
        key: ``(B, C', *spatial)``.
        value: ``(B, C', *spatial)``.

    Returns:
        ``(B, C', *spatial)``, the attention-weighted values at each position.
    """
    shape = list(value.shape)  # (B, C', *spatial) as a list of ints, which TorchScript can reshape to
    q = query.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
    k = key.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
    v = value.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, N, C')
    return out.squeeze(1).transpose(1, 2).reshape(shape)
