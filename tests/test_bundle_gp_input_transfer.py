"""
The GP input transfer bundle end to end on its synthetic default data at tiny sizes: every stage through
``scripts/gp_study.py`` (ORIG, ORIG converged with early stopping, ORIG fine-tuned, GP training sets at gamma 1 and
0.1, GP_Ts and GP_T translators, the end-to-end control, GP_cG and GP_p2p, nine evaluations, the tables and Fig. 4),
then what each stage must have left: a frozen segmenter behind trained translators, a segmenter that trained on
where the baselines are, GP images no farther from their images than their steps allow, every row paired by image
name with ORIG and the control, a rerun that runs nothing again, and inference through the translator.
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
TINY_GAN = {"generator_features": 4, "generator_blocks": 1, "d_features": 4}
#: the study's arguments: a threshold no Dice can beat stops ORIG converged at its second epoch (patience 1)
STUDY = {
    "overrides": {**tiny(BUNDLE), "batch_size": 4, "early_stop_threshold": 1.0},
    "epochs": 1,
    "max_epochs": 3,
    "patience": 1,
    "gan": TINY_GAN,
    "methods": ["orig", "orig_converged", "orig_finetuned", "control", "gp_t", "gp_ts", "gp_cg", "gp_p2p", "oracle"],
}


@pytest.fixture(scope="module")
def study(trained_bundle, load_script) -> Path:
    root, _ = trained_bundle(BUNDLE)
    load_script("gp_study").study(name=root.name, work_dir=str(root.parent), **STUDY)
    return root


def _state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_stages_keep_the_segmenter_and_train_the_translators(study: Path) -> None:
    models = study / "models"
    orig = _state(models / "model.pt", "segmenter.")
    head = _state(models / "model.pt", "translator.head.")
    assert all(not v.any() for v in head.values())  # ORIG's translator: the identity (zero head)
    for method in ("gp_ts", "gp_t", "control", "gp_cg", "gp_p2p"):
        segmenter = _state(models / method / "model.pt", "segmenter.")
        assert all(torch.equal(segmenter[k], v) for k, v in orig.items()), method  # frozen
        trained = _state(models / method / "model.pt", "translator.head.")
        assert any(v.any() for v in trained.values()), method
    for method in ("orig_converged", "orig_finetuned"):  # the baselines train the segmenter, no translator
        segmenter = _state(models / method / "model.pt", "segmenter.")
        assert any(not torch.equal(segmenter[k], v) for k, v in orig.items()), method
        assert all(not v.any() for v in _state(models / method / "model.pt", "translator.head.").values()), method


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
    data = json.loads((study / "gp_study.json").read_text())
    results = data["results"]
    assert list(results) == STUDY["methods"]  # every row, in the table's order
    names = results["orig"]["names"]
    assert len(names) == len(set(names)) == 8 and all(n.endswith(".png") and "/" not in n for n in names)
    for method, result in results.items():
        assert result["names"] == names, method  # the same images, in the datalist order
        for metric in ("dice", "fpr", "fnr"):
            summary = result["summary"][metric]
            assert summary["n"] == 8 and 0.0 <= summary["mean"] <= 1.0, (method, metric)
            for baseline in {"orig", "control"} - {method}:
                paired = result["paired"][baseline][metric]
                assert paired["n"] == 8 and paired["paired_by"] == "name", (method, baseline, metric)
                assert paired["better"] + paired["worse"] + paired["equal"] == 8
                assert paired["wilcoxon"]["zeros"] == paired["equal"]
                p = paired["wilcoxon"]["p_value"]
                assert (p is None) == (paired["equal"] == 8) and (p is None or 0.0 < p <= 1.0)
        setting = result["setting"]
        assert setting["input_size"] == [64, 64] and setting["segmenter_parameters"] > 0, method
        if method.startswith("gp_") or method == "control":
            assert setting["translator_parameters"] > 0, method
    assert results["gp_cg"]["setting"]["trained_parameters"] > 2 * results["gp_cg"]["setting"]["translator_parameters"]
    converged = results["orig_converged"]["setting"]["epochs"]["orig_converged"]
    assert converged["epochs"] == 2 and converged["stopped_early"] and converged["max_epochs"] == 3
    assert results["orig_finetuned"]["setting"]["epochs"]["orig_finetuned"]["epochs"] == 1  # GP_Ts's epochs
    assert results["oracle"]["gp"]["images"] == 8
    for stage, record in data["stages"].items():  # wall time per stage, the command it ran
        assert record["seconds"] > 0 and record["command"].startswith("python -m monai.bundle run"), stage
        assert data["seconds"][stage] == record["seconds"]
    assert {f"train {r['label']}" for m, r in results.items() if m not in ("orig", "oracle")} <= set(data["stages"])
    assert {f"evaluate {r['label']}" for r in results.values()} <= set(data["stages"])
    table = (study / "gp_study.md").read_text()
    for result in results.values():
        assert table.count(f"| {result['label']} |") == 4, result["label"]  # Table 1 and three paired tables
    assert "2 of at most 3 (stopped early, patience 1" in table
    assert (study / "gp_study_kde.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_runs_nothing_again(study: Path, load_script) -> None:
    """Every stage is finished: a second study run trains, perturbs and evaluates nothing, and keeps the times."""
    before = json.loads((study / "gp_study.json").read_text())
    load_script("gp_study").study(name=study.name, work_dir=str(study.parent), **STUDY)
    after = json.loads((study / "gp_study.json").read_text())
    assert after["stages"] == before["stages"] and after["results"] == before["results"]


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
