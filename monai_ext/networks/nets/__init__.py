from monai_ext.networks.nets.nlcen import NLCEN
from monai_ext.networks.nets.sagan import SAGANDiscriminator, SAGANGenerator
from monai_ext.networks.nets.unet_nlce import NLCEUNet

__all__ = ["NLCEN", "NLCEUNet", "SAGANDiscriminator", "SAGANGenerator"]
