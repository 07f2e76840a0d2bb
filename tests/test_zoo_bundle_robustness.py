"""
``python -m monai_ext robustness --bundle DIR`` on bundles in the model zoo's form that this project did not write:
tiny 3D bundles written in a temporary folder as the zoo writes them (JSON, like ``spleen_ct_segmentation``: a
``train.json`` with a sliding-window validation section, a standalone ``inference.json`` and an ``evaluate.json``
override; YAML, like ``segmentation_template``: ``train.yaml``, ``inference.yaml``, ``test.yaml``), tiny NIfTI volumes
with a ``dataset.json``, and the zoo's own two bundles (``../shared/zoo``) loaded with random weights; the opt-in
attacks (FGSM, APGD-CE, VAFA) through the sliding window, the HD95 in mm, the figure and resuming; empty predictions
counted. And the zoo's ``amp`` switch, which every bundle of this project keeps too.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import BUNDLES, REPO, read_bundle_config
from monai.data import DataLoader, MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.metrics import DiceMetric, compute_hausdorff_distance
from monai.networks import one_hot
from monai.networks.nets import UNet
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    Spacingd,
)

from monai_ext.__main__ import main
from monai_ext.attacks import FGSM
from monai_ext.engines import RobustnessSweep
from monai_ext.engines.attack_benchmark import markdown_table
from monai_ext.engines.bundle_loader import load_bundle
from monai_ext.metrics import per_image_distances

pytestmark = pytest.mark.usefixtures("one_thread")

ZOO_DIR = REPO.parent / "shared" / "zoo"
BOTH = ["image", "label"]
#: the tiny JSON bundle's network and sliding window
JSON_NET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2],
            "num_res_units": 1, "norm": "batch"}  # fmt: skip
JSON_WINDOW = {"roi_size": [16, 16, 16], "sw_batch_size": 4, "overlap": 0.25}
#: the tiny JSON bundle's voxel spacing in mm (its ``Spacingd``, as the zoo's spleen bundle's): anisotropic, so that
#: distances in voxels and in mm differ
JSON_SPACING = (1.5, 1.5, 2.0)
#: the override an MRI user gives the zoo's CT intensity window (index 4 of train#deterministic_transforms)
MRI_WINDOW = ["--train#deterministic_transforms#4#a_min", "0", "--train#deterministic_transforms#4#a_max", "255"]


def _write_volume(image_path: Path, label_path: Path, shape: tuple[int, ...], seed: int, label: int = 1) -> None:
    """An image (8-bit values, a bright ellipsoid in noise, the x axis stored flipped, 0.75 x 0.75 x 1 mm: half the
    bundle's spacing, so that its nearest-neighbour resampling meets no tie) and its label (``label`` inside the
    ellipsoid) as NIfTI files."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (((grid - rng.uniform(-0.3, 0.3, size=(3, 1, 1, 1))) / 0.5) ** 2).sum(0) < 1
    image = np.clip(rng.normal(60, 25, shape) + 120 * inside, 0, 255).astype(np.float32)
    affine = np.diag([-0.75, 0.75, 1.0, 1.0])
    for path, data in ((image_path, image), (label_path, (inside * label).astype(np.uint8))):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), path)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five volumes of 40 x 36 x 20 voxels with a decathlon ``dataset.json``: 2 training, 1 validation, 2 test."""
    root = tmp_path_factory.mktemp("volumes")
    for seed in range(5):
        _write_volume(
            root / "images" / f"case{seed}.nii.gz", root / "labels" / f"case{seed}.nii.gz", (40, 36, 20), seed
        )
    entries = [{"image": f"images/case{s}.nii.gz", "label": f"labels/case{s}.nii.gz"} for s in range(5)]
    split = {"training": entries[:2], "validation": entries[2:3], "test": entries[3:]}
    (root / "dataset.json").write_text(
        json.dumps({"name": "tiny", "labels": {"0": "background", "1": "atrium"}, **split})
    )
    return root


def _metadata(num_channels: int, names: list[str], spatial_shape: list[int]) -> dict[str, Any]:
    """A ``metadata.json`` of the zoo's schema, with its ``network_data_format``."""
    tensor = {"type": "image", "dtype": "float32", "spatial_shape": spatial_shape, "is_patch_data": True}
    return {
        "version": "0.0.1", "monai_version": "1.6.0", "pytorch_version": "2.8.0", "numpy_version": "1.26.0",
        "name": "tiny", "task": "segmentation", "description": "a tiny test bundle",
        "network_data_format": {
            "inputs": {"image": {**tensor, "format": "magnitude", "modality": "MR", "num_channels": 1,
                                 "value_range": [0, 1], "channel_def": {"0": "image"}}},
            "outputs": {"pred": {**tensor, "format": "segmentation", "num_channels": num_channels,
                                 "value_range": [0, 1], "channel_def": dict(enumerate(names))}},
        },
    }  # fmt: skip


