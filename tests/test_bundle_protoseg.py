"""The ProtoSeg bundle through ``monai.bundle``: offline and online training, evaluation, inference with the mean SA
score, and the interpretation run (train.json + interpret.json), on a tiny synthetic set; the tables script over its
output; one real image of each dataset through the datalist. (What every bundle must pass is in
``test_bundle_conformance.py``.)"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, tiny
from PIL import Image

from monai_ext.data import load_datalist, make_synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLE = "protoseg"
DATASETS = REPO.parent / "shared" / "datasets"
SMALL = tiny(BUNDLE)


def _read_csv(path: Path) -> list[list[str]]:
    with open(path) as f:
        return [row for row in csv.reader(f) if row]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, run_bundle) -> tuple[Path, Path]:
    """Train two epochs (one checkpoint per epoch for VoG) into a temporary bundle root."""
    root = tmp_path_factory.mktemp("protoseg")
    data = make_synthetic_dataset(
        root / "data", num_training=8, num_validation=4, num_test=4, spatial_size=(64, 64), seed=2
    )
    args = {"bundle_root": str(root), "dataset_dir": str(data), "batch_size": 4, **SMALL}
    run_bundle(BUNDLE, "train", epochs=2, checkpoint_interval=1, **args)
    return root, Path(data)


def test_train_saves_best_and_epoch_checkpoints(trained: tuple[Path, Path]) -> None:
    root, _ = trained
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "upcat_1.convs.conv_1.conv.weight" in state
    assert len(sorted((root / "models" / "epochs").glob("*.pt"))) == 2


def test_train_online_uses_the_protoseg_loss(trained: tuple[Path, Path], run_bundle, bundle_config) -> None:
    root, data = trained
    args = {"bundle_root": str(root), "dataset_dir": str(data), **SMALL}
    loss = bundle_config(BUNDLE, ["train", "train_online"], **args).get_parsed_content("loss")
    assert type(loss).__name__ == "ProtoSegLoss" and len(loss.recorder.layers) == 18
    run_bundle(BUNDLE, ["train", "train_online"], epochs=1, batch_size=4, **args)
    state = torch.load(root / "models" / "online" / "model.pt", map_location="cpu", weights_only=True)
    assert "conv_0.conv_0.conv.weight" in state


def test_evaluate_and_interpret_agree(trained: tuple[Path, Path], run_bundle, load_script) -> None:
    root, data = trained
    args = {"bundle_root": str(root), "dataset_dir": str(data), **SMALL}
    run_bundle(BUNDLE, ["train", "evaluate"], **args)
    metrics = {row[0]: float(row[1]) for row in _read_csv(root / "eval" / "metrics.csv")}
    out = root / "eval" / "synthetic_offline"
    run_bundle(
        BUNDLE,
        ["train", "interpret"],
        interpret_dir=str(out),
        noise_levels=[0.5],
        num_sam_images=2,
        batch_size=4,
        **args,
    )
    layers = json.loads((out / "layers.json").read_text())
    assert layers["num_images"] == 4 and len(layers["layers"]) == 19
    # the images are 64 x 64 already: the interpretation's output Dice is evaluate.json's
    assert layers["output_dice"]["mean"] == pytest.approx(metrics["mean_dice"], abs=1e-5)
    assert len(layers["units"]["mean_per_unit"]) == 4
    quality = json.loads((out / "quality.json").read_text())
    assert quality["vog"]["num_checkpoints"] == 2
    assert [row["num_images"] for row in quality["mu"]["coverage"]] == [4, 4, 3, 2]
    noise = json.loads((out / "noise.json").read_text())
    assert noise["levels"] == [0.5] and len(noise["difference"][0]) == 19
    markdown = Path(load_script("protoseg_tables").tables(str(root / "eval"), ["synthetic"])).read_text()
    assert (
        f"| synthetic | {layers['output_dice']['mean']:.4f} ± " in markdown
        and "| synthetic | offline | mu |" in markdown
    )
    for name in ("layers.csv", "per_image.csv", "layers.png", "units.png", "units.csv", "sams.png", "quality.csv",
                 "coverage.csv", "mu_dice.png", "vog_dice.png", "noise.csv", "noise.png"):  # fmt: skip
        assert (out / name).is_file(), name


def test_inference_writes_masks_and_mu(trained: tuple[Path, Path], run_bundle) -> None:
    root, data = trained
    run_bundle(BUNDLE, "inference", bundle_root=str(root), dataset_dir=str(data), **SMALL)
    out = root / "predictions"
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 4
    assert all(set(np.unique(np.asarray(Image.open(m))).tolist()) <= {0, 1} for m in masks)
    rows = _read_csv(out / "quality.csv")
    assert rows[0] == ["filename", "mu"] and len(rows) == 5
    assert all(0.0 <= float(mu) <= 1.0 for _, mu in rows[1:])
    assert {Path(name).stem + "_seg" for name, _ in rows[1:]} == {m.stem for m in masks}


REAL = {
    "kvasir_seg": {"in_channels": 3, "label_threshold": 128},
    "jsrt_scr_224": {"in_channels": 1, "label_values": [[0, 250], [150, 200]]},
    "dsb2018_stage1_train": {"in_channels": 3, "label_threshold": 128},
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_image_through_the_datalist(name: str, bundle_config) -> None:
    folder = DATASETS / name
    if not (folder / "dataset.json").is_file():
        pytest.skip(f"{folder} is not available")
    parser = bundle_config(BUNDLE, ["train", "interpret"], dataset_dir=str(folder), spatial_size=[64, 64], **REAL[name])
    item = load_datalist(parser.get_parsed_content("data_root"), "test")[0]
    out = parser.get_parsed_content("preprocessing")(item)
    assert tuple(out["image"].shape) == (REAL[name]["in_channels"], 64, 64)
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0} and float(out["label"].sum()) > 0
