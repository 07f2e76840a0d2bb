"""ScaleIntensityToUnitd: a fixed range maps exactly, values outside it are errors, None is per-image min-max."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monai_ext.transforms import ScaleIntensityToUnitd


def test_fixed_range_is_exact_affine_map() -> None:
    img = torch.tensor([[[0.0, 51.0, 255.0]]])
    out = ScaleIntensityToUnitd("image", intensity_range=(0, 255))({"image": img})["image"]
    assert torch.allclose(out, torch.tensor([[[0.0, 0.2, 1.0]]]))


def test_value_outside_range_names_file() -> None:
    img = MetaTensor(torch.tensor([[[0.0, 300.0]]]), meta={"filename_or_obj": "scan_16bit.tif"})
    with pytest.raises(ValueError, match=r"scan_16bit\.tif.*300.*intensity_range"):
        ScaleIntensityToUnitd("image", intensity_range=(0, 255))({"image": img})


def test_none_is_per_image_min_max() -> None:
    img = torch.tensor([[[-1000.0, 0.0, 3000.0]]])
    out = ScaleIntensityToUnitd("image", intensity_range=None)({"image": img})["image"]
    assert torch.allclose(out, torch.tensor([[[0.0, 0.25, 1.0]]]))


@pytest.mark.parametrize("bad", [(255, 0), (1, 1), (0,)])
def test_impossible_range_raises(bad: tuple) -> None:
    with pytest.raises(ValueError, match="intensity_range"):
        ScaleIntensityToUnitd("image", intensity_range=bad)
