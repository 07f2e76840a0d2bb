"""shared_sweep: the same adversarial images and Dice as one run per budget, in fewer forward + backward passes
(the NLCEN paper's 18 budgets: 69, at most the 86 of trunk + branches, instead of 327); fallbacks; RobustnessSweep."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.attacks import (
    PGD,
    CosPGD,
    IterativeFGSM,
    LayeredPGD,
    SegPGD,
    SharedTrajectories,
    dice_score,
    kurakin_num_steps,
    shared_sweep,
    shares_trajectory,
)
from monai_ext.engines import RobustnessSweep

torch.set_num_threads(1)

NLCEN_BUDGETS = [0.5, 1, *range(2, 33, 2)]  # the NLCEN paper's 18 budgets, in levels


class Counter(nn.Module):
    """Counts the forward passes of the wrapped network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def _threshold_net() -> Counter:
    """A 1x1 conv, logits 20 (x - 0.5) * (-1, 1): every pixel's gradient keeps its sign, so every budget leaves the
    trunk as early as it can (at step floor(eps) + 1), the case of the paper's count."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-20.0, 20.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([10.0, -10.0]))
    return Counter(conv.eval())


def _batch(n: int = 3, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(n, 1, size, size, generator=gen) > 0.5).float()
    images = 0.2 + 0.6 * labels + 0.05 * torch.rand(n, 1, size, size, generator=gen)
    return images, labels


def _per_budget(factory, epsilons, net, images, labels) -> dict[float, torch.Tensor]:
    return {float(eps): factory(eps)(net, images, labels) for eps in epsilons}


def test_nlcen_budgets_equal_per_budget_runs_in_fewer_passes():
    net, (images, labels) = _threshold_net(), _batch()
    factory = functools.partial(IterativeFGSM, target="inverse")
    reference = _per_budget(factory, NLCEN_BUDGETS, net, images, labels)
    steps = [kurakin_num_steps(eps) for eps in NLCEN_BUDGETS]
    assert net.calls == sum(steps) == 327
    net.calls = 0
    shared = shared_sweep(factory, NLCEN_BUDGETS, net, images, labels)
    # trunk (32 steps) + per budget its T - floor(eps) steps after it: 86; the first step of a branch takes the
    # trunk's gradient at the branch point, one pass less per budget that leaves the trunk before the last: 69
    trunk_and_branches = 32 + sum(t - min(t, math.floor(eps)) for eps, t in zip(NLCEN_BUDGETS, steps))
    assert trunk_and_branches == 86
    assert net.calls == 86 - 17 == 69
    assert list(shared) == [float(eps) for eps in NLCEN_BUDGETS]
    for eps in NLCEN_BUDGETS:
        assert (shared[eps] - reference[eps]).abs().max() <= 1e-6
        with torch.no_grad():
            assert torch.equal(dice_score(net(shared[eps]), labels), dice_score(net(reference[eps]), labels))


def _tanh_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 1)).eval()


@pytest.mark.parametrize(
    "factory, shares",
    [
        (functools.partial(PGD, alpha=1, num_steps=6, random_start=False), True),
        (functools.partial(SegPGD, alpha=1, num_steps=6, random_start=False), True),
        (functools.partial(CosPGD, alpha=1, num_steps=6, random_start=False, target="inverse"), True),
        (functools.partial(PGD, alpha=1, num_steps=6, random_start=True, seed=3), False),
        (functools.partial(PGD, alpha=8, num_steps=6, norm="l2", random_start=False), False),
        (functools.partial(LayeredPGD, alpha=1, num_steps=2, random_start=False), False),
    ],
)
def test_attacks_share_or_fall_back_with_the_same_results(factory, shares):
    net = Counter(_tanh_net())
    gen = torch.Generator().manual_seed(2)
    images, labels = torch.rand(2, 1, 8, 8, generator=gen), torch.randint(0, 3, (2, 1, 8, 8), generator=gen)
    epsilons = [4, 1, 2, 0, 3]  # any order
    assert shares_trajectory(factory(4)) is shares
    reference = _per_budget(factory, epsilons, net, images, labels)
    per_budget_calls, net.calls = net.calls, 0
    shared = shared_sweep(factory, epsilons, net, images, labels)
    assert all(torch.equal(shared[float(eps)], reference[float(eps)]) for eps in epsilons)
    assert (net.calls < per_budget_calls) if shares else (net.calls == per_budget_calls)


def test_budgets_in_any_order_stay_exact():
    net, (images, labels) = _threshold_net(), _batch()
    factory = functools.partial(IterativeFGSM, target="inverse")
    sharing = SharedTrajectories(factory, [8, 2, 4])
    for eps in (8, 2, 4, 2):  # a smaller budget after a larger one starts its own trunk
        assert torch.equal(sharing(eps)(net, images, labels), factory(eps)(net, images, labels))
    other = images.flip(-1)  # another batch: its own trunk
    assert torch.equal(sharing(4)(net, other, labels), factory(4)(net, other, labels))


def test_robustness_sweep_shares_and_gives_the_per_budget_results(tmp_path):
    images, labels = _batch(4)
    data = [{"image": x, "label": y} for x, y in zip(images, labels)]
    factory = functools.partial(IterativeFGSM, target="inverse")
    epsilons = [0, 1, 2, 4, 8]
    net = _threshold_net()
    sweep = RobustnessSweep(net, DataLoader(data, batch_size=2), factory, epsilons, num_classes=2, output_dir=tmp_path)
    results = sweep.run()["results"]
    attacked_calls = net.calls - len(epsilons) * 2  # minus the evaluator's own forward pass per batch and budget
    # per batch, the largest budget's 10 steps: every smaller budget branches off its trunk with at most one
    # step of its own, whose gradient the trunk has already taken
    assert attacked_calls == 2 * kurakin_num_steps(8) == 20 < 2 * sum(kurakin_num_steps(e) for e in epsilons)
    for result, eps in zip(results, epsilons):
        adv = torch.cat([factory(eps)(net.net, images[i : i + 2], labels[i : i + 2]) for i in (0, 2)])
        with torch.no_grad():
            expected = dice_score(net.net(adv), labels).mean()
        assert result["mean_dice"] == pytest.approx(float(expected), abs=1e-6)
