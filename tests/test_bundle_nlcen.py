"""Smoke test of the NLCEN bundle through ``monai.bundle``: train one epoch, evaluate, infer, on a tiny synthetic set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run, verify_net_in_out
from PIL import Image

from monai_ext.data import make_synthetic_dataset

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "nlcen"
CONFIGS = BUNDLE / "configs"
SMALL = {"spatial_size": [64, 64], "num_workers": 0}


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train one epoch into a temporary bundle root and return (bundle_root, dataset_dir)."""
    root = tmp_path_factory.mktemp("nlcen")
    data = make_synthetic_dataset(
        root / "data", num_training=8, num_validation=4, num_test=4, spatial_size=(64, 64), seed=1
    )
    run(
        config_file=str(CONFIGS / "train.json"),
        bundle_root=str(root),
        dataset_dir=str(data),
        epochs=1,
        batch_size=4,
        **SMALL,
    )
    return root, Path(data)


def test_train_saves_best_model(trained_bundle: tuple[Path, Path]) -> None:
    root, _ = trained_bundle
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(key.startswith("backbone") or "nlce" in key for key in state), "checkpoint holds no NLCEN weights"


def test_evaluate_writes_dice_and_jaccard(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    run(config_file=str(CONFIGS / "evaluate.json"), bundle_root=str(root), dataset_dir=str(data), **SMALL)
    with open(root / "eval" / "metrics.csv") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert set(metrics) == {"mean_dice", "mean_jaccard"}, metrics
    assert 0.0 <= metrics["mean_jaccard"] <= metrics["mean_dice"] <= 1.0
    for name in metrics:
        raw = (root / "eval" / f"{name}_raw.csv").read_text().splitlines()
        assert len(raw) == 1 + 4, raw  # header + one row per test image
        assert all(".png" in line for line in raw[1:]), raw


def test_inference_writes_one_mask_per_image(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    out = root / "predictions"
    run(config_file=str(CONFIGS / "inference.json"), bundle_root=str(root), dataset_dir=str(data), **SMALL)
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 4
    for mask in masks:
        arr = np.asarray(Image.open(mask))
        assert set(np.unique(arr).tolist()) <= {0, 1}
        assert arr.shape == (64, 64)


def test_verify_net_in_out() -> None:
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        n=1,
        any=8,
    )


def test_inference_config_has_monai_label_ids() -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    for key in ("network_def", "network", "preprocessing", "inferer", "postprocessing", "bundle_root", "device"):
        assert key in parser, key
