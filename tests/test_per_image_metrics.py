"""Per-image Dice, FPR and FNR with their mean and standard error (Table 1 of deep input transfer), from an evaluator's
details, against hand-computed values; the one per-image Dice against MONAI's ``DiceMetric``; the kernel density plot
of Fig. 4."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ConfusionMatrix, MeanDice
from monai.metrics import DiceMetric
from monai.networks import one_hot

from monai_ext.handlers import PerImageMetricsSaver
from monai_ext.metrics import compute_per_image_dice, density_curve, mean_standard_error, per_image_scores
from monai_ext.visualize import plot_metric_densities


def _onehot(mask: list[list[int]]) -> torch.Tensor:
    m = torch.tensor(mask)
    return torch.stack([m == 0, m == 1]).float()


def test_scores_of_an_evaluator_by_hand(tmp_path: Path) -> None:
    # image a: 2 TP, 1 FP, 4 TN, 1 FN: Dice 2 * 2 / (2 * 2 + 1 + 1), FPR 1/5, FNR 1/3; image b: all right
    preds = [_onehot([[1, 1, 1, 0], [0, 0, 0, 0]]), _onehot([[0, 1], [1, 0]])]
    labels = [_onehot([[1, 1, 0, 1], [0, 0, 0, 0]]), _onehot([[0, 1], [1, 0]])]
    engine = Engine(lambda e, batch: batch)
    MeanDice(include_background=False).attach(engine, "mean_dice")
    for name in ("fpr", "fnr"):
        ConfusionMatrix(include_background=False, metric_name=name, compute_sample=True).attach(engine, name)
    saver = PerImageMetricsSaver(tmp_path, label="ORIG")
    saver.attach(engine)
    engine.run([{"y_pred": [p], "y": [y]} for p, y in zip(preds, labels, strict=True)])
    values = json.loads((tmp_path / "per_image.json").read_text())["values"]
    assert values["dice"] == pytest.approx([2 / 3, 1.0])
    assert values["fpr"] == pytest.approx([1 / 5, 0.0]) and values["fnr"] == pytest.approx([1 / 3, 0.0])
    summary = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert summary["dice"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert summary["dice"]["standard_error"] == pytest.approx(abs(1 - 2 / 3) / 2)  # std (n-1) of 2 values / sqrt 2


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("ignore_empty", [False, True])
@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 3)])
def test_per_image_dice_is_monai_dice_metric(num_classes, include_background, ignore_empty, spatial) -> None:
    """``compute_per_image_dice`` equals MONAI's ``DiceMetric`` per image and class, averaged over the classes as
    ``per_image_scores`` averages its details; class indices or one-hot; images that lack a class in the prediction,
    the label or both (image 0: an empty prediction; image 1: the label of one class only; image 2: both one class)."""
    gen = torch.Generator().manual_seed(num_classes)
    pred = torch.randint(0, num_classes, (5, 1, *spatial), generator=gen)
    label = torch.randint(0, num_classes, (5, 1, *spatial), generator=gen)
    pred[0], label[1], pred[2], label[2] = 0, num_classes - 1, 1, 1
    metric = DiceMetric(include_background=include_background, reduction="none", ignore_empty=ignore_empty,
                        num_classes=num_classes)  # fmt: skip
    expected = per_image_scores(metric(pred, label))
    for p, y in (
        (pred, label),
        (one_hot(pred, num_classes), one_hot(label, num_classes)),
        (pred, one_hot(label, num_classes)),
    ):
        ours = compute_per_image_dice(p, y, include_background, ignore_empty, num_classes)
        assert ours.dtype == torch.float64 and ours.shape == (5,)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6, equal_nan=True)
    # by hand: 2 x 2, class 1 predicted (1, 1, 0, 0) against (1, 0, 1, 0): 2 * 1 / (2 + 2)
    pred, label = torch.tensor([[[[1, 1], [0, 0]]]]), torch.tensor([[[[1, 0], [1, 0]]]])
    assert compute_per_image_dice(pred, label, num_classes=2).tolist() == [0.5]
    with pytest.raises(ValueError, match="num_classes"):
        compute_per_image_dice(pred, label)


def test_summaries_and_density() -> None:
    stats = mean_standard_error([1.0, 2.0, 4.0, float("nan")])
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(7 / 3)
    assert stats["standard_error"] == pytest.approx(np.std([1, 2, 4], ddof=1) / math.sqrt(3))
    assert math.isnan(mean_standard_error([0.5])["standard_error"])
    details = torch.tensor([[[1.0, 1.0, 2.0, 0.0], [0.0, 0.0, 4.0, float("nan")]]])  # tp, fp, tn, fn of 2 classes
    assert per_image_scores(details, "fpr").tolist() == pytest.approx([(1 / 3 + 0.0) / 2])
    grid = np.linspace(-3, 4, 2001)
    density = density_curve([0.1, 0.2, 0.25, 0.7], grid)
    assert density is not None and np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
    assert density_curve([0.5, 0.5], grid) is None


def test_density_plot(tmp_path: Path) -> None:
    results = {"ORIG": {"dice": [0.7, 0.8, 0.9], "fpr": [0.1, 0.0, 0.2], "fnr": [0.3, 0.2, 0.1]},
               "GP_Ts": {"dice": [0.9, 0.9, 0.9], "fpr": [0.1, 0.05, 0.0], "fnr": [0.1, 0.1, 0.2]}}  # fmt: skip
    path = plot_metric_densities(results, tmp_path / "kde.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
