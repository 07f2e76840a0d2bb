"""
SAGAN segmentation bundle through ``monai.bundle`` beyond the shared conformance tests: what train, evaluate and
inference write, the U-Net baseline override, the evaluation metrics against a hand-computed confusion matrix, and the
report script.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from monai_ext.handlers.class_metrics import ClassMetricsSaver
from monai_ext.visualize import plot_segmentations

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLE = "sagan_seg"
TINY = {"spatial_size": [32, 32], "channels": [4, 8, 8, 16, 16], "num_workers": 0}
CLASSES = ["background", "right lung", "left lung", "heart"]
METRICS = ["f1_score", "accuracy", "iou", "precision", "recall"]
NUM_TEST = 8  # test images of the synthetic default data (128 x 128)


@pytest.fixture(scope="module")
def trained(trained_bundle) -> tuple[Path, Path]:
    """(bundle_root, dataset_dir) of one epoch of train.json on the synthetic default data."""
    return trained_bundle(BUNDLE)


def test_train_saves_generator_and_final_checkpoint(trained: tuple[Path, Path]) -> None:
    root, _ = trained
    best = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(key.startswith("encoder.") for key in best) and not any(key.startswith("blocks.") for key in best)
    final = torch.load(root / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert set(final) == {"network", "discriminator", "optimizer", "d_optimizer"}
    assert any(key.startswith("blocks.") for key in final["discriminator"])
    assert len(list((root / "runs").glob("events.out.tfevents*"))) >= 1


def test_evaluate_writes_per_class_tables(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    run_bundle(BUNDLE, ["train", "evaluate"], bundle_root=str(root), dataset_dir=str(data), **TINY)
    table = json.loads((root / "eval" / "class_metrics.json").read_text())
    assert list(table) == METRICS
    for name, row in table.items():
        assert list(row) == [*CLASSES, "mean"], name
        values = [row[c] for c in CLASSES]
        assert all(0.0 <= v <= 1.0 for v in values), (name, row)
        assert row["mean"] == pytest.approx(float(np.mean(values))), name
    assert "| overall (mean) |" in (root / "eval" / "class_metrics.md").read_text()
    with open(root / "eval" / "metrics.csv") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert set(metrics) == {"mean_dice", "pixel_accuracy"}
    # every wrong pixel is a false positive of one class and a false negative of another
    one_vs_rest = table["accuracy"]["mean"]
    assert metrics["pixel_accuracy"] == pytest.approx(1 - len(CLASSES) / 2 * (1 - one_vs_rest), abs=1e-4)
    raw = (root / "eval" / "iou_raw.csv").read_text().splitlines()
    assert len(raw) == 1 + NUM_TEST and raw[0].split(",")[1:] == ["class0", "class1", "class2", "class3", "mean"]


def test_inference_writes_one_mask_per_image(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    run_bundle(BUNDLE, "inference", bundle_root=str(root), dataset_dir=str(data), **TINY)
    masks = sorted((root / "predictions").glob("*_seg.png"))
    assert len(masks) == NUM_TEST
    for mask in masks:
        arr = np.asarray(Image.open(mask))
        assert arr.shape == (128, 128) and set(np.unique(arr).tolist()) <= {0, 1, 2, 3}  # the image's own size


def test_unet_baseline_override(trained: tuple[Path, Path], run_bundle) -> None:
    """unet_baseline.json merged over train.json (+ evaluate.json): a MONAI UNet trained without the discriminator."""
    _, data = trained
    root = data.parent / "unet"
    run_bundle(
        BUNDLE, ["train", "unet_baseline"], bundle_root=str(root), dataset_dir=str(data), epochs=1, batch_size=4, **TINY
    )
    final = torch.load(root / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert any(key.startswith("model.") for key in final["network"])  # MONAI UNet's parameter names
    run_bundle(BUNDLE, ["train", "evaluate", "unet_baseline"], bundle_root=str(root), dataset_dir=str(data), **TINY)
    assert list(json.loads((root / "eval" / "class_metrics.json").read_text())) == METRICS


def _one_hot(index: list[list[int]], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(index), num_classes).permute(2, 0, 1).float()


def test_metrics_match_hand_computation(tmp_path: Path, bundle_config) -> None:
    """
    evaluate.json's metrics on two 2 x 3 images with 3 classes. Image 1 (one-vs-rest counts per class):
        label [[0, 0, 0], [1, 2, 2]], prediction [[0, 0, 1], [1, 1, 2]]
        class 0: TP 2, FP 0, FN 1, TN 3 -> precision 1,   recall 2/3, F1 4/5, IoU 2/3, accuracy 5/6
        class 1: TP 1, FP 2, FN 0, TN 3 -> precision 1/3, recall 1,   F1 1/2, IoU 1/3, accuracy 4/6
        class 2: TP 1, FP 0, FN 1, TN 4 -> precision 1,   recall 1/2, F1 2/3, IoU 1/2, accuracy 5/6
    Image 2 is predicted exactly (every score 1). Per class: the mean over the images; overall: the mean over classes.
    """
    parser = bundle_config(BUNDLE, ["train", "evaluate"])
    handlers = parser.get_parsed_content("class_metrics")
    assert list(handlers) == parser["metric_names"] == METRICS

    label1, pred1 = [[0, 0, 0], [1, 2, 2]], [[0, 0, 1], [1, 1, 2]]
    label2 = [[2, 1, 0], [0, 1, 2]]
    batch = {
        "pred": torch.stack([_one_hot(pred1), _one_hot(label2)]),
        "label": torch.stack([_one_hot(label1), _one_hot(label2)]),
    }
    engine = Engine(lambda engine, _: batch)
    for name, handler in handlers.items():
        handler.attach(engine, name)
    ClassMetricsSaver(tmp_path, METRICS, ["a", "b", "c"]).attach(engine)
    engine.run([0], max_epochs=1)

    image1 = {
        "precision": [1, 1 / 3, 1],
        "recall": [2 / 3, 1, 1 / 2],
        "f1_score": [4 / 5, 1 / 2, 2 / 3],
        "iou": [2 / 3, 1 / 3, 1 / 2],
        "accuracy": [5 / 6, 4 / 6, 5 / 6],
    }
    table = json.loads((tmp_path / "class_metrics.json").read_text())
    for name, values in image1.items():
        expected = [(v + 1.0) / 2 for v in values]
        got = [table[name][c] for c in ("a", "b", "c")]
        assert got == pytest.approx(expected, abs=1e-6), name
        assert table[name]["mean"] == pytest.approx(sum(expected) / 3, abs=1e-6), name


def test_report_table_and_figure(trained: tuple[Path, Path], tmp_path: Path, run_bundle, load_script) -> None:
    """scripts/sagan_report.py: the per-metric comparison tables and the prediction figure."""
    root, data = trained
    report = load_script("sagan_report")
    if not (root / "eval" / "class_metrics.json").exists():
        run_bundle(BUNDLE, ["train", "evaluate"], bundle_root=str(root), dataset_dir=str(data), **TINY)
    runs = {"A": str(root / "eval"), "B": str(root / "eval" / "class_metrics.json")}
    text = report.table(runs, str(tmp_path / "t.md"))
    assert text.count("| overall (mean over classes) |") == 5 and "**IoU**" in text
    f1 = json.loads((root / "eval" / "class_metrics.json").read_text())["f1_score"]["heart"]
    assert f"| heart | {f1:.4f} | {f1:.4f} |" in text
    path = report.figure(
        str(data),
        {"SAGAN": {"ckpt": str(root / "models" / "model.pt")}},
        output=str(tmp_path / "fig.png"),
        num_images=2,
        overrides={"spatial_size": TINY["spatial_size"], "channels": TINY["channels"]},
    )
    assert Image.open(path).size[0] > 300


def test_plot_segmentations_checks_shapes(tmp_path: Path) -> None:
    image = np.zeros((8, 6))
    with pytest.raises(ValueError, match="differs from image shape"):
        plot_segmentations([image], {"gt": [np.zeros((6, 8), dtype=int)]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="1 maps for 2 images"):
        plot_segmentations([image, image], {"gt": [np.zeros((8, 6), dtype=int)]}, tmp_path / "x.png")
