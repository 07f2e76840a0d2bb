"""
Variance of Gradients (VoG), the example-difficulty score of Agarwal, D'souza and Hooker (CVPR 2022), for
segmentation networks: the baseline the ProtoSeg paper compares its mean SA score with (section 4.6, Fig. 10).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric
from torch import nn

__all__ = ["VarianceOfGradients", "load_state_dict"]


def load_state_dict(path: str | PathLike, map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """A model state dict from a checkpoint file: a plain state dict, or a ``{"model": state_dict}`` dict as
    MONAI's ``CheckpointSaver`` writes with ``save_dict={"model": network}`` and more than one entry."""
    content = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(content, Mapping) and "model" in content and isinstance(content["model"], Mapping):
        return dict(content["model"])
    if not isinstance(content, Mapping):
        raise TypeError(f"{path} holds a {type(content).__name__}, not a state dict.")
    return dict(content)


class VarianceOfGradients(CumulativeIterationMetric):
    """
    VoG of each image over training checkpoints: for checkpoint ``t``, ``S_t`` is the gradient with respect to
    the input of the summed logit of each pixel's target class (``sum_i logit_{y_i}(i)``, the segmentation form
    of the class logit of the original), averaged over the image channels; the VoG of a pixel is the standard
    deviation of ``S_t`` over the checkpoints and the image's score its mean over pixels. A higher VoG marks a
    harder image. (The original also normalises scores per class over a dataset; one score per image here.)

    The network passed in is not modified: the checkpoints are loaded into a copy, in eval mode. A MONAI cumulative
    metric: ``vog(images, target)`` returns the batch's scores and adds them to the buffer; ``aggregate()`` is their
    mean.

    Args:
        network: the network (its architecture; its weights are not used).
        checkpoints: two or more checkpoint files or state dicts, in training order.
        device: where the copy runs; the device of ``network``'s first parameter by default.
    """

    def __init__(
        self,
        network: nn.Module,
        checkpoints: Sequence[str | PathLike | Mapping[str, torch.Tensor]],
        device: str | torch.device | None = None,
    ) -> None:
        if len(checkpoints) < 2:
            raise ValueError(f"VoG needs at least 2 checkpoints (a variance over training), got {len(checkpoints)}.")
        super().__init__()
        self.state_dicts = [dict(c) if isinstance(c, Mapping) else load_state_dict(c) for c in checkpoints]
        if device is None:
            device = next(network.parameters()).device
        self.model = copy.deepcopy(network).to(device).eval()
        for module in self.model.modules():  # the copy must not feed the hooks (feature recorders) of the original
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        self.device = torch.device(device)

    def _compute_tensor(self, images: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """
        Args:
            images: (B, C, *spatial) network inputs.
            target: (B, 1, *spatial') class indices of each pixel (the evaluated network's prediction), resampled
                (nearest) to the logits' size when it differs; or the prediction (B, K, *spatial') itself, whose
                argmax is taken.

        Returns:
            (B,) VoG scores.
        """
        if target is None:
            raise ValueError("VarianceOfGradients needs the target classes of the pixels.")
        images = images.detach().to(self.device).float()
        target = target.to(self.device)
        if target.shape[1] > 1:
            target = target.argmax(dim=1, keepdim=True)
        grads = []
        for state in self.state_dicts:
            self.model.load_state_dict(state)
            x = images.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(x)
                index = target
                if tuple(index.shape[2:]) != tuple(logits.shape[2:]):
                    index = F.interpolate(index.float(), size=logits.shape[2:], mode="nearest")
                score = logits.gather(1, index.long()).sum()
                (grad,) = torch.autograd.grad(score, x)
            grads.append(grad.mean(dim=1))  # (B, *spatial)
        stacked = torch.stack(grads)  # (T, B, *spatial)
        return stacked.var(dim=0, unbiased=False).sqrt().flatten(1).mean(dim=1)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """The mean VoG of the images so far."""
        data = self.get_buffer()
        if data is None:
            raise RuntimeError("VarianceOfGradients has no data to aggregate: call it on a batch first.")
        return data.float().mean()
