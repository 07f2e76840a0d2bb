"""Smoke test of the ProtoSeg bundle through ``monai.bundle``: offline and online training, evaluation, inference with
the mean SA score, and the interpretation run, on a tiny synthetic set; plus one real image through the datalist."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run, verify_net_in_out
from PIL import Image

from monai_ext.data import load_datalist, make_synthetic_dataset

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "protoseg"
CONFIGS = BUNDLE / "configs"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "protoseg_tables.py"
SMALL = {"spatial_size": [64, 64], "features": [4, 4, 8, 8, 16, 4], "num_workers": 0}


def _tables_script():
    spec = importlib.util.spec_from_file_location("protoseg_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_csv(path: Path) -> list[list[str]]:
    with open(path) as f:
        return [row for row in csv.reader(f) if row]


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train two epochs (one checkpoint per epoch for VoG) into a temporary bundle root."""
    root = tmp_path_factory.mktemp("protoseg")
    data = make_synthetic_dataset(
        root / "data", num_training=8, num_validation=4, num_test=4, spatial_size=(64, 64), seed=2
    )
    run(
        config_file=str(CONFIGS / "train.json"),
        bundle_root=str(root),
        dataset_dir=str(data),
        epochs=2,
        batch_size=4,
        checkpoint_interval=1,
        **SMALL,
    )
    return root, Path(data)


def test_train_saves_best_and_epoch_checkpoints(trained_bundle: tuple[Path, Path]) -> None:
    root, _ = trained_bundle
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "upcat_1.convs.conv_1.conv.weight" in state
    assert len(sorted((root / "models" / "epochs").glob("*.pt"))) == 2


def test_train_online_uses_the_protoseg_loss(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    configs = [str(CONFIGS / "train.json"), str(CONFIGS / "train_online.json")]
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({"bundle_root": str(root), "dataset_dir": str(data), **SMALL})
    loss = parser.get_parsed_content("loss")
    assert type(loss).__name__ == "ProtoSegLoss" and len(loss.recorder.layers) == 18
    run(config_file=configs, bundle_root=str(root), dataset_dir=str(data), epochs=1, batch_size=4, **SMALL)
    state = torch.load(root / "models" / "online" / "model.pt", map_location="cpu", weights_only=True)
    assert "conv_0.conv_0.conv.weight" in state


def test_evaluate_and_interpret_agree(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    run(config_file=str(CONFIGS / "evaluate.json"), bundle_root=str(root), dataset_dir=str(data), **SMALL)
    metrics = {row[0]: float(row[1]) for row in _read_csv(root / "eval" / "metrics.csv")}
    run(
        config_file=str(CONFIGS / "interpret.json"),
        bundle_root=str(root),
        dataset_dir=str(data),
        interpret_dir=str(root / "eval" / "synthetic_offline"),
        noise_levels=[0.5],
        num_sam_images=2,
        batch_size=4,
        **SMALL,
    )
    out = root / "eval" / "synthetic_offline"
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
    markdown = Path(_tables_script().tables(str(root / "eval"), ["synthetic"])).read_text()
    assert (
        f"| synthetic | {layers['output_dice']['mean']:.4f} ± " in markdown
        and "| synthetic | offline | mu |" in markdown
    )
    for name in ("layers.csv", "per_image.csv", "layers.png", "units.png", "units.csv", "sams.png", "quality.csv",
                 "coverage.csv", "mu_dice.png", "vog_dice.png", "noise.csv", "noise.png"):  # fmt: skip
        assert (out / name).is_file(), name


def test_inference_writes_masks_and_mu(trained_bundle: tuple[Path, Path]) -> None:
    root, data = trained_bundle
    run(config_file=str(CONFIGS / "inference.json"), bundle_root=str(root), dataset_dir=str(data), **SMALL)
    out = root / "predictions"
    masks = sorted(out.glob("*_seg.png"))
    assert len(masks) == 4
    assert all(set(np.unique(np.asarray(Image.open(m))).tolist()) <= {0, 1} for m in masks)
    rows = _read_csv(out / "quality.csv")
    assert rows[0] == ["filename", "mu"] and len(rows) == 5
    assert all(0.0 <= float(mu) <= 1.0 for _, mu in rows[1:])
    assert {Path(name).stem + "_seg" for name, _ in rows[1:]} == {m.stem for m in masks}


def test_verify_net_in_out() -> None:
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        n=1,
        any=8,
        **{"network_def#features": SMALL["features"]},
    )


def test_inference_config_has_monai_label_ids() -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    for key in ("network_def", "network", "preprocessing", "inferer", "postprocessing", "bundle_root", "device"):
        assert key in parser, key


REAL = {
    "kvasir_seg": {"in_channels": 3, "label_threshold": 128},
    "jsrt_scr_224": {"in_channels": 1, "label_values": [[0, 250], [150, 200]]},
    "dsb2018_stage1_train": {"in_channels": 3, "label_threshold": 128},
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_image_through_the_datalist(name: str) -> None:
    folder = DATASETS / name
    if not (folder / "dataset.json").is_file():
        pytest.skip(f"{folder} is not available")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "interpret.json"))
    parser.update({"dataset_dir": str(folder), "spatial_size": [64, 64], **REAL[name]})
    item = load_datalist(parser.get_parsed_content("data_root"), "test")[0]
    out = parser.get_parsed_content("preprocessing")(item)
    assert tuple(out["image"].shape) == (REAL[name]["in_channels"], 64, 64)
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0} and float(out["label"].sum()) > 0