def _json_bundle(root: Path) -> Path:
    """A 3D bundle as ``spleen_ct_segmentation`` writes it, tiny: ``train.json`` (deterministic transforms shared by
    training and validation, a sliding-window validation), a standalone ``inference.json`` and an ``evaluate.json``
    override; the zoo's CT intensity window and 1.5 x 1.5 x 2 mm spacing."""
    transforms = [
        {"_target_": "LoadImaged", "keys": BOTH},
        {"_target_": "EnsureChannelFirstd", "keys": BOTH},
        {"_target_": "Orientationd", "keys": BOTH, "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": BOTH, "pixdim": list(JSON_SPACING), "mode": ["bilinear", "nearest"]},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0, "b_max": 1,
         "clip": True},
        {"_target_": "EnsureTyped", "keys": BOTH},
    ]  # fmt: skip
    image_only = [{**t, "keys": "image", **({"mode": "bilinear"} if "mode" in t else {})} for t in transforms]
    common = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "dataset_dir": "/workspace/data/Task09_Spleen",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "UNet", **JSON_NET},
        "network": "$@network_def.to(@device)",
    }
    train = {
        **common,
        "ckpt_dir": "$@bundle_root + '/models'",
        "images": "$list(sorted(glob.glob(@dataset_dir + '/imagesTr/*.nii.gz')))",
        "labels": "$list(sorted(glob.glob(@dataset_dir + '/labelsTr/*.nii.gz')))",
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": {"_target_": "Novograd", "params": "$@network.parameters()", "lr": 0.002},
        "train": {
            "deterministic_transforms": transforms,
            "random_transforms": [{"_target_": "RandCropByPosNegLabeld", "keys": BOTH, "label_key": "label",
                                   "spatial_size": [16, 16, 16], "num_samples": 2}],
            "preprocessing": {"_target_": "Compose",
                              "transforms": "$@train#deterministic_transforms + @train#random_transforms"},
            "dataset": {"_target_": "CacheDataset", "transform": "@train#preprocessing",
                        "data": "$[{'image': i, 'label': l} for i, l in zip(@images[:-1], @labels[:-1])]"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2, "shuffle": True},
            "inferer": {"_target_": "SimpleInferer"},
            "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 2, "device": "@device",
                        "train_data_loader": "@train#dataloader", "network": "@network", "loss_function": "@loss",
                        "optimizer": "@optimizer", "inferer": "@train#inferer", "amp": True},
        },
        "validate": {
            "preprocessing": {"_target_": "Compose", "transforms": "%train#deterministic_transforms"},
            "dataset": {"_target_": "CacheDataset", "transform": "@validate#preprocessing",
                        "data": "$[{'image': i, 'label': l} for i, l in zip(@images[-1:], @labels[-1:])]"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 1},
            "inferer": {"_target_": "SlidingWindowInferer", **JSON_WINDOW},
            "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@validate#dataloader",
                          "network": "@network", "inferer": "@validate#inferer", "amp": True},
        },
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@train#trainer.run()"],
    }  # fmt: skip
    inference = {
        **common,
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "preprocessing": {"_target_": "Compose", "transforms": image_only},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1},
        "inferer": {"_target_": "SlidingWindowInferer", **JSON_WINDOW},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer"},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}},
        "initialize": ["$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }  # fmt: skip
    evaluate = {"validate#dataset#cache_rate": 0, "run": ["$@validate#evaluator.run()"]}
    configs = root / "configs"
    configs.mkdir(parents=True)
    for name, config in {"train": train, "inference": inference, "evaluate": evaluate}.items():
        (configs / f"{name}.json").write_text(json.dumps(config, indent=4))
    (configs / "metadata.json").write_text(json.dumps(_metadata(2, ["background", "atrium"], [16, 16, 16])))
    _save_weights(UNet(**JSON_NET).state_dict(), root)
    return root


def _yaml_bundle(root: Path, num_volumes: int = 2) -> Path:
    """A 3D bundle as ``segmentation_template`` writes it, tiny: ``train.yaml`` (no validation section),
    ``inference.yaml`` (the image alone) and ``test.yaml`` (image and label) over the ``num_volumes`` volumes of its
    own ``test_data/`` (``img<i>.nii.gz`` and ``lbl<i>.nii.gz``, class ``i % 2 + 1``; 3 classes), a plain
    ``SimpleInferer``."""
    network = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@num_classes",
               "channels": [4, 8], "strides": [2], "num_res_units": 1}  # fmt: skip
    common = {
        "imports": ["$import os", "$import glob"],
        "image": "$monai.utils.CommonKeys.IMAGE",
        "label": "$monai.utils.CommonKeys.LABEL",
        "num_classes": 3,
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/test_data'",
        "network_def": network,
        "network": "$@network_def.to(@device)",
        "inferer": {"_target_": "SimpleInferer"},
    }
    test_keys = {"both_keys": ["@image", "@label"],
                 "imgs": "$sorted(glob.glob(@dataset_dir + '/img*.nii.gz'))",
                 "lbls": "$[i.replace('img', 'lbl') for i in @imgs]",
                 "data_dicts": "$[{@image: i, @label: l} for i, l in zip(@imgs, @lbls)]"}  # fmt: skip

    def evaluation(keys: str) -> dict[str, Any]:
        return {
            "transforms": [{"_target_": "LoadImaged", "keys": keys, "image_only": True},
                           {"_target_": "EnsureChannelFirstd", "keys": keys},
                           {"_target_": "ScaleIntensityd", "keys": "@image"}],
            "preprocessing": {"_target_": "Compose", "transforms": "$@transforms"},
            "dataset": {"_target_": "Dataset", "data": "@data_dicts", "transform": "@preprocessing"},
            "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "network": "@network",
                          "val_data_loader": {"_target_": "DataLoader", "dataset": "@dataset"}, "inferer": "@inferer"},
            "run": ["$@evaluator.run()"],
        }  # fmt: skip

    train = {
        **common,
        "train_transforms": [{"_target_": "LoadImaged", "keys": ["@image", "@label"]},
                             {"_target_": "RandAxisFlipd", "keys": ["@image", "@label"], "prob": 0.5}],
        "preprocessing": {"_target_": "Compose", "transforms": "$@train_transforms"},
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 2, "device": "@device", "network": "@network",
                    "train_data_loader": None, "optimizer": None, "loss_function": None},
        "run": ["$@trainer.run()"],
    }  # fmt: skip
    inference = {**common, "data_dicts": "$[{@image: i} for i in sorted(glob.glob(@dataset_dir + '/img*'))]",
                 **evaluation("@image")}  # fmt: skip
    test = {**common, **test_keys, **evaluation("@both_keys")}
    configs = root / "configs"
    configs.mkdir(parents=True)
    for name, config in {"train": train, "inference": inference, "test": test}.items():
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (configs / "metadata.json").write_text(json.dumps(_metadata(3, ["background", "one", "two"], [16, 16, 12])))
    for seed in range(num_volumes):  # the template's own data: img<i>.nii.gz and lbl<i>.nii.gz side by side
        data = root / "test_data"
        _write_volume(data / f"img{seed}.nii.gz", data / f"lbl{seed}.nii.gz", (16, 16, 12), seed, label=seed % 2 + 1)
    torch.manual_seed(1)
    state = UNet(3, 1, 3, (4, 8), (2,), num_res_units=1).state_dict()
    _save_weights({"model": state}, root)  # as a MONAI CheckpointSaver of {"model": network} writes it
    return root


