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
The blockwise discrete cosine transform of JPEG and of VAFA (:py:class:`~monai_ext.attacks.VAFA`) in any number of
spatial dimensions: the image is cut into non-overlapping blocks, and each block is transformed by the orthonormal
DCT-II along each of its axes (``scipy.fft.dctn(block, norm="ortho")``). The transform is orthonormal, so the
inverse is the transpose and the Euclidean norm of each block is kept: a change of the coefficients by ``d`` changes
the block by a vector of the same L2 norm ``||d||_2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["block_dct", "block_idct", "dct_matrix", "from_blocks", "to_blocks"]


def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """
    The orthonormal DCT-II matrix ``M`` of size ``n``: ``M[k, i] = s_k cos(pi (2 i + 1) k / (2 n))`` with
    ``s_0 = sqrt(1 / n)`` and ``s_k = sqrt(2 / n)``, so that ``M @ v`` is ``scipy.fft.dct(v, norm="ortho")`` and
    ``M.T @ M`` is the identity. Returns ``(n, n)``.
    """
    i = torch.arange(n, dtype=torch.float64)
    matrix = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix.to(dtype=dtype, device=device)


def _transform(blocks: torch.Tensor, spatial_dims: int, inverse: bool) -> torch.Tensor:
    """The DCT (or its inverse) along each of the last ``spatial_dims`` axes of ``blocks``."""
    for axis in range(blocks.ndim - spatial_dims, blocks.ndim):
        matrix = dct_matrix(blocks.shape[axis], blocks.dtype, blocks.device)
        blocks = (blocks.movedim(axis, -1) @ (matrix if inverse else matrix.T)).movedim(-1, axis)
    return blocks


def to_blocks(images: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """
    Cut ``images`` ``(B, C, *spatial)`` into non-overlapping blocks of ``block_size`` (one size per spatial axis),
    after padding each axis at its end by edge replication to a multiple of the block size.

    Returns:
        ``(B, C, *num_blocks, *block_size)``, with ``num_blocks[i] = ceil(spatial[i] / block_size[i])``.
    """
    spatial = images.shape[2:]
    pad = [-s % b for s, b in zip(spatial, block_size)]
    if any(pad):
        # F.pad lists the last axis first; replication pads 2D and 3D images (4D and 5D tensors)
        images = F.pad(images, [p for size in reversed(pad) for p in (0, size)], mode="replicate")
    shape = [n for s, b in zip(images.shape[2:], block_size) for n in (s // b, b)]
    blocks = images.reshape(*images.shape[:2], *shape)
    dims = len(block_size)
    return blocks.permute(0, 1, *range(2, 2 + 2 * dims, 2), *range(3, 3 + 2 * dims, 2))


def from_blocks(blocks: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """
    Put blocks ``(B, C, *num_blocks, *block_size)`` (:py:func:`to_blocks`) back together and crop the padding.

    Returns:
        ``(B, C, *spatial_shape)``.
    """
    dims = len(spatial_shape)
    order = [i for axis in range(dims) for i in (2 + axis, 2 + dims + axis)]
    images = blocks.permute(0, 1, *order)
    padded = [n * b for n, b in zip(blocks.shape[2 : 2 + dims], blocks.shape[2 + dims :])]
    images = images.reshape(*blocks.shape[:2], *padded)
    return images[(..., *(slice(0, s) for s in spatial_shape))]


def block_dct(images: torch.Tensor, block_size: Sequence[int]) -> torch.Tensor:
    """
    The blockwise orthonormal DCT-II of ``images`` ``(B, C, *spatial)``, in the units of the images.

    Returns:
        the coefficients of each block, ``(B, C, *num_blocks, *block_size)``.
    """
    return _transform(to_blocks(images, block_size), len(block_size), inverse=False)


def block_idct(coefficients: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """
    The inverse of :py:func:`block_dct`: images ``(B, C, *spatial_shape)`` from the coefficients of their blocks
    ``(B, C, *num_blocks, *block_size)``.
    """
    return from_blocks(_transform(coefficients, len(spatial_shape), inverse=True), spatial_shape)
