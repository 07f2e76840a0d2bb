"""
The GP input transfer bundle end to end on its synthetic default data at tiny sizes: every stage through
``scripts/gp_study.py`` (ORIG, GP training sets at gamma 1 and 0.1, GP_Ts and GP_T translators, the end-to-end
control, five evaluations, Table 1 and Fig. 4), then what each stage must have left: a frozen segmenter, trained
translators, GP images no farther from their images than their steps allow, and inference through the translator.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import read_bundle_config, run_bundle_configs, tiny

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

BUNDLE = "gp_input_transfer"


@pytest.fixture(scope="module")
def study(trained_bundle, load_script) -> Path:
    root, _ = trained_bundle(BUNDLE)
    sizes = {**tiny(BUNDLE), "batch_size": 4}
    load_script("gp_study").study(name=root.name, work_dir=str(root.parent), overrides=sizes, epochs=1)
    return root


def _state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_stages_keep_the_segmenter_and_train_the_translators(study: Path) -> None:
    models = study / "models"
    orig = _state(models / "model.pt", "segmenter.")
    head = _state(models / "model.pt", "translator.head.")
    assert all(not v.any() for v in head.values())  # ORIG's translator: the identity (zero head)
    for method in ("gp_ts", "gp_t", "control"):
        segmenter = _state(models / method / "model.pt", "segmenter.")
        assert all(torch.equal(segmenter[k], v) for k, v in orig.items()), method  # frozen
        trained = _state(models / method / "model.pt", "translator.head.")
        assert any(v.any() for v in trained.values()), method


def test_gp_training_sets(study: Path) -> None:
    for gamma in (1.0, 0.1):
        folder = study / "gp_data" / f"gamma_{gamma}"
        content = json.loads((folder / "dataset.json").read_text())
        assert content["complete"] == {"training": True} and len(content["training"]) == 16
        assert content["settings"]["perturbation"]["gamma"] == gamma
        for entry in content["training"]:
            image = nib.load(folder / entry["image"]).get_fdata(dtype=np.float32)
            perturbed = nib.load(folder / entry["perturbed"]).get_fdata(dtype=np.float32)
            steps = entry["perturbed_gp_iterations"]
            assert 0 <= steps <= tiny(BUNDLE)["gp_num_steps"]
            assert np.abs(perturbed - image).max() <= gamma * steps * (1 + 1e-5) + 1e-6  # each step: at most gamma


def test_table_plot_and_evaluations(study: Path) -> None:
    results = json.loads((study / "gp_study.json").read_text())["results"]
    assert list(results) == ["orig", "gp_t", "gp_ts", "control", "oracle"]
    for method, result in results.items():
        for metric in ("dice", "fpr", "fnr"):
            summary = result["summary"][metric]
            assert summary["n"] == 8 and 0.0 <= summary["mean"] <= 1.0, (method, metric)
    assert results["oracle"]["gp"]["images"] == 8
    table = (study / "gp_study.md").read_text()
    assert table.count("\n| ") == 6 and "| GP_Ts |" in table
    assert (study / "gp_study_kde.png").read_bytes()[:4] == b"\x89PNG"


def test_inference_runs_the_translator(study: Path) -> None:
    """inference.json with the GP_Ts model: the masks come from segmenter(translator(x))."""
    ckpt = study / "models" / "gp_ts" / "model.pt"
    out = study / "predictions_gp_ts"
    run_bundle_configs(BUNDLE, "inference", bundle_root=str(study), ckpt_path=str(ckpt), output_dir=str(out),
                       **tiny(BUNDLE))  # fmt: skip
    assert len(list(out.glob("*_seg.png"))) == 8
    parser = read_bundle_config(BUNDLE, "inference", bundle_root=str(study), **tiny(BUNDLE))
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(network(x), network.segmenter(network.translator(x)))
        assert not torch.equal(network.translator(x), x)
