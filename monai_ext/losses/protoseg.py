"""Online ProtoSeg loss (He et al., MedIA 2023, section 4.2): a segmentation loss plus ProtoSeg losses of features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceCELoss, DiceLoss
from monai.networks.utils import one_hot
from torch import nn
from torch.nn.modules.loss import _Loss

from monai_ext.metrics.protoseg_map import binarize_prediction, protoseg_maps
from monai_ext.networks.utils import FeatureRecorder
from monai_ext.utils.checks import check_choice, check_non_negative

__all__ = ["ProtoSegLoss"]

_INITIAL_MASKS = ("pred", "label")


class ProtoSegLoss(_Loss):
    """
    The online ProtoSeg training loss ``L = L_seg(output, G) + lambda * 1/N sum_l L_dice(S_f_l, G)``: a
    segmentation loss on the network's output plus the mean Dice loss of the ProtoSeg probability maps of ``N``
    feature maps against the ground truth, which trains the hidden features to be separable (section 4.2).

    The feature maps come from forward hooks on named modules of ``network`` (the default: the 18 convolutions of
    MONAI's ``BasicUNet``), recorded during the trainer's own forward pass, so the loss takes the usual
    ``(input, target)`` of MONAI's :py:class:`~monai.engines.SupervisedTrainer`::

        "loss": {"_target_": "monai_ext.losses.ProtoSegLoss", "network": "@network"}

    Each forward pass of ``network`` must be followed by one call of this loss (one network call per step).
    The ProtoSeg maps are computed at each layer's resolution and resampled (bilinear / trilinear) to the
    target's before the Dice loss.

    Args:
        network: the trained network (hooked at construction).
        layers: names of the modules whose outputs are scored; ``None``: the 18 convolutions of ``BasicUNet``.
        loss: the segmentation loss of the output, ``loss(logits, target)``; ``None``: cross-entropy (MONAI's
            ``DiceCELoss`` with ``lambda_dice=0``, the paper's loss).
        protoseg_loss: the loss of each ProtoSeg map, ``loss(probabilities, one-hot target)`` (the target is one-hot
            encoded once for all layers); ``None``: MONAI's ``DiceLoss(include_background=False)`` (the Dice of the
            objects, as the SA score).
        lambda_protoseg: the weight of the mean ProtoSeg loss.
        initial_mask: the mask of the prototypes: ``"pred"``, the network's binarised output (eq. 6, detached, as
            when interpreting a trained network), or ``"label"``, the ground truth. With ``"pred"`` a class the
            output does not predict has no prototype yet, and its term gives no gradient until it appears.
    """

    def __init__(
        self,
        network: nn.Module,
        layers: Sequence[str] | None = None,
        loss: nn.Module | None = None,
        protoseg_loss: nn.Module | None = None,
        lambda_protoseg: float = 1.0,
        initial_mask: str = "pred",
    ) -> None:
        super().__init__()
        self.initial_mask = check_choice("initial_mask", initial_mask, _INITIAL_MASKS)
        self.lambda_protoseg = check_non_negative("lambda_protoseg", lambda_protoseg)
        self.recorder = FeatureRecorder(network, layers, detach=False)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0) if loss is None else loss
        self.protoseg_loss = DiceLoss(include_background=False) if protoseg_loss is None else protoseg_loss

    def protoseg_terms(self, input: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """The ProtoSeg loss of each hooked layer for the last forward pass (this consumes the recorded features).

        Args:
            input: (B, K, *spatial) the network's logits.
            target: (B, 1, *spatial) class indices.
        """
        features = self.recorder.pop()
        target_onehot = one_hot(target, num_classes=input.shape[1])
        mask = binarize_prediction(input.detach()) if self.initial_mask == "pred" else target_onehot
        size = target.shape[2:]
        maps = protoseg_maps(list(features.values()), mask, spatial_size=size)
        return [self.protoseg_loss(prob, target_onehot) for prob in maps]

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: (B, K, *spatial) logits of the network's forward pass that the hooks recorded.
            target: (B, 1, *spatial) class indices.

        Returns:
            the scalar loss.
        """
        if input.ndim != target.ndim or target.shape[1] != 1:
            raise ValueError(
                f"ProtoSegLoss takes logits (B, K, *spatial) and class indices (B, 1, *spatial), got input "
                f"{tuple(input.shape)} and target {tuple(target.shape)}."
            )
        terms = self.protoseg_terms(input, target)
        return self.loss(input, target) + self.lambda_protoseg * torch.stack(terms).mean()
