"""
The 3D bundle end to end on its synthetic default volumes, at tiny sizes (32 x 32 x 16 patches, channels 4-8-16): one
epoch of the 3D UNet (``train.json``), its online PGD-trained twin (``train_pgd.json``) and the UNet with NLCE
(``train_nlce.json``) into one bundle root; each evaluated (``evaluate.json``: Dice, Jaccard and HD95 in mm per volume)
and the NLCE model's masks written as NIfTI by ``inference.json``, as the bundle's docs run them. What every bundle
must pass (zoo checks, the plain model's inference, export) is in ``test_bundle_conformance.py``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import read_bundle_config, run_bundle_configs, tiny
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet

from monai_ext.attacks import PGD
from monai_ext.data import file_stem, load_datalist
from monai_ext.engines.utils import AdversarialPrepareBatch
from monai_ext.handlers import PhysicalHausdorffDistance
from monai_ext.networks.blocks import NLCE
from monai_ext.networks.nets import NLCEUNet

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLE = "robust3d"
#: the trained models: the config chain of each, its checkpoint and evaluation folders under the bundle root
MODELS = {
    "unet": (["train"], "models", "eval"),
    "pgd": (["train", "train_pgd"], "models/pgd_training", "eval/pgd_training"),
    "nlce": (["train", "train_nlce"], "models/nlce", "eval/nlce"),
}
SMALL = {**tiny(BUNDLE), "epochs": 1, "batch_size": 4, "pgd_train_steps": 1, "num_codes": 4}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle root: the three models trained (one epoch each) and evaluated on the synthetic volumes."""
    root = tmp_path_factory.mktemp(BUNDLE)
    for chain, _, _ in MODELS.values():
        run_bundle_configs(BUNDLE, chain, bundle_root=str(root), **SMALL)
        run_bundle_configs(BUNDLE, [*chain, "evaluate"], bundle_root=str(root), **SMALL)
    return root


def test_configs_wire_the_study() -> None:
    """Defaults: a 3D UNet on 96 x 96 x 64 patches through a gaussian sliding window; PGD-7 training at 4/255; the
    same UNet with an NLCE; the evaluation's HD95 in mm."""
    train = read_bundle_config(BUNDLE, "train")
    unet = train.get_parsed_content("network_def")
    assert type(unet) is UNet and unet.dimensions == 3 and tuple(unet.channels) == (16, 32, 64, 128)
    inferer = train.get_parsed_content("validate#inferer")
    assert isinstance(inferer, SlidingWindowInferer) and tuple(inferer.roi_size) == (96, 96, 64)

    pgd = read_bundle_config(BUNDLE, ["train", "train_pgd"]).get_parsed_content("train#trainer#prepare_batch")
    assert isinstance(pgd, AdversarialPrepareBatch) and pgd.mix == 1.0 and isinstance(pgd.attack, PGD)
    assert pgd.attack.eps == 4 and pgd.attack.unit == "levels" and pgd.attack.num_steps == 7
    assert pgd.attack.random_start and pgd.attack.alpha == pytest.approx(2.5 * 4 / 7)

    nlce = read_bundle_config(BUNDLE, ["train", "train_nlce"]).get_parsed_content("network_def")
    blocks = [m for m in nlce.modules() if isinstance(m, NLCE)]
    assert isinstance(nlce, NLCEUNet) and len(blocks) == 1 and blocks[0].in_channels == 128

    def size(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert size(nlce) - size(blocks[0]) == size(unet)  # the same UNet, plus the NLCE

    hd95 = read_bundle_config(BUNDLE, ["train", "evaluate"]).get_parsed_content("validate#evaluator#additional_metrics")
    assert isinstance(hd95["hd95"], PhysicalHausdorffDistance) and hd95["hd95"].metric_fn.percentile == 95


def _per_volume(path: Path) -> dict[str, float]:
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "class0", "mean"], rows[0]
    return {row[0]: float(row[-1]) for row in rows[1:]}


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_train_and_evaluate(model: str, root: Path) -> None:
    """Each model: one epoch, its best model saved in its own folder and loadable into its network; its evaluation's
    per-volume Dice, Jaccard and HD95 (mm) of the test volumes, and their means."""
    chain, models, eval_dir = MODELS[model]
    trainer = torch.load(root / models / "checkpoint.pt", weights_only=True)["trainer"]
    assert trainer["max_epochs"] == 1 and trainer["iteration"] == trainer["epoch_length"] == 2  # 6 volumes, batch 4
    network = read_bundle_config(BUNDLE, chain, **SMALL).get_parsed_content("network_def")
    network.load_state_dict(torch.load(root / models / "model.pt", weights_only=True), strict=True)

    test = [item["image"] for item in load_datalist(str(root / "synthetic_data"), "test")]
    assert len(test) == 2 and all(Path(image).name.endswith(".nii.gz") for image in test)
    scores = {name: _per_volume(root / eval_dir / f"{name}_raw.csv") for name in ("mean_dice", "mean_jaccard", "hd95")}
    for name, values in scores.items():
        assert sorted(values) == sorted(test), name
    for image in test:
        dice, jaccard, hd95 = (scores[name][image] for name in ("mean_dice", "mean_jaccard", "hd95"))
        assert 0 <= jaccard <= dice <= 1 and jaccard == pytest.approx(dice / (2 - dice), abs=1e-5)
        assert hd95 >= 0 or (math.isnan(hd95) and dice == 0)  # undefined for an empty prediction
    with open(root / eval_dir / "metrics.csv") as f:
        means = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert means["mean_dice"] == pytest.approx(np.mean(list(scores["mean_dice"].values())), abs=1e-5)


@pytest.mark.slow
def test_nlce_inference_writes_nifti_masks(root: Path, tmp_path: Path) -> None:
    """``inference.json`` + ``train_nlce.json`` with the NLCE model, as the docs run it: one uint8 class-index NIfTI
    mask per test volume, with the volume's shape and affine."""
    ckpt = root / MODELS["nlce"][1] / "model.pt"
    run_bundle_configs(
        BUNDLE,
        ["inference", "train_nlce"],
        bundle_root=str(root),
        ckpt_path=str(ckpt),
        output_dir=str(tmp_path),
        **SMALL,
    )
    test = [Path(item["image"]) for item in load_datalist(str(root / "synthetic_data"), "test")]
    for image in test:
        mask, volume = nib.load(tmp_path / f"{file_stem(image.name)}_seg.nii.gz"), nib.load(image)
        assert mask.shape == volume.shape and np.allclose(mask.affine, volume.affine)
        assert mask.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
