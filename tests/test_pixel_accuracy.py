"""Pixel accuracy: equals a naive count, relates to MONAI's one-vs-rest accuracy by 1 - C / 2 * (1 - mean), and its
handler scores an evaluator's output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from ignite.engine import Engine
from monai.handlers import from_engine
from monai.metrics import ConfusionMatrixMetric

from monai_ext.handlers import PixelAccuracyHandler
from monai_ext.metrics import PixelAccuracyMetric, compute_pixel_accuracy


def _one_hot(indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, *spatial) class indices -> (B, C, *spatial) one-hot floats."""
    return F.one_hot(indices, num_classes).movedim(-1, 1).float()


def test_hand_computed_value() -> None:
    label = torch.tensor([[[0, 1], [2, 3]]])
    pred = torch.tensor([[[0, 1], [3, 3]]])  # one wrong pixel of four
    assert compute_pixel_accuracy(_one_hot(pred, 4), _one_hot(label, 4)).item() == 0.75


@settings(max_examples=30, deadline=None)
@given(
    num_classes=st.integers(2, 5),
    spatial_dims=st.integers(1, 3),
    size=st.integers(2, 6),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_naive_count_and_one_vs_rest_identity(num_classes: int, spatial_dims: int, size: int, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, *([size] * spatial_dims))
    label = torch.randint(num_classes, shape, generator=gen)
    pred = torch.randint(num_classes, shape, generator=gen)
    y_pred, y = _one_hot(pred, num_classes), _one_hot(label, num_classes)

    accuracy = compute_pixel_accuracy(y_pred, y)
    naive = torch.tensor([[(pred[b] == label[b]).float().mean().item()] for b in range(batch)])
    torch.testing.assert_close(accuracy, naive)

    one_vs_rest = ConfusionMatrixMetric(include_background=True, metric_name="accuracy", compute_sample=True)
    one_vs_rest(y_pred=y_pred, y=y)
    mean_one_vs_rest = one_vs_rest.aggregate(reduction="mean")[0].item()  # over images and classes
    torch.testing.assert_close(accuracy.mean().item(), 1 - num_classes / 2 * (1 - mean_one_vs_rest), rtol=0, atol=1e-6)


def test_metric_accumulates_over_batches() -> None:
    label = torch.zeros(2, 4, 4, dtype=torch.long)
    pred = label.clone()
    pred[0, 0, :2] = 1  # image 0: 2 of 16 wrong; image 1: all right
    metric = PixelAccuracyMetric()
    metric(y_pred=_one_hot(pred[:1], 2), y=_one_hot(label[:1], 2))
    metric(y_pred=_one_hot(pred[1:], 2), y=_one_hot(label[1:], 2))
    assert metric.aggregate().item() == pytest.approx((14 / 16 + 1) / 2)


def test_handler_scores_an_engine_output() -> None:
    label = torch.randint(3, (4, 8, 8), generator=torch.Generator().manual_seed(1))
    pred = torch.where(torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.3, 0, label)
    batches = [{"pred": _one_hot(pred[i : i + 2], 3), "label": _one_hot(label[i : i + 2], 3)} for i in (0, 2)]
    engine = Engine(lambda engine, batch: batch)
    PixelAccuracyHandler(output_transform=from_engine(["pred", "label"])).attach(engine, "pixel_accuracy")
    engine.run(batches)
    assert engine.state.metrics["pixel_accuracy"] == pytest.approx((pred == label).float().mean().item())
    assert engine.state.metric_details["pixel_accuracy"].shape == (4, 1)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="one-hot"):
        compute_pixel_accuracy(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
