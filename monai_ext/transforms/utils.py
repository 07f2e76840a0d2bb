"""Helpers shared by the ``monai_ext`` transforms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.data import MetaTensor
from monai.utils import ImageMetaKey

__all__ = ["source_name"]


def source_name(img: Any, data: Mapping | None = None, key: str | None = None) -> str:
    """
    Name the file an image was loaded from, for error messages.

    Looks at ``img.meta["filename_or_obj"]`` (a ``MetaTensor`` from ``LoadImage``), then at the
    meta dictionary ``data[f"{key}_meta_dict"]`` (``LoadImaged(..., image_only=False)`` with plain arrays).

    Args:
        img: the image or mask, a MetaTensor, tensor or array.
        data: the dictionary holding ``img``, when called from a dictionary transform.
        key: the key of ``img`` in ``data``.

    Returns:
        ``"'<file>'"``, prefixed by the key when one is given, or a description of the key when
        no file name is known.
    """
    filename = None
    if isinstance(img, MetaTensor):
        filename = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if filename is None and data is not None and key is not None:
        meta = data.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping):
            filename = meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if filename is None:
        return f"{key!r} (no file name in its meta data)" if key is not None else "(no file name in its meta data)"
    return f"{key} '{filename}'" if key is not None else f"'{filename}'"
