"""Smoke test of the NLCEN bundle through ``monai.bundle``: train one epoch, evaluate, infer, on a tiny synthetic set."""

from __future__ import annotations

import csv
import json
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


def test_robustness_sweep_writes_json_and_curve(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    run(config_file=str(CONFIGS / "evaluate.json"), bundle_root=str(root), dataset_dir=str(data), **SMALL)
    with open(root / "eval" / "metrics.csv") as f:
        clean_dice = {row[0]: float(row[1]) for row in csv.reader(f) if row}["mean_dice"]
    run(
        config_file=str(CONFIGS / "robustness.json"),
        bundle_root=str(root),
        dataset_dir=str(data),
        epsilons=[0, 2, 8],
        batch_size=4,
        **SMALL,
    )
    summary = json.loads((root / "eval" / "robustness.json").read_text())
    assert [r["epsilon"] for r in summary["results"]] == [0.0, 2.0, 8.0]
    assert summary["num_images"] == 4
    assert [a["name"] for a in summary["attacks"]] == ["IterativeFGSM", "IterativeFGSM"]
    assert [a["eps"] for a in summary["attacks"]] == [2.0, 8.0]
    assert all(a["target"] == "inverse" and a["num_steps"] == n for a, n in zip(summary["attacks"], (3, 10)))
    # the clean point of the sweep is the evaluation of evaluate.json (same images, same resolution here)
    assert abs(summary["results"][0]["mean_dice"] - clean_dice) < 1e-4
    assert (root / "eval" / "robustness.png").stat().st_size > 1000


def test_robustness_pgd_config_overrides_the_attack(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    run(
        config_file=[str(CONFIGS / "robustness.json"), str(CONFIGS / "robustness_pgd.json")],
        bundle_root=str(root),
        dataset_dir=str(data),
        epsilons=[4],
        batch_size=4,
        **{"attack#num_steps": 2},
        **SMALL,
    )
    summary = json.loads((root / "eval" / "robustness_pgd.json").read_text())
    assert summary["attacks"][0]["name"] == "PGD" and summary["attacks"][0]["target"] is None
    assert summary["attacks"][0]["num_steps"] == 2 and summary["attacks"][0]["random_start"] is True


@pytest.mark.parametrize("config", ["evaluate.json", "inference.json"])
def test_mask_cleanup_options(config: str) -> None:
    """``keep_components`` / ``fill_holes`` switch MONAI's connected-component and hole-filling steps on."""
    mask = torch.zeros(1, 12, 12)
    mask[0, 1:6, 1:6] = 1  # the larger blob, with a hole
    mask[0, 3, 3] = 0
    mask[0, 8:10, 8:10] = 1  # a small spurious blob
    expected = torch.zeros(1, 12, 12)
    expected[0, 1:6, 1:6] = 1

    def cleaned(**options: object) -> torch.Tensor:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / config))
        parser.update(options)
        steps = parser.get_parsed_content("postprocessing").transforms
        argmax = next(i for i, t in enumerate(steps) if type(t).__name__ == "AsDiscreted")
        data = {"pred": mask.clone()}
        for step in steps[argmax + 1 : argmax + 3]:
            data = step(data)
        return torch.as_tensor(data["pred"])

    assert torch.equal(cleaned(), mask)  # off by default
    assert torch.equal(cleaned(keep_components=1, fill_holes=True), expected)
