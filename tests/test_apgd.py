"""APGD: checkpoints of the paper, the optimum of a linear network, passes, ball and data range (hypothesis), the
seeded random start, SEA's radius reduction and the tracked loss. Its steps against SEA's own code are in
``test_apgd_sea.py``, the losses in ``test_attack_losses.py``."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_in_ball_and_range, attack_case
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from monai_ext.attacks import APGD, FGSM, BalancedMaskedCE, apgd_checkpoints, to_data_units

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
    loss=st.sampled_from(["ce", "jsd", "masked_ce", "balanced_masked_ce", "dice"]),
    spatial_dims=st.sampled_from([2, 3]),
    out_channels=st.integers(1, 3),
    targeted=st.booleans(),
    num_steps=st.integers(0, 8),
    eps_fraction=st.floats(0.0, 1.0),
    data_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]),
    random_start=st.booleans(),
    radius_reduction=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_stays_in_ball_and_range(
    norm,
    loss,
    spatial_dims,
    out_channels,
    targeted,
    num_steps,
    eps_fraction,
    data_range,
    random_start,
    radius_reduction,
    seed,
):
    torch.manual_seed(seed)
    spatial = (6, 6) if spatial_dims == 2 else (4, 4, 4)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    net = nn.Sequential(conv(1, 3, 3, padding=1), nn.Tanh(), conv(3, out_channels, 1)).eval()
    images, labels = attack_case(2, 1, out_channels, spatial, data_range)
    eps = eps_fraction * (32.0 if norm == "linf" else 256.0)
    target = "inverse" if targeted and "masked" not in loss else None
    attack = APGD(
        eps,
        num_steps,
        norm=norm,
        data_range=data_range,
        loss=loss,
        target=target,
        random_start=random_start,
        radius_reduction=radius_reduction,
    )
    adv = attack(net, images, labels)
    assert_in_ball_and_range(adv, images, to_data_units(eps, "levels", data_range), norm, data_range)


class _Inputs(nn.Module):
    """The network, keeping the input of every forward pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.net(x)


def _case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1)).eval()
    images, labels = attack_case(2, 1, 3, (8, 8), (0.0, 1.0))
    return net, images, labels


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_seeded_and_in_the_ball(norm):
    """The first iterate is a random point of the ball (L-inf: uniform in the box; L2: on the sphere, unless clipped),
    drawn from a generator of the seed's own: the same for the same seed, and PyTorch's global generator untouched."""
    net, images, labels = _case()
    eps = 8.0 if norm == "linf" else 64.0
    runs = []
    for seed in (0, 0, 1):
        recorder = _Inputs(net)
        state = torch.random.get_rng_state()
        adv = APGD(eps, 3, norm=norm, seed=seed)(recorder, images, labels)
        assert torch.equal(torch.random.get_rng_state(), state)
        runs.append((recorder.inputs[0], adv))
    (start, adv), (again, adv_again), (other, _) = runs
    assert torch.equal(start, again) and torch.equal(adv, adv_again) and not torch.equal(start, other)
    assert_in_ball_and_range(start, images, eps / 255, norm, (0.0, 1.0))
    if norm == "linf":
        assert (start - images).abs().max() > 0.9 * eps / 255
    recorder = _Inputs(net)
    APGD(eps, 3, norm=norm, random_start=False)(recorder, images, labels)
    assert torch.equal(recorder.inputs[0], images)


def test_radius_reduction_stages_and_passes():
    """SEA's schedule: 30, 30 and 40 % of the steps at 2, 1.5 and 1 eps; N + 3 forward and N backward passes; the
    first stage starts in the 2 eps ball, each next from the last stage's result projected onto its ball."""
    assert APGD(8, 300, radius_reduction=True).stages() == [(2.0, 90), (1.5, 90), (1.0, 120)]
    assert APGD(8, 10, radius_reduction=True).stages() == [(2.0, 3), (1.5, 3), (1.0, 4)]
    assert APGD(8, 10).stages() == [(1.0, 10)]
    net, images, labels = _case()
    recorder = _Counter(net)
    adv = APGD(8, 10, radius_reduction=True)(recorder, images, labels)
    assert recorder.forwards == 13 and recorder.with_grad == 10
    assert_in_ball_and_range(adv, images, 8 / 255, "linf", (0.0, 1.0))
    inputs = _Inputs(net)
    APGD(8, 10, radius_reduction=True)(inputs, images, labels)
    radii = [float((x - images).abs().max()) * 255 for x in inputs.inputs]
    assert max(radii[:4]) > 8.5 and max(radii[:4]) <= 16 + 1e-4  # stage 1: 3 steps in the 2 eps ball
    assert max(radii[4:8]) > 8.5 and max(radii[4:8]) <= 12 + 1e-4 and max(radii[8:]) <= 8 + 1e-4


def test_track_loss_chooses_the_step_size_rules():
    """The cross-entropy is tracked by default whatever the loss; ``track_loss=None`` tracks the attack's own loss (the
    same run when that is the cross-entropy); the settings name the new options. SEA's runs with either are in
    ``test_apgd_sea.py``."""
    net, images, labels = _case()
    assert APGD(8, loss="masked_ce").track_loss == "ce" and APGD(8, loss="jsd", track_loss=None).track_loss is None
    ce_tracked = APGD(8, 10, loss="ce", random_start=False)(net, images, labels)
    own = APGD(8, 10, loss="ce", track_loss=None, random_start=False)(net, images, labels)
    assert torch.equal(ce_tracked, own)  # the same loss tracked either way
    settings = APGD(8, track_loss="jsd", seed=3, radius_reduction=True).settings()
    assert settings["track_loss"] == "jsd" and settings["seed"] == 3 and settings["radius_reduction"]
    assert settings["random_start"] is True


def test_bad_arguments():
    with pytest.raises(ValueError, match="untargeted"):
        APGD(8, loss="masked_ce", target="inverse")
    with pytest.raises(ValueError, match="untargeted"):
        APGD(8, loss="balanced_masked_ce", target=0)
    with pytest.raises(ValueError, match="untargeted"):
        APGD(8, track_loss="masked_ce", target="inverse")
    with pytest.raises(ValueError, match="untargeted"):
        APGD(8, loss=BalancedMaskedCE([0.5, 0.5]), target=1)
    with pytest.raises(ValueError, match="track_loss"):
        APGD(8, track_loss="hinge")
    with pytest.raises(ValueError, match="seed"):
        APGD(8, seed=-1)
    with pytest.raises(ValueError, match="momentum"):
        APGD(8, momentum=0.0)
