"""Intensity scaling to the unit range [0, 1], the data range every monai_ext attack and network assumes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensity, ScaleIntensityRange

from monai_ext.utils.checks import check_interval, source_name

__all__ = ["MINMAX", "ScaleIntensityToUnitd"]

#: the ``intensity_range`` that asks for per-image min-max scaling, as a string so that it survives the
#: ``monai.bundle run`` command line (python-fire drops an argument whose value is ``None``)
MINMAX = "minmax"


class ScaleIntensityToUnitd(MapTransform):
    """
    Map image intensities to [0, 1].

    With ``intensity_range=(low, high)`` the map is ``(x - low) / (high - low)``, the same for every image
    (``(0, 255)`` for 8-bit PNG/JPEG, ``(0, 65535)`` for 16-bit TIFF), so that an attack's epsilon of
    ``k / 255`` is ``k`` intensity levels of an 8-bit image. A value outside the range is an error that
    names the file, never a silent clip. With ``intensity_range="minmax"`` (or ``None`` in a config file) each
    image is min-max scaled on its own (for data without a fixed range, such as CT or MR volumes); a constant image
    becomes all zeros. On the ``monai.bundle run`` command line write ``--intensity_range minmax``: python-fire
    drops ``--intensity_range None`` without a word, which would keep the config's range.

    Args:
        keys: keys of the images to scale, each (C, *spatial).
        intensity_range: ``(low, high)`` with ``low < high``, or ``"minmax"`` / ``None`` for per-image min-max
            scaling.
        allow_missing_keys: do not raise for keys missing from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        intensity_range: Sequence[float] | str | None = (0.0, 255.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(intensity_range, str) and intensity_range.strip().lower() != MINMAX:
            raise ValueError(
                f"intensity_range must be a pair [min, max] or {MINMAX!r} (per-image min-max scaling), "
                f"got {intensity_range!r}."
            )
        if intensity_range is None or isinstance(intensity_range, str):
            self.low = self.high = None
            self.scaler = ScaleIntensity(minv=0.0, maxv=1.0)
        else:
            self.low, self.high = check_interval("intensity_range", intensity_range)
            self.scaler = ScaleIntensityRange(a_min=self.low, a_max=self.high, b_min=0.0, b_max=1.0, clip=False)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if self.low is not None:
                lo, hi = float(img.min()), float(img.max())
                if lo < self.low or hi > self.high:
                    raise ValueError(
                        f"{source_name(img, d, key)}: intensities span [{lo:g}, {hi:g}], outside intensity_range "
                        f"[{self.low:g}, {self.high:g}]; set intensity_range to the data's range "
                        f'(--intensity_range "[min, max]") or to {MINMAX!r} for per-image min-max scaling.'
                    )
            d[key] = self.scaler(img)
        return d