def _save_weights(state: dict[str, Any], root: Path) -> None:
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(state, root / "models" / "model.pt")


def _predictions(
    bundle: Path, network: torch.nn.Module, inferer: Any, transform: Compose, data: list[dict]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each volume's one-hot prediction of ``network`` (weights of ``bundle/models/model.pt``) through ``inferer`` and
    its one-hot label, as plain tensors ``(1, C, *spatial)``: the evaluation written out by hand, with MONAI's
    transforms and inferer."""
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    network.load_state_dict(state.get("model", state))
    network.eval()
    pairs = []
    with torch.no_grad():
        for entry in data:
            item = transform(dict(entry))
            logits = inferer(item["image"][None], network).as_tensor()
            classes = logits.shape[1]
            label = one_hot(item["label"][None].as_tensor(), classes)
            pairs.append((one_hot(logits.argmax(1, keepdim=True), classes), label))
    return pairs


def _dice_per_image(bundle: Path, network: torch.nn.Module, inferer: Any, transform: Compose, data: list[dict]) -> list:
    """Each volume's mean foreground Dice (MONAI's ``DiceMetric``) of :py:func:`_predictions`."""
    dice = DiceMetric(include_background=False, reduction="none")  # NaN for a class absent from the label
    return [float(dice(p, y).nanmean()) for p, y in _predictions(bundle, network, inferer, transform, data)]


def _json_transform() -> Compose:
    """The tiny JSON bundle's evaluation preprocessing written out by hand, with :py:data:`MRI_WINDOW`."""
    return Compose([
        LoadImaged(BOTH), EnsureChannelFirstd(BOTH), Orientationd(BOTH, "RAS"),
        Spacingd(BOTH, JSON_SPACING, mode=("bilinear", "nearest")),
        ScaleIntensityRanged("image", 0, 255, 0, 1, clip=True),
    ])  # fmt: skip


