"""Losses of ``monai_ext``: ProtoSeg loss, GAN losses."""

from monai_ext.losses.gan import HingeDiscriminatorLoss, HingeGeneratorLoss
from monai_ext.losses.protoseg import ProtoSegLoss

__all__ = ["HingeDiscriminatorLoss", "HingeGeneratorLoss", "ProtoSegLoss"]
