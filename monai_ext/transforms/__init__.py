"""MONAI transforms of ``monai_ext``: channel handling, label mapping, input checks, adversarial attacks and
gradient perturbation."""

from monai_ext.transforms.attacks import Attackd
from monai_ext.transforms.channels import LUMA_WEIGHTS, ImageChannels, ImageChannelsd
from monai_ext.transforms.checks import CheckFinite, CheckFinited, CheckSpatialShaped
from monai_ext.transforms.gradient_perturbation import GradientPerturbationd
from monai_ext.transforms.intensity import MINMAX, ScaleIntensityToUnitd
from monai_ext.transforms.labels import LabelToIndex, LabelToIndexd, normalize_label_values

__all__ = [
    "LUMA_WEIGHTS",
    "MINMAX",
    "Attackd",
    "CheckFinite",
    "CheckFinited",
    "CheckSpatialShaped",
    "GradientPerturbationd",
    "ImageChannels",
    "ImageChannelsd",
    "LabelToIndex",
    "LabelToIndexd",
    "ScaleIntensityToUnitd",
    "normalize_label_values",
]
