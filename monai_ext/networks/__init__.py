from monai_ext.networks import blocks, nets

__all__ = ["blocks", "nets"]
