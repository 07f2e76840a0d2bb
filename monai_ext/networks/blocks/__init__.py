from monai_ext.networks.blocks.nlce import NLCE, ContextEncoding, NonLocalBlock
from monai_ext.networks.blocks.sagan import SelfAttention, SNResidualBlock, sn_conv

__all__ = ["NLCE", "ContextEncoding", "NonLocalBlock", "SNResidualBlock", "SelfAttention", "sn_conv"]
