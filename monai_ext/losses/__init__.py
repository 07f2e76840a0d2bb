"""Losses of ``monai_ext``: ProtoSeg loss, GAN losses (hinge, least squares), the SSIM + L1 translation loss."""

from monai_ext.losses.cycle_gan import LeastSquaresDiscriminatorLoss, LeastSquaresGeneratorLoss
from monai_ext.losses.gan import HingeDiscriminatorLoss, HingeGeneratorLoss
from monai_ext.losses.protoseg import ProtoSegLoss
from monai_ext.losses.ssim_l1 import SSIML1Loss

__all__ = [
    "HingeDiscriminatorLoss",
    "HingeGeneratorLoss",
    "LeastSquaresDiscriminatorLoss",
    "LeastSquaresGeneratorLoss",
    "ProtoSegLoss",
    "SSIML1Loss",
]
