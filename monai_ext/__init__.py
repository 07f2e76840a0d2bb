"""monai_ext: MONAI building blocks for robust and explainable medical image segmentation."""

from monai_ext import attacks, data, engines, handlers, losses, metrics, networks, transforms, visualize

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "attacks",
    "data",
    "engines",
    "handlers",
    "losses",
    "metrics",
    "networks",
    "transforms",
    "visualize",
]
