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
The input gradient of a whole-volume loss through MONAI's sliding window, one chunk of windows at a time.

MONAI's ``sliding_window_inference`` pads the volume to at least the window (``roi_size``), runs the windows in
chunks of ``sw_batch_size``, and blends their logits into the whole volume,
``z = (sum_w m * P_w p_w) / (sum_w P_w m)`` (``p_w`` the logits of window ``w``, ``m`` the importance map,
``P_w`` placing a window in the volume), then crops the padding away. ``z`` is linear in the window logits, so the
gradient of a loss ``L(z)`` reaches window ``w`` as ``m * (dL/dz / count)`` on its voxels, and the input gradient is
the sum over the windows of their own backward passes with that cotangent. Autograd through
``sliding_window_inference`` keeps the graphs of all windows until the backward pass; here at most one chunk's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices, get_valid_patch_size
from monai.inferers import SlidingWindowInferer, SlidingWindowInfererAdapt
from monai.inferers.utils import _get_scan_interval
from monai.utils import PytorchPadMode, ensure_tuple_rep, fall_back_tuple, look_up_option

from monai_ext.attacks.inferer import InfererNetwork

__all__ = ["WINDOWED_INFERERS", "sliding_window_gradient", "windowed"]

#: the inferers whose input gradient is taken window chunk by window chunk: MONAI's own sliding windows (a subclass
#: may run its windows otherwise, as ``SliceInferer`` does, and is differentiated through as a whole)
WINDOWED_INFERERS = (SlidingWindowInferer, SlidingWindowInfererAdapt)

Window = tuple[int, tuple[slice, ...]]  # (batch element, spatial slices of the padded volume)


def windowed(network: object) -> bool:
    """Whether ``network`` is an :py:class:`~monai_ext.attacks.InfererNetwork` of MONAI's own sliding window
    (:py:data:`WINDOWED_INFERERS`), whose gradient :py:func:`sliding_window_gradient` takes."""
    return isinstance(network, InfererNetwork) and type(network.inferer) in WINDOWED_INFERERS


@dataclass
class _Layout:
    """Where MONAI's sliding window puts its windows on a batch: padding, windows and their chunks, blending."""

    pad: list[int]  # F.pad's list, last spatial dimension first
    crop: tuple[slice, ...]  # the input's voxels within the padded volume
    size: tuple[int, ...]  # the padded spatial size
    windows: list[tuple[slice, ...]]  # spatial slices of each window, per batch element
    chunks: list[list[Window]]  # (batch element, window) pairs per forward pass
    importance: torch.Tensor  # (1, 1, *roi) blending weight of a window's voxels, on the window device
    device: torch.device  # where the whole-volume logits are blended
    sw_device: torch.device  # where the windows run


