"""RobustnessSweep: clean point equals a hand computation, attacks lower Dice, bad arguments are refused; the study
script's plot, tables and logged commands."""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path

import fire
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.attacks import IterativeFGSM
from monai_ext.engines import RobustnessSweep
from monai_ext.visualize import plot_robustness_panels


def _data(n: int = 6, size: int = 16) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = torch.zeros(1, size, size)
        r, c = torch.randint(2, size // 2, (2,), generator=gen).tolist()
        label[:, r : r + size // 2, c : c + size // 2] = 1
        image = (0.2 + 0.6 * label + 0.05 * torch.rand(1, size, size, generator=gen)).clamp(0, 1)
        items.append({"image": image, "label": label})
    return items


def _network() -> nn.Module:
    """A fixed 1x1-conv 'threshold' network: logits (0.5 - x, x - 0.5) * 20."""
    net = nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[-20.0]]], [[[20.0]]]]))
        net.bias.copy_(torch.tensor([10.0, -10.0]))
    return net.eval()


def _dice(pred: torch.Tensor, label: torch.Tensor) -> float:
    inter = (pred * label).sum()
    return float(2 * inter / (pred.sum() + label.sum()))


def test_clean_point_and_attack_effect(tmp_path) -> None:
    data = _data()
    net = _network()
    sweep = RobustnessSweep(
        net,
        DataLoader(data, batch_size=4),
        functools.partial(IterativeFGSM, target="inverse"),
        epsilons=[0, 96],
        num_classes=2,
        output_dir=tmp_path,
        label="threshold",
    )
    summary = sweep.run()
    expected = sum(_dice((net(d["image"][None]).argmax(1, keepdim=True) == 1).float(), d["label"][None]) for d in data)
    clean, attacked = summary["results"]
    assert clean["epsilon"] == 0.0 and abs(clean["mean_dice"] - expected / len(data)) < 1e-6
    assert attacked["mean_dice"] < clean["mean_dice"] - 0.5  # 96 levels (0.38) flip every 0.2 / 0.8 threshold decision
    assert attacked["mean_jaccard"] <= attacked["mean_dice"]
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["results"] == summary["results"] and saved["num_images"] == len(data)
    assert saved["attacks"][0]["name"] == "IterativeFGSM" and saved["attacks"][0]["eps"] == 96.0
    assert (tmp_path / "robustness.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "kwargs, match",
    [({"epsilons": [-1.0]}, "epsilon"), ({"epsilons": []}, "epsilons"), ({"num_classes": 1}, "num_classes")],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"epsilons": [0.0], "num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        RobustnessSweep(_network(), DataLoader(_data(), batch_size=2), IterativeFGSM, **args)


def _summary(label: str, dice: list[float]) -> dict:
    return {
        "label": label,
        "num_images": 3,
        "results": [{"epsilon": e, "mean_dice": d, "mean_jaccard": d / (2 - d)} for e, d in zip((0, 8, 32), dice)],
    }


def test_robustness_panels_plot_one_figure(tmp_path) -> None:
    panels = {
        "I-FGSM": [_summary("a", [0.9, 0.8, 0.1]), _summary("b", [0.9, 0.5, 0.0])],
        "PGD": [_summary("a", [0.9, 0.7, 0.2])],
    }
    path = plot_robustness_panels(panels, tmp_path / "figs" / "curves.png")
    width, height = Image.open(path).size
    assert width > 1.8 * height  # two panels side by side
    with pytest.raises(ValueError, match="at least one panel"):
        plot_robustness_panels({}, tmp_path / "empty.png")


def test_study_table_lists_every_epsilon(load_script) -> None:
    study = load_script("nlcen_robustness_study")
    table = study._table({"a": _summary("NLCEN", [0.97, 0.9, 0.5])}, "title")
    assert "| network | eps 0 | eps 8 | eps 32 |" in table
    assert "| NLCEN (3 images) | 0.970 / 0.942 | 0.900 / 0.818 | 0.500 / 0.333 |" in table


def test_study_commands_read_back_as_the_same_overrides(load_script) -> None:
    """The logged command, split by a shell and parsed by python-fire (as ``monai.bundle run`` does), gives the
    overrides back."""
    study = load_script("nlcen_robustness_study")
    overrides = {
        "dataset_dir": "../shared/datasets/jsrt_scr_224",
        "network_def#use_nlce": False,
        "network_def": study.VARIANTS["unet"][1]["network_def"],
        "max_images": None,
        "epsilons": [0, 0.5, 32],
        "label": "NLCEN w/o CE",
        "note": "it's $HOME",
    }
    configs = ["a/robustness.json", "a/robustness_pgd.json"]
    words = shlex.split(study._command(configs, overrides))
    assert words[:5] == ["python", "-m", "monai.bundle", "run", "--config_file"]
    parsed = fire.Fire(lambda **kwargs: kwargs, command=words[6:])
    assert parsed == overrides
    assert fire.Fire(lambda config_file: config_file, command=words[4:6]) == configs


def test_study_reads_clean_scores_of_evaluate_json(tmp_path, load_script) -> None:
    study = load_script("nlcen_robustness_study")
    (tmp_path / "metrics.csv").write_text("mean_dice,0.97\nmean_jaccard,0.94\n")
    (tmp_path / "mean_dice_raw.csv").write_text("filename,class0,mean\na.png,0.96,0.96\nb.png,0.98,0.98\n")
    scores = study._clean_scores(tmp_path)
    assert scores == {"mean_dice": 0.97, "mean_jaccard": 0.94, "num_images": 2}
    table = study._clean_table({"nlcen": {"label": "NLCEN", **scores}})
    assert "| NLCEN (2 images) | 0.9700 / 0.9400 |" in table


def test_study_trains_each_seed_in_its_own_folder(tmp_path, load_script, monkeypatch) -> None:
    """``--seeds`` and ``--spatial_size`` reach ``train.json``'s overrides; empty budgets train and score only."""
    study = load_script("nlcen_robustness_study")
    calls = []

    def fake_run(config, overrides):  # stands for monai.bundle run: writes what train.json / evaluate.json would
        calls.append((config[-1].rsplit("/", 1)[-1], overrides))
        folder = Path(overrides["ckpt_dir"] if "ckpt_dir" in overrides else overrides["eval_dir"])
        folder.mkdir(parents=True)
        if "ckpt_dir" in overrides:
            (folder / "model.pt").write_bytes(b"")
        else:
            (folder / "metrics.csv").write_text("mean_dice,0.97\nmean_jaccard,0.94\n")
            (folder / "mean_dice_raw.csv").write_text("filename,class0,mean\na.png,0.96,0.96\nb.png,0.98,0.98\n")

    def fake_benchmark(options):  # stands for python -m monai_ext robustness: one ensemble sweep, Dice by seed
        calls.append(("ensemble", options))
        dice = 0.5 if "seed2" in options["output_dir"] else 0.3
        results = [{"epsilon": 0.0, "mean_dice": 0.9, "mean_jaccard": 0.8}]
        results.append({"epsilon": 4.0, "mean_dice": dice, "mean_jaccard": dice / 2, "wins": {"APGD (ce)": 2}})
        Path(options["output_dir"]).mkdir(parents=True)
        attack = {"attack": "ensemble", "label": "ensemble-5", "num_images": 2, "results": results}
        (Path(options["output_dir"]) / "attack_benchmark.json").write_text(json.dumps({"attacks": [attack]}))

    monkeypatch.setattr(study, "_run", fake_run)
    monkeypatch.setattr(study, "_run_benchmark", fake_benchmark)
    table = study.study("data", variants=["nlcen", "unet_seed1"], seeds=[0, 2], work_dir=str(tmp_path), epochs=1,
                        epsilons=[], pgd_epsilons=[], spatial_size=[128, 128], ensemble_epsilons=[0, 4])  # fmt: skip
    trains = [o for name, o in calls if name == "train.json"]
    assert [o["seed"] for o in trains] == [0, 2, 1] and all(o["spatial_size"] == [128, 128] for o in trains)
    assert [Path(o["ckpt_dir"]).parent.name for o in trains] == ["nlcen", "nlcen_seed2", "unet_seed1"]
    assert [name for name, _ in calls] == ["train.json", "evaluate.json", "ensemble"] * 3  # no other sweep
    assert calls[2][1]["epsilons"] == [0, 4] and calls[2][1]["spatial_size"] == [128, 128]
    assert "| NLCEN, seed 2 (2 images) |" in table and "I-FGSM" not in table
    assert "| NLCEN | 2 | 0.900 +- 0.000 | 0.400 +- 0.141 |" in table  # two seeds: (0.3 + 0.5) / 2, sd 0.2 / sqrt 2
    assert "| U-Net, seed 1 | 4 | APGD (ce) 2 |" in table
