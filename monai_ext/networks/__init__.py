from monai_ext.networks import blocks, nets, utils

__all__ = ["blocks", "nets", "utils"]
