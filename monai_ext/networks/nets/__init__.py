from monai_ext.networks.nets.nlcen import NLCEN
from monai_ext.networks.nets.unet_nlce import NLCEUNet

__all__ = ["NLCEN", "NLCEUNet"]
