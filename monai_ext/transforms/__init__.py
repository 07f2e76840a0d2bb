"""MONAI transforms of ``monai_ext``: channel handling, label mapping, input checks and adversarial attacks."""

from monai_ext.transforms.attacks import Attackd
from monai_ext.transforms.channels import LUMA_WEIGHTS, ImageChannels, ImageChannelsd
from monai_ext.transforms.checks import CheckFinite, CheckFinited, CheckSpatialShaped
from monai_ext.transforms.intensity import ScaleIntensityToUnitd
from monai_ext.transforms.labels import (
    IndexToLabel,
    IndexToLabeld,
    LabelToIndex,
    LabelToIndexd,
    normalize_label_values,
)
from monai_ext.transforms.utils import source_name

__all__ = [
    "Attackd",
    "LUMA_WEIGHTS",
    "CheckFinite",
    "CheckFinited",
    "CheckSpatialShaped",
    "ImageChannels",
    "ImageChannelsd",
    "IndexToLabel",
    "IndexToLabeld",
    "LabelToIndex",
    "LabelToIndexd",
    "ScaleIntensityToUnitd",
    "normalize_label_values",
    "source_name",
]
