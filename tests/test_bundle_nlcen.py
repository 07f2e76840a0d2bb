"""
NLCEN bundle through ``monai.bundle`` beyond the shared conformance tests: what train, evaluate, inference and the
robustness sweeps write, the mask clean-up options, and the robustness study script over the bundle's config chains.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLE = "nlcen"
SMALL = {"spatial_size": [64, 64], "num_workers": 0}
NUM_TEST = 8  # test images of the synthetic default data (128 x 128)


@pytest.fixture(scope="module")
def trained(trained_bundle) -> tuple[Path, Path]:
    """(bundle_root, dataset_dir) of one epoch of train.json on the synthetic default data."""
    return trained_bundle(BUNDLE)


def _metrics(eval_dir: Path) -> dict[str, float]:
    with open(eval_dir / "metrics.csv") as f:
        return {row[0]: float(row[1]) for row in csv.reader(f) if row}


def test_train_saves_best_model(trained: tuple[Path, Path]) -> None:
    root, _ = trained
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(key.startswith("backbone") or "nlce" in key for key in state), "checkpoint holds no NLCEN weights"


def test_evaluate_writes_dice_and_jaccard(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    run_bundle(BUNDLE, ["train", "evaluate"], bundle_root=str(root), dataset_dir=str(data), **SMALL)
    metrics = _metrics(root / "eval")
    assert set(metrics) == {"mean_dice", "mean_jaccard"}, metrics
    assert 0.0 <= metrics["mean_jaccard"] <= metrics["mean_dice"] <= 1.0
    for name in metrics:
        raw = (root / "eval" / f"{name}_raw.csv").read_text().splitlines()
        assert len(raw) == 1 + NUM_TEST, raw  # header + one row per test image
        assert all(".png" in line for line in raw[1:]), raw


def test_inference_writes_one_mask_per_image(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    out = root / "predictions"
    run_bundle(BUNDLE, "inference", bundle_root=str(root), dataset_dir=str(data), **SMALL)
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == NUM_TEST
    for mask in masks:
        arr = np.asarray(Image.open(mask))
        assert set(np.unique(arr).tolist()) <= {0, 1}
        assert arr.shape == (128, 128)  # the image's own size, not the network's 64 x 64


def test_robustness_sweep_writes_json_and_curve(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    # at the images' own size, so that evaluate.json and the sweep score the same pixels
    same = {"bundle_root": str(root), "dataset_dir": str(data), "spatial_size": [128, 128], "num_workers": 0}
    run_bundle(BUNDLE, ["train", "evaluate"], **same)
    with open(root / "eval" / "mean_dice_raw.csv") as f:
        per_image = [float(row[-1]) for row in list(csv.reader(f))[1:]]  # the test images in datalist order
    run_bundle(BUNDLE, ["train", "robustness"], epsilons=[0, 2, 8], max_images=2, batch_size=4, **same)
    summary = json.loads((root / "eval" / "robustness.json").read_text())
    assert [r["epsilon"] for r in summary["results"]] == [0.0, 2.0, 8.0]
    assert summary["num_images"] == 2
    assert [a["name"] for a in summary["attacks"]] == ["IterativeFGSM", "IterativeFGSM"]
    assert [a["eps"] for a in summary["attacks"]] == [2.0, 8.0]
    assert all(a["target"] == "inverse" and a["num_steps"] == n for a, n in zip(summary["attacks"], (3, 10)))
    # the clean point of the sweep is the evaluation of evaluate.json (same images, same resolution here)
    assert abs(summary["results"][0]["mean_dice"] - float(np.mean(per_image[:2]))) < 1e-4
    assert (root / "eval" / "robustness.png").stat().st_size > 1000


def test_robustness_pgd_config_overrides_the_attack(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    run_bundle(
        BUNDLE,
        ["train", "robustness", "robustness_pgd"],
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


@pytest.mark.parametrize(
    "configs, postprocessing", [(["train", "evaluate"], "validate#postprocessing"), (["inference"], "postprocessing")]
)
def test_mask_cleanup_options(configs: list[str], postprocessing: str, bundle_config) -> None:
    """``keep_components`` / ``fill_holes`` switch MONAI's connected-component and hole-filling steps on."""
    mask = torch.zeros(1, 12, 12)
    mask[0, 1:6, 1:6] = 1  # the larger blob, with a hole
    mask[0, 3, 3] = 0
    mask[0, 8:10, 8:10] = 1  # a small spurious blob
    expected = torch.zeros(1, 12, 12)
    expected[0, 1:6, 1:6] = 1

    def cleaned(**options: object) -> torch.Tensor:
        steps = bundle_config(BUNDLE, configs, **options).get_parsed_content(postprocessing).transforms
        argmax = next(i for i, t in enumerate(steps) if type(t).__name__ == "AsDiscreted")
        return torch.as_tensor(steps[argmax + 1]({"pred": mask.clone()})["pred"])  # the clean-up follows the argmax

    assert torch.equal(cleaned(), mask)  # off by default
    assert torch.equal(cleaned(keep_components=1, fill_holes=True), expected)


def test_study_script_runs_the_bundle_configs(trained: tuple[Path, Path], load_script, tmp_path: Path) -> None:
    """scripts/nlcen_robustness_study.py: evaluate, I-FGSM and PGD sweeps of a trained variant, gathered."""
    root, data = trained
    work = tmp_path / "study"
    (work / "nlcen" / "models").mkdir(parents=True)
    shutil.copy(root / "models" / "model.pt", work / "nlcen" / "models" / "model.pt")  # trained: not retrained
    table = load_script("nlcen_robustness_study").study(
        str(data), variants=["nlcen"], work_dir=str(work), max_images=2, epsilons=[0, 2], pgd_epsilons=[2], pgd_steps=1
    )
    assert f"| NLCEN ({NUM_TEST} images) |" in table and "| NLCEN (2 images) |" in table
    gathered = json.loads((work / "robustness_study.json").read_text())
    assert [r["epsilon"] for r in gathered["ifgsm"]["nlcen"]["results"]] == [0.0, 2.0]
    assert gathered["pgd"]["nlcen"]["attacks"][0]["name"] == "PGD"
    assert (work / "robustness_study.png").is_file() and (work / "robustness_study.md").is_file()
