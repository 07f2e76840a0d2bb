"""Transforms that check loaded data and fail with an error naming the file, instead of training on bad data."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from monai_ext.utils.checks import source_name

__all__ = ["CheckFinite", "CheckFinited", "CheckSpatialShaped"]


class CheckFinite(Transform):
    """Raise a ``ValueError`` naming the file when an image holds NaN or infinite values; else return it unchanged."""

    def __call__(self, img: NdarrayOrTensor, name: str | None = None) -> NdarrayOrTensor:
        """
        Args:
            img: image to check.
            name: how to name ``img`` in error messages; by default its file name from its meta data.
        """
        img_t = convert_to_tensor(img, track_meta=False)
        if img_t.is_floating_point() or img_t.is_complex():
            finite = torch.isfinite(img_t)
            if not bool(finite.all()):
                num_nan = int(torch.isnan(img_t).sum())
                num_inf = int((~finite).sum()) - num_nan
                raise ValueError(
                    f"Image {name or source_name(img)} holds {num_nan} NaN and {num_inf} infinite values "
                    f"(of {img_t.numel()})."
                )
        return img


class CheckFinited(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`CheckFinite`: raise a ``ValueError`` naming the file when
    the data of a key holds NaN or infinite values.

    Args:
        keys: keys of the data to check.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checker = CheckFinite()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        for key in self.key_iterator(data):
            self.checker(data[key], name=source_name(data[key], data, str(key)))
        return data


class CheckSpatialShaped(MapTransform):
    """
    Raise a ``ValueError`` naming the files and their shapes when the channel-first data of ``keys``
    differ in spatial shape (an image and its mask of different sizes); do nothing otherwise.
    Place it after ``EnsureChannelFirstd`` and before any resizing or cropping.

    Args:
        keys: keys of the data that must share one spatial shape, for example ``["image", "label"]``.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> Mapping[Hashable, NdarrayOrTensor]:
        first_key: Hashable | None = None
        for key in self.key_iterator(data):
            if first_key is None:
                first_key = key
                continue
            first, other = data[first_key], data[key]
            if tuple(first.shape[1:]) != tuple(other.shape[1:]):
                raise ValueError(
                    f"Spatial shapes differ: {source_name(first, data, str(first_key))} has shape "
                    f"{tuple(first.shape[1:])} but {source_name(other, data, str(key))} has shape "
                    f"{tuple(other.shape[1:])} (channel-first, as loaded)."
                )
        return data