def _test_entries(dataset_dir: Path) -> list[dict[str, str]]:
    """The test split of ``dataset_dir/dataset.json`` with absolute paths."""
    entries = json.loads((dataset_dir / "dataset.json").read_text())["test"]
    return [{k: str(dataset_dir / v) for k, v in e.items()} for e in entries]


def _run(bundle: Path, out: Path, *options: str) -> dict[str, Any]:
    main(["robustness", "--bundle", str(bundle), "--output_dir", str(out), "--epsilons", "[0,2]", "--attacks", "[pgd]",
          "--num_steps", "2", *options])  # fmt: skip
    return json.loads((out / "attack_benchmark.json").read_text())


def _per_image(out: Path) -> list[dict[str, str]]:
    with open(out / "per_image.csv") as f:
        return list(csv.DictReader(f))


def test_json_bundle_with_decathlon_data_then_resume(tmp_path: Path, dataset_dir: Path) -> None:
    bundle = _json_bundle(tmp_path / "tiny_spleen")
    out = tmp_path / "bench"
    data = ["--dataset_dir", str(dataset_dir)]
    table = _run(bundle, out, *data, *MRI_WINDOW, "--validate#inferer#sw_batch_size", "2")
    assert table["configs"] == [str(bundle / "configs" / "train.json")] and table["split"] == "test"
    assert table["classes"] == ["background", "atrium"] and table["num_images"] == 2
    (pgd,) = table["attacks"]
    assert pgd["label"] == "PGD-2" and [r["epsilon"] for r in pgd["results"]] == [0.0, 2.0]
    assert "| PGD-2 | " in (out / "attack_benchmark.md").read_text() and (out / "attack_benchmark.png").is_file()
    rows = _per_image(out)
    assert [(r["epsilon"], r["image"]) for r in rows] == [(e, f"case{s}.nii.gz") for e in ("0", "2") for s in (3, 4)]

    # the clean score is the network's through the bundle's sliding window, written out by hand
    inferer = SlidingWindowInferer(**{**JSON_WINDOW, "sw_batch_size": 2})
    expected = _dice_per_image(bundle, UNet(**JSON_NET), inferer, _json_transform(), _test_entries(dataset_dir))
    assert 0 < min(expected)
    assert pgd["results"][0]["mean_dice"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert [float(r["dice"]) for r in rows[:2]] == pytest.approx(expected, abs=1e-5)

    # inference.json loads the image alone: its label, resampled onto the preprocessed image, gives the same scores
    derived = _run(bundle, tmp_path / "derived", *data, "--config_file", str(bundle / "configs" / "inference.json"),
                   "--preprocessing#transforms#4#a_min", "0", "--preprocessing#transforms#4#a_max", "255",
                   "--inferer#sw_batch_size", "2")  # fmt: skip
    assert derived["attacks"][0]["results"][0]["mean_dice"] == pytest.approx(np.mean(expected), abs=1e-6)

    # a run killed after the clean budget: the rerun takes it from the sweep file and computes only eps 2
    sweep_file = out / "sweeps" / "robustness_pgd.json"
    stored = json.loads(sweep_file.read_text())
    stored["results"], stored["complete"] = stored["results"][:1], False
    sweep_file.write_text(json.dumps(stored))
    rerun = _run(bundle, out, *data, *MRI_WINDOW, "--validate#inferer#sw_batch_size", "2")
    assert rerun["attacks"][0]["results"][0] == pgd["results"][0]  # its run time included: not run again
    assert rerun["attacks"][0]["results"][1]["mean_dice"] == pytest.approx(pgd["results"][1]["mean_dice"])
    assert json.loads(sweep_file.read_text())["complete"] and _per_image(out) == rows


def test_yaml_bundle_on_its_own_data(tmp_path: Path) -> None:
    bundle = _yaml_bundle(tmp_path / "tiny_template")
    out = tmp_path / "bench"
    table = _run(bundle, out)
    assert table["configs"] == [str(bundle / "configs" / "test.yaml")]
    assert table["data"].startswith("dataset#data of") and table["num_images"] == 2
    assert table["classes"] == ["background", "one", "two"]
    transform = Compose([LoadImaged(BOTH), EnsureChannelFirstd(BOTH), ScaleIntensityd("image")])
    data = [{"image": str(bundle / "test_data" / f"img{s}.nii.gz"), "label": str(bundle / "test_data" / f"lbl{s}.nii.gz")}
            for s in range(2)]  # fmt: skip
    expected = _dice_per_image(bundle, UNet(3, 1, 3, (4, 8), (2,), num_res_units=1), SimpleInferer(), transform, data)
    assert table["attacks"][0]["results"][0]["mean_dice"] == pytest.approx(np.nanmean(expected), abs=1e-6)


ZOO_BUNDLES = [
    ("spleen_ct_segmentation", "train.json", SlidingWindowInferer, ["background", "spleen"],
     {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "norm": "batch"}),
    ("segmentation_template", "test.yaml", SimpleInferer, ["background", "category 1", "category 2", "category 3"],
     {"channels": (8, 16, 32, 64), "strides": (2, 2, 2)}),
]  # fmt: skip


@pytest.mark.parametrize("name, config, inferer, classes, unet", ZOO_BUNDLES)
def test_zoo_bundles_load(name: str, config: str, inferer: type, classes: list[str], unet: dict, tmp_path: Path,
                          dataset_dir: Path) -> None:  # fmt: skip
    """The zoo's bundles as published, with random weights: network, inferer, preprocessing and classes found."""
    bundle = ZOO_DIR / name
    if not bundle.is_dir():
        pytest.skip(f"{bundle} is not here")
    network = UNet(3, 1, len(classes), num_res_units=2, **unet)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    loaded = load_bundle(bundle, tmp_path / "model.pt", dataset_dir=str(dataset_dir), max_images=1)
    assert loaded.config_files == [str(bundle / "configs" / config)] and isinstance(loaded.inferer, inferer)
    assert type(loaded.network) is UNet and loaded.num_classes == len(classes) and loaded.class_names == classes
    assert all(torch.equal(a, b) for a, b in zip(loaded.network.state_dict().values(), network.state_dict().values()))
    batch = next(iter(loaded.dataloader))
    assert batch["image"].shape == batch["label"].shape and batch["image"].ndim == 5
    assert set(batch["label"].unique().tolist()) == {0.0, 1.0} and loaded.image_names == ["case3.nii.gz"]


def test_split_without_labels_falls_back_to_validation(tmp_path: Path, dataset_dir: Path) -> None:
    bundle = _json_bundle(tmp_path / "tiny_spleen")
    loaded = load_bundle(bundle, dataset_dir=str(dataset_dir), split="training_extra")
    assert loaded.split == "validation" and loaded.image_names == ["case2.nii.gz"]


def test_tables_name_the_dataset_as_given(tmp_path: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative --dataset_dir stays relative in the tables (committed result files carry no machine's paths)."""
    bundle = _json_bundle(tmp_path / "tiny_spleen")
    monkeypatch.chdir(dataset_dir.parent)
    loaded = load_bundle(bundle, dataset_dir=dataset_dir.name, max_images=1)
    assert loaded.data == f"the test split of {dataset_dir.name}" and loaded.image_names == ["case3.nii.gz"]


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every wrong command line ends with one line on stderr and exit status 1, before any attack runs."""
    bundle = _json_bundle(tmp_path / "tiny_spleen")
    template = _yaml_bundle(tmp_path / "tiny_template")
    (tmp_path / "not_weights.pt").write_text("{}")
    cases = {
        "not a bundle folder": ["--bundle", str(tmp_path / "nowhere")],
        "no trained weights": ["--bundle", str(bundle), "--ckpt_path", str(tmp_path / "none.pt")],
        "holds no weights": ["--bundle", str(bundle), "--ckpt_path", str(tmp_path / "not_weights.pt")],
        "unknown attacks 'fgsmx'": ["--bundle", str(bundle), "--attacks", "[fgsmx]"],
        "epsilons must be >= 0": ["--bundle", str(bundle), "--epsilons", "[0,-2]"],
        "num_steps must be >= 1": ["--bundle", str(bundle), "--num_steps", "0"],
        "max_images must be >= 1": ["--bundle", str(bundle), "--max_images", "0"],
        "config file": ["--bundle", str(bundle), "--config_file", str(tmp_path / "none.json")],
        "required argument: bundle": [],
        # the template's own data, weights and 3 classes: the bundle loads, then the option is refused
        "unknown option --epsilon:": ["--bundle", str(template), "--epsilon", "4"],
        "unexpected keyword argument 'foo'": ["--bundle", str(template), "--attacks", "[fgsm,pgd]",
                                              "--attack_settings", "{pgd: {foo: 1}}"],
        "sets eps": ["--bundle", str(template), "--attack_settings", "{pgd: {eps: 4}}"],
        "unknown loss 'xyz'": ["--bundle", str(template), "--attacks", "[apgd]", "--attack_settings",
                               "{apgd: {loss: xyz}}"],
        "do not fit the network_def": ["--bundle", str(template), "--num_classes", "2"],
        "inferer of": ["--bundle", str(template), "--inferer#foo", "1"],
    }  # fmt: skip
    (tmp_path / "empty" / "configs").mkdir(parents=True)
    _save_weights({}, tmp_path / "empty")
    cases["describes an evaluation"] = ["--bundle", str(tmp_path / "empty")]
    for message, options in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["robustness", "--output_dir", str(tmp_path / "out"), *options])
        error = capsys.readouterr().err.strip()
        assert exit_info.value.code == 1 and message in error and "\n" not in error, (message, error)
    assert not (tmp_path / "out").exists()  # refused before any attack ran


@pytest.mark.parametrize(
    "options, message",
    [
        (["robustnes"], "Cannot find key: robustnes"),  # fire's own error, its usage text left out
        (["robustness", "--bundle", "TEMPLATE", "--epsilon", "4"], "unknown option --epsilon:"),
        (["robustness", "--bundle", "TEMPLATE", "--num_steps", "-1"], "num_steps must be >= 1"),
    ],
    ids=["unknown-command", "unknown-option", "negative-num_steps"],
)
def test_command_line_errors_in_a_process(options: list[str], message: str, tmp_path: Path) -> None:
    """``python -m monai_ext`` as a user runs it: one line on stderr, no traceback, exit status 1."""
    template = str(_yaml_bundle(tmp_path / "tiny_template"))
    command = [sys.executable, "-m", "monai_ext", *[template if o == "TEMPLATE" else o for o in options]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in run.stderr.splitlines() if " INFO: " not in line and "WARNING" not in line]  # logs
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_has_the_zoos_amp_switch(bundle: str) -> None:
    """``train.json``'s ``amp`` (true by default, as in the zoo): mixed precision for its trainer and evaluator on
    CUDA, a no-op on the CPU; ``--amp False`` turns it off."""
    parser = read_bundle_config(bundle, "train")
    assert parser["amp"] is True
    for engine in ("train#trainer", "validate#evaluator"):
        assert "@amp" in parser[f"{engine}#amp"]
        assert parser.get_parsed_content(f"{engine}#amp") == torch.cuda.is_available()
        assert read_bundle_config(bundle, "train", amp=False).get_parsed_content(f"{engine}#amp") is False


def test_new_attacks_hd95_in_mm_figure_and_resume(tmp_path: Path, dataset_dir: Path) -> None:
    """FGSM, APGD-CE and VAFA through the tiny bundle's sliding window; each image's HD95 is MONAI's
    ``compute_hausdorff_distance`` at the volumes' spacing in mm (that of the bundle's ``Spacingd``), not in voxels;
    VAFA at its own budget in a column of its own; each attack's run time; the figure; a killed VAFA sweep resumes."""
    bundle = _json_bundle(tmp_path / "tiny_spleen")
    out = tmp_path / "bench"
    args = ["robustness", "--bundle", str(bundle), "--output_dir", str(out), "--dataset_dir", str(dataset_dir),
            *MRI_WINDOW, "--validate#inferer#sw_batch_size", "2", "--attacks", "[fgsm,apgd,vafa]",
            "--epsilons", "[0,4]", "--num_steps", "2",
            "--attack_settings", "{vafa: {q_max: 10, ssim_win_size: 5, block_size: 4}}"]  # fmt: skip
    main(args)
    table = json.loads((out / "attack_benchmark.json").read_text())
    fgsm, _, vafa = table["attacks"]
    assert [a["label"] for a in table["attacks"]] == ["FGSM", "APGD-CE-2", "VAFA-2 (q_max 10)"]
    assert [r["epsilon"] for r in fgsm["results"]] == [0.0, 4.0] and fgsm["settings"][0]["name"] == "FGSM"
    assert vafa["level_name"] == "q_max" and [r["q_max"] for r in vafa["results"]] == [0.0, 10.0]
    assert vafa["settings"][0]["block_size"] == [4, 4, 4] and vafa["settings"][0]["spatial_dims"] == 3
    for attack in table["attacks"]:  # every attack through the bundle's sliding window, timed
        sweep = json.loads((out / "sweeps" / f"robustness_{attack['attack']}.json").read_text())
        assert sweep["settings"]["inferer"]["name"] == "SlidingWindowInferer"
        assert attack["seconds"] > 0
        assert attack["seconds"] == pytest.approx(sum(r["seconds"] for r in attack["results"]), abs=0.02)
    assert table["device"] == "cpu"

    # HD95 by hand: MONAI's metric on the predictions through the sliding window, at the spacing in mm
    inferer = SlidingWindowInferer(**{**JSON_WINDOW, "sw_batch_size": 2})
    pairs = _predictions(bundle, UNet(**JSON_NET), inferer, _json_transform(), _test_entries(dataset_dir))
    in_mm = [compute_hausdorff_distance(p, y, percentile=95, spacing=list(JSON_SPACING)).item() for p, y in pairs]
    in_voxels = [compute_hausdorff_distance(p, y, percentile=95).item() for p, y in pairs]
    assert all(np.isfinite(in_mm)) and all(abs(mm - v) > 1 for mm, v in zip(in_mm, in_voxels))
    rows = _per_image(out)
    clean = [r for r in rows if r["attack"] == "FGSM" and r["epsilon"] == "0"]
    assert [float(r["hd95"]) for r in clean] == pytest.approx(in_mm, abs=1e-4)
    for attack in table["attacks"]:  # one clean evaluation, whatever the attack
        assert attack["results"][0]["mean_hd95"] == pytest.approx(np.mean(in_mm), abs=1e-4)
        assert attack["results"][0]["hd95_empty"] == 0 and attack["results"][0]["hd95_images"] == 2
    assert [r["epsilon"] for r in rows if r["attack"].startswith("VAFA")] == ["0", "0", "", ""]

    markdown = (out / "attack_benchmark.md").read_text()
    assert "| attack | eps 0 | eps 4 | own budget | seconds |" in markdown and "Mean HD95" in markdown
    vafa_rows = [line for line in markdown.splitlines() if line.startswith("| VAFA-2 (q_max 10) |")]
    assert len(vafa_rows) == 2 and all(line.split(" | ")[2] == "-" for line in vafa_rows)  # nothing under eps 4

    figure = table["figure"]  # the strongest L-inf attack at the largest budget, on the first image
    assert (out / "attacked_slices.png").stat().st_size > 10_000
    assert figure["image"] == "case3.nii.gz" and figure["epsilon"] == 4.0 and figure["attack"] in ("fgsm", "apgd")
    assert figure["spacing"] == pytest.approx(list(JSON_SPACING))

    # a run killed after VAFA's clean level: the rerun computes only its own budget; the others come from their files
    sweep_file = out / "sweeps" / "robustness_vafa.json"
    stored = json.loads(sweep_file.read_text())
    stored["results"], stored["complete"] = stored["results"][:1], False
    sweep_file.write_text(json.dumps(stored))
    main(args)
    rerun = json.loads((out / "attack_benchmark.json").read_text())
    assert rerun["attacks"][:2] == table["attacks"][:2] and rerun["attacks"][2]["results"][0] == vafa["results"][0]
    assert rerun["attacks"][2]["results"][1]["mean_dice"] == pytest.approx(vafa["results"][1]["mean_dice"], abs=1e-6)
    assert json.loads(sweep_file.read_text())["complete"] and len(_per_image(out)) == len(rows)

    # FGSM takes no steps (num_steps None in its settings): another --num_steps finds them unchanged and resumes from its file
    fgsm_file = out / "sweeps" / "robustness_fgsm.json"
    assert json.loads(fgsm_file.read_text())["settings"]["perturbation"]["kwargs"]["num_steps"] is None
    main([*args[: args.index("--attacks")], "--attacks", "[fgsm]", "--epsilons", "[0,4]", "--num_steps", "3"])
    assert json.loads((out / "attack_benchmark.json").read_text())["attacks"] == [table["attacks"][0]]


def _cube_volume(start: int, size: int, brightness: float) -> tuple[MetaTensor, MetaTensor]:
    """A 16^3 volume at (0.5, 1, 2) mm: a cube of ``brightness`` (else 0.1) from ``start`` on every axis, and the label
    of the cube from voxel 4 (none where ``size`` is 0)."""
    affine = torch.diag(torch.tensor([0.5, 1.0, 2.0, 1.0]))
    image, label = torch.full((1, 16, 16, 16), 0.1), torch.zeros(1, 16, 16, 16)
    image[:, start : start + 6, start : start + 6, start : start + 6] = brightness
    label[:, 4 : 4 + size, 4 : 4 + size, 4 : 4 + size] = 1
    return MetaTensor(image, affine=affine), MetaTensor(label, affine=affine)


def test_empty_predictions_are_counted_not_dropped(tmp_path: Path) -> None:
    """RobustnessSweep's HD95 per image, in mm from each label's affine: an image whose prediction is empty (an
    infinite distance) is counted and left out of the mean; an image without foreground is left out, as for Dice."""
    volumes = [_cube_volume(5, 6, 0.9), _cube_volume(5, 6, 0.1), _cube_volume(5, 0, 0.1)]  # found, missed, no label
    net = torch.nn.Conv3d(1, 2, kernel_size=1)  # a threshold at 0.5: logits (0.5 - x, x - 0.5) * 20
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-20.0, 20.0]).view(2, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([10.0, -10.0]))
    loader = DataLoader([{"image": i, "label": y} for i, y in volumes], batch_size=2)
    sweep = RobustnessSweep(net.eval(), loader, FGSM, [0.0], num_classes=2, output_dir=tmp_path,
                            hausdorff_percentile=95, per_image=True)  # fmt: skip
    (clean,) = sweep.run()["results"]
    image, label = volumes[0]
    found = one_hot((image > 0.5).float()[None], 2), one_hot(label[None], 2)
    expected = compute_hausdorff_distance(*found, percentile=95, spacing=[0.5, 1.0, 2.0]).item()
    assert expected != pytest.approx(compute_hausdorff_distance(*found, percentile=95).item())
    assert clean["mean_hd95"] == pytest.approx(expected) and clean["hd95_empty"] == 1 and clean["hd95_images"] == 1
    assert clean["per_image"]["hd95"][0] == pytest.approx(expected) and clean["per_image"]["hd95"][1:] == [None, None]
    assert clean["per_image"]["hd95_empty"] == [False, True, False] and clean["per_image"]["mean_dice"][2] is None
    table = {"bundle": "b", "data": "d", "num_images": 3, "weights": "w", "configs": ["c"], "classes": None,
             "epsilons": [0.0], "attacks": [{"label": "threshold", "results": [clean], "settings": []}]}  # fmt: skip
    assert f"| threshold | {expected:.2f} (1 empty) |" in markdown_table(table)


def test_per_image_distances_multiclass() -> None:
    """Per image, the mean over the classes of its label; a class of its label with no prediction flags it."""
    distances = torch.tensor([[1.0, 3.0], [2.0, float("nan")], [float("nan"), 4.0], [float("nan"), float("nan")]])
    present = torch.tensor([[True, True], [True, True], [False, True], [False, False]])
    values, empty = per_image_distances(distances, present)
    assert values[:1].tolist() == [2.0] and values[2].item() == 4.0 and values[[1, 3]].isnan().all()
    assert empty.tolist() == [False, True, False, False]
