from monai_ext.networks.nets.fc_densenet import FC_DENSENET_CONFIGS, FCDenseNet
from monai_ext.networks.nets.nlcen import NLCEN
from monai_ext.networks.nets.resnet_generator import ResNetGenerator
from monai_ext.networks.nets.sagan import SAGANDiscriminator, SAGANGenerator
from monai_ext.networks.nets.translate_then_segment import TranslateThenSegment
from monai_ext.networks.nets.unet_nlce import NLCEUNet

__all__ = [
    "FC_DENSENET_CONFIGS",
    "NLCEN",
    "FCDenseNet",
    "NLCEUNet",
    "ResNetGenerator",
    "SAGANDiscriminator",
    "SAGANGenerator",
    "TranslateThenSegment",
]