def _layout(inferer: SlidingWindowInferer, images: torch.Tensor) -> _Layout:
    """The layout of ``sliding_window_inference`` as ``inferer`` calls it on ``images`` ``(B, C_in, *spatial)``."""
    num_spatial = images.ndim - 2
    shape = tuple(images.shape[2:])
    roi = fall_back_tuple(inferer.roi_size, shape)
    if len(roi) != num_spatial:
        raise ValueError(f"roi_size {inferer.roi_size} does not match images of shape {tuple(images.shape)}.")
    size = tuple(max(s, r) for s, r in zip(shape, roi))
    before = [(p - s) // 2 for p, s in zip(size, shape)]
    pad = [n for d in reversed(range(num_spatial)) for n in (before[d], size[d] - shape[d] - before[d])]
    overlap = ensure_tuple_rep(inferer.overlap, num_spatial)
    windows = dense_patch_slices(size, roi, _get_scan_interval(size, roi, num_spatial, overlap))
    pairs = [(index // len(windows), windows[index % len(windows)]) for index in range(images.shape[0] * len(windows))]
    step = inferer.sw_batch_size
    device = inferer.device
    if device is None and inferer.cpu_thresh is not None and images.shape[2:].numel() > inferer.cpu_thresh:
        device = "cpu"
    device, sw_device = torch.device(device or images.device), torch.device(inferer.sw_device or images.device)
    valid = get_valid_patch_size(size, roi)
    if valid == roi and inferer.roi_weight_map is not None:
        importance = inferer.roi_weight_map
    else:
        importance = compute_importance_map(
            valid, mode=inferer.mode, sigma_scale=inferer.sigma_scale, device=sw_device, dtype=images.dtype
        )
    importance = importance.to(device=sw_device, dtype=images.dtype)
    importance = importance[None, None] if importance.ndim == num_spatial else importance
    return _Layout(
        pad=pad,
        crop=tuple(slice(b, b + s) for b, s in zip(before, shape)),
        size=size,
        windows=windows,
        chunks=[pairs[i : i + step] for i in range(0, len(pairs), step)],
        importance=importance,
        device=device,
        sw_device=sw_device,
    )


def _gather(volume: torch.Tensor, chunk: list[Window], device: torch.device) -> torch.Tensor:
    """The windows of ``chunk`` cut from ``volume`` ``(B, C, *size)``, ``(len(chunk), C, *roi)``, as MONAI cuts them
    (one window: a view)."""
    if len(chunk) == 1:
        b, window = chunk[0]
        return volume[(slice(b, b + 1), slice(None), *window)].to(device)
    return torch.cat([volume[(slice(b, b + 1), slice(None), *window)] for b, window in chunk]).to(device)


def _scatter_add(volume: torch.Tensor, chunk: list[Window], values: torch.Tensor) -> None:
    """Add each window of ``values`` ``(len(chunk), C, *roi)`` to its place in ``volume`` ``(B, C, *size)``."""
    values = values.to(volume.device)
    for (b, window), value in zip(chunk, values):
        volume[(slice(b, b + 1), slice(None), *window)] += value


def sliding_window_gradient(
    predict: Callable[[torch.Tensor], torch.Tensor],
    inferer: SlidingWindowInferer,
    images: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The whole-volume logits ``inferer(images, predict)`` and the gradient of ``loss`` of them with respect to
    ``images``, equal to autograd through MONAI's ``sliding_window_inference`` while at most one chunk of
    ``sw_batch_size`` windows holds its graph:

    1. the windows, chunk by chunk, without gradient (the last chunk with it, its graph kept), blended into the whole
       volume exactly as MONAI blends them (padding, window positions, importance map, count normalisation, crop);
    2. ``loss`` of the whole-volume logits and its gradient with respect to them;
    3. per chunk, last first, a forward pass with gradient (the last chunk's from step 1) and the backward pass of
       the window logits with their share of that gradient, added into the gradient of the padded volume, which the
       padding's own backward pass turns into the gradient of ``images``.

    A chunk runs twice (once for the last), so the network must be deterministic: in eval mode, as the attacks run it.
    The windows, chunks and blending are MONAI's; its buffered stitching (``buffer_steps``) adds the same terms in
    another order. Window logits must have the window's spatial size.

    Args:
        predict: the network on a chunk of windows, ``(n, C_in, *roi) -> (n, C, *roi)`` logits.
        inferer: a MONAI ``SlidingWindowInferer`` (its ``roi_size``, ``sw_batch_size``, ``overlap``, ``mode``,
            ``sigma_scale``, ``padding_mode``, ``cval``, devices and cached ``roi_weight_map``).
        images: ``(B, C_in, *spatial)``; ``B > 1`` runs the windows of every batch element, as MONAI does.
        loss: ``(B, C, *spatial) logits -> scalar``.

    Returns:
        the logits ``(B, C, *spatial)`` on the inferer's stitching device, and the gradient (the shape and device of
        ``images``), both detached.
    """
    if inferer.with_coord:
        raise ValueError("a SlidingWindowInferer with with_coord=True passes window coordinates: not supported.")
    layout = _layout(inferer, images)
    x = images.detach().requires_grad_(any(layout.pad))
    padded = x
    if any(layout.pad):
        with torch.enable_grad():
            mode = look_up_option(inferer.padding_mode, PytorchPadMode)
            padded = F.pad(x, pad=layout.pad, mode=mode, value=inferer.cval)
    volume = padded.detach()
    full = (slice(None), slice(None))
    output = count = kept = None
    for index, chunk in enumerate(layout.chunks):
        last = index == len(layout.chunks) - 1
        with torch.set_grad_enabled(last):
            windows = _gather(volume, chunk, layout.sw_device).requires_grad_(last)
            logits = predict(windows)
        if logits.shape[2:] != windows.shape[2:]:
            raise ValueError(f"window logits of shape {tuple(logits.shape)} for windows {tuple(windows.shape)}.")
        if output is None:
            output = torch.zeros((images.shape[0], logits.shape[1], *layout.size), dtype=images.dtype,
                                 device=layout.device)  # fmt: skip
            count = torch.zeros((1, 1, *layout.size), dtype=images.dtype, device=layout.device)
            weight = layout.importance.to(layout.device)
            for window in layout.windows:
                count[(*full, *window)] += weight
        _scatter_add(output, chunk, logits.detach() * layout.importance)
        kept = (windows, logits) if last else None
    output /= count
    whole = output[(*full, *layout.crop)].requires_grad_(True)
    with torch.enable_grad():
        (dwhole,) = torch.autograd.grad(loss(whole), whole, allow_unused=True)
    grad_padded = torch.zeros_like(volume)
    if dwhole is not None:
        cotangent = torch.zeros_like(output)
        cotangent[(*full, *layout.crop)] = dwhole
        cotangent /= count
        for chunk in reversed(layout.chunks):
            if kept is None:
                with torch.enable_grad():
                    windows = _gather(volume, chunk, layout.sw_device).requires_grad_(True)
                    logits = predict(windows)
            else:
                (windows, logits), kept = kept, None
            share = _gather(cotangent, chunk, layout.sw_device) * layout.importance
            (dwindows,) = torch.autograd.grad(logits, windows, share, allow_unused=True)
            if dwindows is not None:
                _scatter_add(grad_padded, chunk, dwindows)
    if any(layout.pad):
        (grad_padded,) = torch.autograd.grad(padded, x, grad_padded)
    return whole.detach(), grad_padded
