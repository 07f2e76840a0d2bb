from monai_ext.networks.blocks.nlce import NLCE, ContextEncoding, NonLocalBlock

__all__ = ["NLCE", "ContextEncoding", "NonLocalBlock"]
