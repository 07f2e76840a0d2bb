"""Make every image of a dataset 1-channel (grey) or 3-channel (RGB), whatever its file format."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import ClassVar

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_ext.utils.checks import source_name

__all__ = ["LUMA_WEIGHTS", "ImageChannels", "ImageChannelsd"]

#: ITU-R BT.601 luma weights of R, G and B (the weights of PIL's ``convert("L")``).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


class ImageChannels(Transform):
    """
    Convert a channel-first image (``(C, *spatial)``, as after ``LoadImage`` + ``EnsureChannelFirst``)
    to ``channels`` channels, 1 (grey) or 3 (RGB):

    - an alpha channel is dropped: 4 (RGBA) -> 3, 2 (grey + alpha, PIL mode ``LA``) -> 1;
    - 3 -> 1 by luminance with the ITU-R BT.601 weights :data:`LUMA_WEIGHTS`;
    - 1 -> 3 by repeating the grey channel.

    Any other channel count raises a ``ValueError`` naming the file. Integer inputs keep their dtype
    (luminance is rounded); MetaTensor meta data is kept.

    Args:
        channels: the number of output channels, 1 or 3.
    """

    backend: ClassVar[list[str]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, channels: int) -> None:
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}.")
        self.channels = channels

    def __call__(self, img: NdarrayOrTensor, name: str | None = None) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first image.
            name: how to name ``img`` in error messages; by default its file name from its meta data.
        """
        num_channels = img.shape[0]
        if num_channels not in (1, 2, 3, 4):
            raise ValueError(
                f"Image {name or source_name(img)} has {num_channels} channels (shape {tuple(img.shape)}); "
                "expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels first. "
                "Is EnsureChannelFirstd missing, or is this a multi-modal image?"
            )
        if num_channels in (2, 4):  # drop alpha
            img = img[: num_channels - 1]
            num_channels -= 1
        if num_channels == self.channels:
            return img
        if self.channels == 3:  # grey -> RGB
            return img.repeat(3, *([1] * (img.ndim - 1))) if isinstance(img, torch.Tensor) else img.repeat(3, axis=0)
        # RGB -> grey
        img_t = convert_to_tensor(img, track_meta=False)
        work_dtype = img_t.dtype if img_t.is_floating_point() else torch.float32
        weights = torch.as_tensor(LUMA_WEIGHTS, dtype=work_dtype, device=img_t.device)
        grey = torch.tensordot(weights, img_t.to(work_dtype), dims=([0], [0])).unsqueeze(0)
        if not img_t.is_floating_point():
            grey = grey.round()
        out, *_ = convert_to_dst_type(grey, dst=img, dtype=img_t.dtype)
        return out


class ImageChannelsd(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`ImageChannels`: make images 1-channel (grey) or 3-channel (RGB).

    Args:
        keys: keys of the images to convert.
        channels: the number of output channels, 1 or 3.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = ImageChannels.backend

    def __init__(self, keys: KeysCollection, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ImageChannels(channels)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], name=source_name(d[key], d, str(key)))
        return d
