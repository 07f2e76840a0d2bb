"""RobustnessSweep: clean point equals a hand computation, attacks lower Dice, bad arguments are refused."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.attacks import IterativeFGSM
from monai_ext.engines import RobustnessSweep


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
