"""``monai_ext.handlers.PhysicalHausdorffDistance``: MONAI's Hausdorff distance handler, in mm from each item's affine."""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import HausdorffDistance
from monai.metrics import compute_hausdorff_distance

from monai_ext.handlers import PhysicalHausdorffDistance


def _cube(start: int, spacing: tuple[float, float, float] | None) -> torch.Tensor:
    """One-hot (2, 12, 12, 12) of a 4-voxel cube from ``start`` on every axis, a MetaTensor of ``spacing`` if given."""
    mask = torch.zeros(1, 12, 12, 12)
    mask[:, start : start + 4, start : start + 4, start : start + 4] = 1
    onehot = torch.cat([1 - mask, mask])
    return onehot if spacing is None else MetaTensor(onehot, affine=torch.diag(torch.tensor([*spacing, 1.0])))


def _run(handler, batches) -> tuple[float, torch.Tensor]:
    engine = Engine(lambda engine, batch: batch)
    handler.attach(engine, "hd")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics["hd"], engine.state.metric_details["hd"]


def test_distances_in_the_units_of_each_affine() -> None:
    """Items of 0.625 mm and of (1, 2, 3) mm in one batch list, one without an affine: each at its own spacing; the
    same as MONAI's compute_hausdorff_distance with that spacing, and as MONAI's handler where the spacing is 1."""
    spacings = [(0.625, 0.625, 0.625), (1.0, 2.0, 3.0), None]
    preds = [_cube(2, s) for s in spacings]
    labels = [_cube(4, s) for s in spacings]  # shifted by 2 voxels on every axis
    mean, details = _run(PhysicalHausdorffDistance(percentile=95), [(preds, labels)])
    expected = [
        compute_hausdorff_distance(p[None], y[None], percentile=95, spacing=list(s or (1, 1, 1))).item()
        for p, y, s in zip(preds, labels, spacings)
    ]
    assert details.flatten().tolist() == expected
    assert abs(expected[0] - 0.625 * expected[2]) < 1e-6 and expected[1] > expected[2]  # mm, not voxels
    assert abs(mean - sum(expected) / 3) < 1e-5
    unit = _run(HausdorffDistance(percentile=95), [([preds[2]], [labels[2]])])[0]
    assert unit == expected[2]


def test_batch_first_tensors() -> None:
    """A batch-first MetaTensor is split into items that keep their spacing."""
    pred = torch.stack([_cube(2, (0.5, 0.5, 0.5)), _cube(2, (0.5, 0.5, 0.5))])
    label = torch.stack([_cube(4, (0.5, 0.5, 0.5)), _cube(5, (0.5, 0.5, 0.5))])
    _, details = _run(PhysicalHausdorffDistance(), [(pred, label)])
    voxels = [
        compute_hausdorff_distance(pred[i : i + 1].as_tensor(), label[i : i + 1].as_tensor()).item() for i in (0, 1)
    ]
    assert torch.allclose(details.flatten(), 0.5 * torch.tensor(voxels))
