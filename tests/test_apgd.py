"""APGD and the SEA losses: checkpoints of the paper, the optimum of a linear network, passes, ball and data range
(hypothesis); the Jensen-Shannon divergence and the masked cross-entropy by hand."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_in_ball_and_range, attack_case
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from monai_ext.attacks import APGD, FGSM, apgd_checkpoints, attack_loss, pixel_losses, to_data_units

torch.set_num_threads(1)


def test_checkpoints_are_the_papers():
    """``w_j = ceil(p_j N)``, ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``."""
    p, checkpoints = [0.0, 0.22], []
    while p[-1] <= 1:
        checkpoints.append(math.ceil(round(p[-1] * 100, 9)))
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    assert apgd_checkpoints(100) == checkpoints == [22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 5, 10, 40, 250):
        points = apgd_checkpoints(n)
        assert points == sorted(set(points)) and points[-1] <= n and points[0] == max(int(0.22 * n), 1)
    assert apgd_checkpoints(0) == []


class _Counter(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.forwards, self.with_grad = net, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        self.with_grad += int(x.requires_grad)
        return self.net(x)


def _threshold_net(out_channels: int = 2) -> nn.Module:
    conv = nn.Conv2d(1, out_channels, 1)
    weights = [20.0] if out_channels == 1 else [-20.0, *[0.0] * (out_channels - 2), 20.0]
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).view(out_channels, 1, 1, 1))
        conv.bias.copy_(-0.5 * conv.weight.flatten())
    return conv.eval()


@pytest.mark.parametrize("loss", ["ce", "jsd", "masked_ce"])
@pytest.mark.parametrize("out_channels", [1, 2])
def test_reaches_the_optimum_of_a_linear_network(loss, out_channels):
    """Per pixel a threshold: the most pixels an L-inf attack can flip are those within eps of it, which FGSM flips;
    APGD flips as many, and makes N + 1 forward passes, N of them with a gradient."""
    gen = torch.Generator().manual_seed(0)
    images = 0.5 + (torch.rand(2, 1, 12, 12, generator=gen) - 0.5) * 0.2
    labels = (images > 0.5).long()
    net = _Counter(_threshold_net(out_channels))
    adv = APGD(eps=8, num_steps=10, loss=loss)(net, images, labels)
    assert net.forwards == 11 and net.with_grad == 10
    reachable = ((images - 0.5).abs() < 8 / 255 - 1e-4).float().mean()
    flipped = ((adv > 0.5).long() != labels).float().mean()
    fgsm = ((FGSM(8)(net.net, images, labels) > 0.5).long() != labels).float().mean()
    assert flipped >= reachable and flipped >= fgsm - 1e-6
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6


@settings(max_examples=20, deadline=None)
@given(
    norm=st.sampled_from(["linf", "l2"]),
    loss=st.sampled_from(["ce", "jsd", "masked_ce", "dice"]),
    spatial_dims=st.sampled_from([2, 3]),
    out_channels=st.integers(1, 3),
    targeted=st.booleans(),
    num_steps=st.integers(0, 8),
    eps_fraction=st.floats(0.0, 1.0),
    data_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]),
    seed=st.integers(0, 2**16),
)
def test_stays_in_ball_and_range(
    norm, loss, spatial_dims, out_channels, targeted, num_steps, eps_fraction, data_range, seed
):
    torch.manual_seed(seed)
    spatial = (6, 6) if spatial_dims == 2 else (4, 4, 4)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    net = nn.Sequential(conv(1, 3, 3, padding=1), nn.Tanh(), conv(3, out_channels, 1)).eval()
    images, labels = attack_case(2, 1, out_channels, spatial, data_range)
    eps = eps_fraction * (32.0 if norm == "linf" else 256.0)
    target = "inverse" if targeted and loss != "masked_ce" else None
    adv = APGD(eps, num_steps, norm=norm, data_range=data_range, loss=loss, target=target)(net, images, labels)
    assert_in_ball_and_range(adv, images, to_data_units(eps, "levels", data_range), norm, data_range)


def test_sea_losses_by_hand():
    """On a 2 x 2 image with softmax (0.75, 0.25) everywhere: labels 0, 1, 0, 1 (the first and third correct)."""
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    labels = torch.tensor([[0, 1], [0, 1]]).view(1, 1, 2, 2)
    # JSD(p, e_y) = (sum_c p_c log(p_c / m_c) + log(1 / m_y)) / 2, m = (p + e_y) / 2
    right = (0.75 * math.log(0.75 / 0.875) + 0.25 * math.log(0.25 / 0.125) + math.log(1 / 0.875)) / 2
    wrong = (0.75 * math.log(0.75 / 0.375) + 0.25 * math.log(0.25 / 0.625) + math.log(1 / 0.625)) / 2
    expected = torch.tensor([[right, wrong], [right, wrong]])
    assert torch.allclose(pixel_losses(logits, labels, "jsd")[0], expected.float(), atol=1e-6)
    assert wrong < math.log(2) and right < wrong
    # masked CE: -log 0.75 on the correct pixels, 0 on the wrong ones; the mean over all four pixels
    assert torch.allclose(pixel_losses(logits, labels, "masked_ce")[0], torch.tensor([[-math.log(0.75), 0.0]] * 2))
    assert float(attack_loss(logits, labels, "masked_ce")) == pytest.approx(-math.log(0.75) / 2)


@pytest.mark.parametrize("loss", ["ce", "dice", "jsd", "masked_ce", lambda logits, labels: logits.mean()])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_per_sample_reduction_averages_to_the_mean(loss, out_channels):
    logits = torch.randn(3, out_channels, 4, 5)
    labels = torch.randint(0, max(out_channels, 2), (3, 1, 4, 5))
    per_sample = attack_loss(logits, labels, loss, reduction="none")
    assert per_sample.shape == (3,)
    assert torch.allclose(per_sample.mean(), attack_loss(logits, labels, loss), atol=1e-6)
    assert torch.allclose(per_sample[1], attack_loss(logits[1:2], labels[1:2], loss), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="untargeted"):
        APGD(8, loss="masked_ce", target="inverse")
    with pytest.raises(ValueError, match="momentum"):
        APGD(8, momentum=0.0)
    with pytest.raises(ValueError, match="reduction"):
        attack_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2), reduction="sum")
