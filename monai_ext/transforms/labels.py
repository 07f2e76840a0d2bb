"""Map raw mask values (as stored in a dataset's files) to class indices, with checks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import ClassVar

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import DtypeLike, NdarrayOrTensor
from monai.transforms import MapLabelValue, MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_ext.utils.checks import check_num_classes, check_number, source_name

__all__ = ["LabelToIndex", "LabelToIndexd", "normalize_label_values"]

#: how many unexpected mask values an error message lists.
_MAX_LISTED = 8


def normalize_label_values(label_values: Sequence[int | float | Sequence[int | float]]) -> list[list[float]]:
    """
    Turn ``label_values`` (class ``i`` <- a raw value or a list of raw values) into a list of lists,
    checking that there is at least one class, no class is empty and no raw value is listed twice.

    Example: ``[0, [150, 200], 250]`` -> ``[[0.0], [150.0, 200.0], [250.0]]``.
    """
    if isinstance(label_values, (str, bytes)) or not isinstance(label_values, Sequence) or len(label_values) == 0:
        raise ValueError(f"label_values must be a non-empty list (class i <- raw value(s)), got {label_values!r}.")
    groups: list[list[float]] = []
    seen: dict[float, int] = {}
    for index, values in enumerate(label_values):
        group = [values] if not isinstance(values, Sequence) or isinstance(values, (str, bytes)) else list(values)
        if not group:
            raise ValueError(f"label_values[{index}] is empty: every class needs at least one raw value.")
        numbers = [check_number(f"label_values[{index}]", value) for value in group]
        for value, number in zip(group, numbers):
            if number in seen:
                raise ValueError(
                    f"Raw mask value {value} is listed twice in label_values {label_values} "
                    f"(classes {seen[number]} and {index})."
                )
            seen[number] = index
        groups.append(numbers)
    return groups


class LabelToIndex(Transform):
    """
    Map a raw channel-first mask, as loaded from a dataset's files, to a 1-channel class-index mask
    ``(1, *spatial)``, either by ``label_values`` or by ``threshold`` (exactly one of them).

    ``label_values[i]`` is the raw value, or the list of raw values, of class ``i``. With the SCR chest
    X-ray masks (0 background, 150 right lung, 200 left lung, 250 heart), ``[0, 150, 200, 250]`` gives
    4 classes and ``[[0, 250], [150, 200]]`` gives lungs (1) versus the rest (0). A raw value found in a
    mask but absent from ``label_values`` raises a ``ValueError`` naming the file and the values, so a
    wrong mapping never trains silently.

    ``threshold`` gives the binary mask ``mask >= threshold``: use it for masks stored with lossy
    compression (JPEG), whose values ring around the nominal ones (for example 128 for 0/255 masks).

    ``accept_class_indices`` also takes masks that already hold class indices, as MONAI Label saves them (its
    datastore's labels are the ``0 .. C-1`` masks its inference writes and its clients edit): a mask is taken as
    already indexed only when every value is a class index and at least one value is not a raw value of the mapping.
    A mask whose values are all both (only ``0``, say) must map to the same classes either way, else it is refused.
    Any other value is refused as before, so a wrong mask still never trains silently. With ``threshold`` it has no
    effect: a threshold says the masks hold intensities, so 0/1 masks under ``threshold=128`` stay empty and the
    check before training (:py:func:`monai_ext.data.check_label_content`) stops the run, naming the setting.

    Multi-channel masks: an alpha channel is dropped (4 -> 3, 2 -> 1). With ``label_values`` the colour
    channels of an RGB mask must be equal (a grey mask saved as RGB), otherwise a ``ValueError`` names
    the file; with ``threshold`` their mean is thresholded.

    Args:
        label_values: raw value(s) of each class, class ``i`` at position ``i``.
        threshold: raw value from which a pixel is foreground (class 1).
        dtype: output dtype, float32 class indices by default (what MONAI losses and metrics take).
        num_classes: the number of classes the network predicts, background included; when given it must be at
            least 2 and equal the classes ``label_values`` define (2 with ``threshold``), else a ``ValueError``
            names both options before any data is read.
        accept_class_indices: also take masks that already hold class indices ``0 .. C-1`` (see above).
    """

    backend: ClassVar[list[str]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        label_values: Sequence[int | float | Sequence[int | float]] | None = None,
        threshold: float | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        num_classes: int | None = None,
        accept_class_indices: bool = False,
    ) -> None:
        if (label_values is None) == (threshold is None):
            raise ValueError(
                "Give exactly one of label_values (raw value(s) of each class) "
                "and threshold (binary mask >= threshold), "
                f"got label_values={label_values!r}, threshold={threshold!r}."
            )
        self.label_values = label_values
        self.threshold = threshold
        self.dtype = dtype
        self.accept_class_indices = accept_class_indices
        self.groups = normalize_label_values(label_values) if label_values is not None else None
        if self.groups is not None:
            orig = [value for group in self.groups for value in group]
            target = [index for index, group in enumerate(self.groups) for _ in group]
            self.mapper = MapLabelValue(orig, target, dtype=torch.float32)
        if num_classes is not None:
            check_num_classes(num_classes, self.groups, threshold)

    def _single_channel(self, mask: torch.Tensor, name: str) -> torch.Tensor:
        """Drop alpha and reduce colour channels to one channel (see the class docstring)."""
        channels = mask.shape[0]
        if channels in (2, 4):
            mask = mask[: channels - 1]
            channels -= 1
        if channels == 1:
            return mask
        if channels != 3:
            raise ValueError(
                f"Mask {name} has {channels} channels (shape {tuple(mask.shape)}); expected a channel-first mask "
                "with 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels. Is EnsureChannelFirstd missing?"
            )
        if self.threshold is not None:
            return mask.to(torch.float32).mean(dim=0, keepdim=True)
        if not (torch.equal(mask[0], mask[1]) and torch.equal(mask[0], mask[2])):
            raise ValueError(
                f"Mask {name} is an RGB mask whose colour channels differ; label_values needs grey values. "
                "For a lossy (JPEG) mask use threshold instead of label_values."
            )
        return mask[:1]

    def _is_class_index_mask(self, mask: torch.Tensor, name: str) -> bool:
        """Whether a 1-channel mask already holds class indices (see ``accept_class_indices``); ambiguity raises."""
        if self.groups is None:  # a threshold reads intensities, never indices
            return False
        found = torch.unique(mask).tolist()
        if any(value not in range(len(self.groups)) for value in found):
            return False
        raw = {value: index for index, group in enumerate(self.groups) for value in group}
        if any(value not in raw for value in found):
            return True
        if any(raw[value] != value for value in found):
            raise ValueError(
                f"Mask {name} holds only the values {found}, which are both class indices and raw values of "
                f"label_values {self.label_values} that map to other classes: it cannot be read either way."
            )
        return False  # raw values that map to themselves: the same classes either way

    def __call__(self, mask: NdarrayOrTensor, name: str | None = None) -> NdarrayOrTensor:
        """
        Args:
            mask: channel-first raw mask.
            name: how to name ``mask`` in error messages; by default its file name from its meta data.
        """
        name = name or source_name(mask)
        mask_t = self._single_channel(convert_to_tensor(mask, track_meta=False), name)
        if self.accept_class_indices and self._is_class_index_mask(mask_t, name):
            out, *_ = convert_to_dst_type(mask_t, dst=mask, dtype=self.dtype)
            return out
        if self.threshold is not None:
            out = mask_t >= self.threshold
        else:
            found = torch.unique(mask_t).tolist()
            allowed = {value for group in self.groups for value in group}  # type: ignore[union-attr]
            unexpected = [value for value in found if value not in allowed]
            if unexpected:
                listed = ", ".join(f"{v:g}" for v in unexpected[:_MAX_LISTED])
                more = f" and {len(unexpected) - _MAX_LISTED} more" if len(unexpected) > _MAX_LISTED else ""
                raise ValueError(
                    f"Mask {name} holds raw values {listed}{more} that are not in label_values {self.label_values} "
                    f"(values found: {len(found)}). List every raw value in label_values, or use threshold for masks "
                    "stored with lossy compression."
                )
            out = self.mapper(mask_t)
        out, *_ = convert_to_dst_type(out, dst=mask, dtype=self.dtype)
        return out


class LabelToIndexd(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`LabelToIndex`: raw masks -> 1-channel class-index masks.

    Args:
        keys: keys of the masks to map.
        label_values: raw value(s) of each class, class ``i`` at position ``i``.
        threshold: raw value from which a pixel is foreground (class 1).
        dtype: output dtype, float32 by default.
        num_classes: the number of classes the network predicts, checked against the mapping (see
            :py:class:`LabelToIndex`).
        accept_class_indices: also take masks that already hold class indices (see :py:class:`LabelToIndex`).
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    backend = LabelToIndex.backend

    def __init__(
        self,
        keys: KeysCollection,
        label_values: Sequence[int | float | Sequence[int | float]] | None = None,
        threshold: float | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        num_classes: int | None = None,
        accept_class_indices: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToIndex(
            label_values=label_values,
            threshold=threshold,
            dtype=dtype,
            num_classes=num_classes,
            accept_class_indices=accept_class_indices,
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], name=source_name(d[key], d, str(key)))
        return d
