"""APGD against SEA's own code: on a tiny fixed network and batch, the losses (cross-entropy, masked cross-entropy,
Jensen-Shannon divergence) and the pixel accuracy of every iterate, and of the image returned, as SEA's ``apgd_train``
and ``apgd_largereps`` (github.com/nmndeep/Robust-Segmentation, ``semseg/attacker.py``) produced them, reproduced to
1e-5. The fixture holds numbers only; ``tests/data/README.md`` says how it was made."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from monai_ext.attacks import APGD, LOSSES, BalancedMaskedCE

FIXTURE = torch.load(Path(__file__).parent / "data" / "sea_apgd.pt", weights_only=True)
CASES = {case["name"]: case for case in FIXTURE["cases"]}


def _net() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1))
    net.load_state_dict(FIXTURE["state_dict"])
    return net.eval().requires_grad_(False)


def _metrics(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image the columns of the fixture: cross-entropy, masked cross-entropy, JSD, pixel accuracy; ``(B, 4)``."""
    losses = [LOSSES[name](logits, labels) for name in ("ce", "masked_ce", "jsd")]
    accuracy = (logits.argmax(1, keepdim=True) == labels).flatten(1).float().mean(1)
    return torch.stack([*losses, accuracy], dim=1)


class _Recorder(nn.Module):
    """The network, recording the metrics of the iterate of every forward pass."""

    def __init__(self, net: nn.Module, labels: torch.Tensor) -> None:
        super().__init__()
        self.net, self.labels, self.steps = net, labels, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.steps.append(_metrics(out.detach(), self.labels))
        return out


def test_fixture_columns():
    assert FIXTURE["columns"] == ["ce", "masked_ce", "jsd", "pixel_accuracy"]
    assert len(CASES) == len(FIXTURE["cases"])


@pytest.mark.parametrize("name", list(CASES))
def test_apgd_reproduces_sea(name):
    case, net = CASES[name], _net()
    images, labels = FIXTURE["images"], FIXTURE["labels"].long().unsqueeze(1)
    loss = case["loss"] if case["class_weights"] is None else BalancedMaskedCE(case["class_weights"])
    attack = APGD(
        case["eps"],
        case["num_steps"],
        norm=case["norm"],
        unit="fraction",
        loss=loss,
        track_loss=case["track_loss"],
        random_start=case["random_start"],
        seed=case["seed"],
        radius_reduction=case["radius_reduction"],
    )
    recorder = _Recorder(net, labels)
    adv = attack(recorder, images, labels)
    torch.testing.assert_close(torch.stack(recorder.steps), case["steps"], atol=1e-5, rtol=0)
    torch.testing.assert_close(_metrics(net(adv), labels), case["final"], atol=1e-5, rtol=0)
