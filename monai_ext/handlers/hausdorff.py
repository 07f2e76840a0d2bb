"""MONAI's Hausdorff distance handler in the images' physical units: the voxel spacing read from each label's affine."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.metrics.metric import reinit__is_reduced
from monai.data import MetaTensor
from monai.handlers import HausdorffDistance

__all__ = ["PhysicalHausdorffDistance"]


class PhysicalHausdorffDistance(HausdorffDistance):
    """
    :py:class:`monai.handlers.HausdorffDistance` (same arguments; the math is MONAI's
    :py:class:`~monai.metrics.HausdorffDistanceMetric`) that passes each item's voxel spacing to the metric, so that
    distances are in the units of the image's affine (mm for NIfTI) and not in voxels. The spacing is the label's
    ``pixdim`` (its affine after every spatial transform, e.g. ``Orientationd``), else the prediction's; an item
    without an affine is measured in voxels. Items are scored one by one, as each may have its own spacing.

    Example (95th percentile, as in the 3D bundle's ``evaluate.json``)::

        "hd95": {"_target_": "monai_ext.handlers.PhysicalHausdorffDistance", "percentile": 95,
                 "output_transform": "$from_engine(['pred', 'label'])"}
    """

    @reinit__is_reduced
    def update(self, output: Sequence) -> None:
        """
        Args:
            output: ``(y_pred, y)``, batch-first one-hot tensors or lists of channel-first ones (MetaTensors carry
                their spacing).
        """
        if len(output) != 2:
            raise ValueError(f"output must have length 2, got {len(output)}.")
        for y_pred, y in zip(*output):
            self.metric_fn(y_pred[None], y[None], spacing=_spacing(y, y_pred))


def _spacing(*items: torch.Tensor) -> list[float] | None:
    """The voxel spacing of the first MetaTensor among ``items`` (``None``, unit spacing, without one)."""
    for item in items:
        if isinstance(item, MetaTensor):
            return [float(s) for s in item.pixdim]
    return None
