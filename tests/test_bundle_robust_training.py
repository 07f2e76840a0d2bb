"""
The robust training bundle end to end on its synthetic default data, at tiny sizes: every stage through
``scripts/robust_training_study.py`` (model 1, both adversarial datasets, models 2 to 5, the attack evaluation of
each, the table and the plot), what each stage wrote, and a rerun that finds everything done.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import read_bundle_config, run_bundle_configs, tiny

from monai_ext.attacks import PGD, LayeredPGD, SignSelectionFGSM
from monai_ext.data import load_datalist
from monai_ext.engines.utils import AdversarialPrepareBatch

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"epochs": 3, "batch_size": 4, "build_steps": 2, "eval_steps": 2, "check_steps": 2, "pgd_train_steps": 1}
MODELS = ["model 1: clean", "model 2: layered PGD", "model 3: sign selection", "model 4: clean + both",
          "model 5: PGD training"]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, load_script) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("study")
    table = load_script("robust_training_study").study(work_dir=str(work), **tiny("robust_training"), **SMALL)
    return work, table


@pytest.mark.slow
def test_every_stage_on_the_synthetic_data(study: tuple[Path, str]) -> None:
    work, table = study
    for name in ("layered_pgd", "sign_selection"):
        entries = json.loads((work / "adversarial" / name / "dataset.json").read_text())["training"]
        assert len(entries) == 16  # every training image of the synthetic set
        key = "classes" if name == "layered_pgd" else "signs"
        assert all(len(e["adversarial"]["record"][key]) == 4 for e in entries)
    for folder in ("models", *(f"models/{m}" for m in ("layered_pgd", "sign_selection", "combined", "pgd_training"))):
        trainer = torch.load(work / folder / "checkpoint.pt", weights_only=True)["trainer"]
        epochs = 1 if folder.endswith("combined") else 3  # model 4: epochs cut by two thirds
        assert trainer["max_epochs"] == epochs and trainer["iteration"] == epochs * trainer["epoch_length"], folder
    assert trainer["epoch_length"] == 4  # 16 clean images in batches of 4
    combined = torch.load(work / "models/combined/checkpoint.pt", weights_only=True)["trainer"]
    assert combined["epoch_length"] == 12  # clean + both adversarial sets

    results = json.loads((work / "robust_training_study.json").read_text())
    assert list(results) == MODELS
    labels = [item["label"] for item in load_datalist(str(work / "synthetic_data"), "test")]
    preprocessing = read_bundle_config("robust_training", "train", bundle_root=str(work), **tiny("robust_training"))
    preprocessing = preprocessing.get_parsed_content("preprocessing")
    images = [preprocessing({"image": label.replace("masks", "images"), "label": label}) for label in labels]
    background = torch.stack([(item["label"] == 0).float().mean() for item in images]).mean().item()
    for model in MODELS:
        evaluation = results[model]
        assert evaluation["complete"] and list(evaluation["results"]) == ["clean", "pgd_background", "pgd_untargeted"]
        for metrics in evaluation["results"].values():
            assert len(metrics["dice"]) == len(metrics["jaccard"]) == 4
            assert 0 <= metrics["pixel_accuracy"] <= 1 and metrics["loss"] > 0
            assert metrics["background_pixel_accuracy"] == pytest.approx(background, abs=1e-6)
    assert table.count("\n| model ") == 15 and f"{background:.4f}" in table
    assert (work / "robust_training_study.png").stat().st_size > 0


@pytest.mark.slow
def test_a_rerun_finds_every_stage_done(study: tuple[Path, str], load_script, monkeypatch) -> None:
    work, table = study
    module = load_script("robust_training_study")
    monkeypatch.setattr(module, "run", lambda **kwargs: pytest.fail(f"ran again: {kwargs['config_file']}"))
    assert module.study(work_dir=str(work), **tiny("robust_training"), **SMALL) == table


def test_stage_configs_wire_the_paper_and_the_defence() -> None:
    """The attacks each stage builds: method 1, method 2, the evaluation's PGD-100 and PGD-40, model 5's PGD."""
    train = read_bundle_config("robust_training", "train")
    build = train.get_parsed_content("layered_pgd_attack")
    assert isinstance(build, LayeredPGD) and build.num_steps == 100 and build.eps == 0.01 and build.unit == "fraction"
    signs = train.get_parsed_content("sign_selection_attack")
    assert isinstance(signs, SignSelectionFGSM) and signs.search == "exhaustive" and signs.eps == 0.01
    for name in ("layered_pgd", "sign_selection"):  # built from model 1, by its build config or before models 2-4
        assert f"$@{name}_writer.run()" in read_bundle_config("robust_training", ["train", f"build_{name}"])["run"]
    combined = read_bundle_config("robust_training", ["train", "train_combined"])["initialize"]
    assert {"$@layered_pgd_writer.run()", "$@sign_selection_writer.run()"} <= set(combined)
    evaluate = read_bundle_config("robust_training", ["train", "evaluate", "evaluate_attacks"])
    paper = evaluate.get_parsed_content("pgd_background")
    assert (paper.num_steps, paper.target, paper.random_start, paper.eps_data) == (100, 0, False, 0.01)
    check = evaluate.get_parsed_content("pgd_untargeted")
    assert (check.num_steps, check.target, check.random_start) == (40, None, True)
    defence = read_bundle_config("robust_training", ["train", "train_pgd"])
    prepare = defence.get_parsed_content("train#trainer#prepare_batch", instantiate=True)
    assert isinstance(prepare, AdversarialPrepareBatch) and isinstance(prepare.attack, PGD)
    assert prepare.attack.random_start and prepare.attack.eps == 0.01 and prepare.mix == 1.0


def test_colour_images_build_a_tiff_dataset_that_model_2_trains_on(tmp_path: Path) -> None:
    """With ``--in_channels 3`` (RGB data such as DSB 2018's nuclei) the adversarial images keep their three channels:
    written as float TIFF (a NIfTI without a channel axis holds one), read back as ``(3, H, W)``, and model 2 trains."""
    sizes = {**tiny("robust_training"), "in_channels": 3, "epochs": 1, "batch_size": 4, "build_steps": 1}
    run_bundle_configs("robust_training", "train", bundle_root=str(tmp_path), **sizes)
    run_bundle_configs("robust_training", ["train", "train_layered_pgd"], bundle_root=str(tmp_path), **sizes)
    images = sorted((tmp_path / "adversarial" / "layered_pgd" / "image").iterdir())
    assert images and all(path.suffix == ".tif" for path in images)
    parser = read_bundle_config("robust_training", ["train", "train_layered_pgd"], bundle_root=str(tmp_path), **sizes)
    item = parser.get_parsed_content("preprocessing")(parser.get_parsed_content("train#datalist")[0])
    assert tuple(item["image"].shape) == (3, *sizes["spatial_size"])
    assert (tmp_path / "models" / "layered_pgd" / "model.pt").is_file()
