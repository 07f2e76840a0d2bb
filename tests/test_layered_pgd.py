"""
``LayeredPGD`` (method 1 of the robust training paper) against a naive loop of its definition and against a chain of
plain ``PGD`` attacks, its class order, its forward-pass count, its balls (one per pass by default, eq. 2; one around
the clean images by flag), its passes and its data range.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from monai_ext.attacks import PGD, LayeredPGD

pytestmark = pytest.mark.usefixtures("one_thread")

EPS, ALPHA, STEPS = 0.03, 0.01, 4


def _network(num_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(2, 1, num_classes, channels=(4, 8), strides=(2,), num_res_units=0).eval()


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 16, 16, generator=gen), torch.randint(0, 3, (2, 1, 16, 16), generator=gen)


class Counting(torch.nn.Module):
    """The network, counting its forward passes."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.calls = network, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.network(x)


def _naive(network, images, classes, per_pass_ball=False):
    """The definition, written out: per class, STEPS signed steps down the loss on the full-area target."""
    adv = images.clone()
    for c in classes:
        center = adv.clone() if per_pass_ball else images
        target = torch.full((images.shape[0], *images.shape[2:]), c, dtype=torch.long)
        for _ in range(STEPS):
            x = adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(network(x), target), x)
            adv = adv - ALPHA * grad.sign()
            adv = (center + torch.clamp(adv - center, -EPS, EPS)).clamp(0.0, 1.0)
    return adv


@pytest.mark.parametrize("per_pass_ball", [False, True])
def test_matches_the_naive_definition_in_the_given_order(per_pass_ball: bool) -> None:
    network, (images, labels) = _network(), _batch()
    order = [2, 0, 1]
    attack = LayeredPGD(EPS, ALPHA, STEPS, classes=order, per_pass_ball=per_pass_ball, unit="fraction")
    adv, records = attack.with_record(network, images, labels)
    torch.testing.assert_close(adv, _naive(network, images, order, per_pass_ball), rtol=0, atol=1e-6)
    assert records == [{"classes": order}] * 2
    other = LayeredPGD(EPS, ALPHA, STEPS, classes=[0, 1, 2], per_pass_ball=per_pass_ball, unit="fraction")
    assert not torch.allclose(other(network, images, labels), adv)  # the order matters


def test_per_pass_balls_are_a_chain_of_pgd_attacks() -> None:
    """Each pass with its own ball is a plain targeted PGD from the previous pass's result."""
    network, (images, labels) = _network(), _batch(1)
    layered = LayeredPGD(EPS, ALPHA, STEPS, classes=[1, 2], per_pass_ball=True, unit="fraction")
    chain = images
    for c in (1, 2):
        chain = PGD(EPS, ALPHA, STEPS, random_start=False, target=c, unit="fraction")(network, chain, labels)
    torch.testing.assert_close(layered(network, images, labels), chain, rtol=0, atol=0)


def test_one_pass_per_class_of_the_network() -> None:
    """``classes=None``: every class, in order; one forward pass reads C, then STEPS per class."""
    network = Counting(_network(num_classes=4))
    images, labels = _batch()
    records = LayeredPGD(EPS, ALPHA, STEPS, unit="fraction").with_record(network, images, labels)[1]
    assert records[0]["classes"] == [0, 1, 2, 3]
    assert network.calls == 1 + 4 * STEPS
    network.calls = 0
    LayeredPGD(EPS, ALPHA, STEPS, classes=[3, 1], unit="fraction")(network, images, labels)
    assert network.calls == 2 * STEPS


@pytest.mark.parametrize("seed", range(4))
def test_stays_in_its_ball_and_the_data_range(seed: int) -> None:
    network = _network(seed=seed)
    images, labels = _batch(seed)
    images[:, :, :4] = 0.0  # values on the data range's edges
    images[:, :, -4:] = 1.0
    for per_pass_ball, radius in ((False, EPS), (True, 3 * EPS)):
        attack = LayeredPGD(EPS, 2 * ALPHA, STEPS, per_pass_ball=per_pass_ball, random_start=True, seed=seed,
                            unit="fraction")  # fmt: skip
        adv = attack(network, images, labels)
        assert (adv - images).abs().max() <= radius + 1e-6
        assert adv.min() >= 0.0 and adv.max() <= 1.0
    # with its own ball per pass the chain moves further than one ball allows
    assert (adv - images).abs().max() > EPS + 1e-6


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """The per-image norm of a perturbation ``(B, ...)`` -> ``(B,)``."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_every_pass_keeps_its_own_budget_by_default(seed: int, norm: str) -> None:
    """
    The default (eq. 2, one ball per pass): each pass moves the images by at most ``eps`` from where it started, so no
    later pass can undo more than ``eps`` of an earlier pass's pattern, and the chain stays within ``K * eps``; with
    ``per_pass_ball=False`` (the old reading) every pass lies in the one ``eps`` ball around the clean images.
    """
    network = _network(num_classes=4, seed=seed)
    images, labels = _batch(seed)
    eps, alpha = (EPS, 2 * ALPHA) if norm == "linf" else (0.5, 0.3)
    default = LayeredPGD(eps, alpha, STEPS, norm=norm, unit="fraction")
    assert default.per_pass_ball and default.settings()["per_pass_ball"] is True
    passes = default.passes(network, images, labels)
    assert len(passes) == 4
    torch.testing.assert_close(passes[-1], default(network, images, labels), rtol=0, atol=0)
    starts = [images, *passes[:-1]]
    for start, end in zip(starts, passes, strict=True):
        assert (_norm(end - start, norm) <= eps + 1e-5).all()  # each pass within its own budget
        assert (_norm(end - start, norm) > 0.5 * eps).all()  # and each pass uses it
    assert (_norm(passes[-1] - images, norm) <= 4 * eps + 1e-5).all()  # the chain within K * eps
    for adv in passes:
        assert adv.min() >= 0.0 and adv.max() <= 1.0

    one_ball = LayeredPGD(eps, alpha, STEPS, norm=norm, per_pass_ball=False, unit="fraction")
    for adv in one_ball.passes(network, images, labels):
        assert (_norm(adv - images, norm) <= eps + 1e-5).all()


def test_settings_and_argument_checks() -> None:
    settings = LayeredPGD(2, 0.5, classes=[1, 0]).settings()
    assert settings["num_steps"] == 100 and settings["classes"] == [1, 0] and "target" not in settings
    assert settings["per_pass_ball"] is True
    assert LayeredPGD(2, 0.5, per_pass_ball=False).settings()["per_pass_ball"] is False
    for bad in ([], [-1], [0.5], "01", [True]):
        with pytest.raises(ValueError, match="classes"):
            LayeredPGD(2, 0.5, classes=bad)
    with pytest.raises(ValueError, match="out of range"):
        LayeredPGD(EPS, ALPHA, 1, classes=[5], unit="fraction")(_network(), *_batch())


def test_the_survival_measurement(load_script) -> None:
    """``scripts/layered_pgd_survival.py``: one row per pass, sign agreements in [0, 1], the last pass's chain is the
    result (agreement 1), and with one ball the result lies in the clean ball (``linf <= eps``)."""
    module = load_script("layered_pgd_survival")
    reference = torch.tensor([[1.0, -1.0, 0.0, 2.0]])
    assert module.sign_agreement(reference, torch.tensor([[3.0, 1.0, -1.0, 0.5]])).item() == pytest.approx(2 / 3)
    network, (images, labels) = _network(num_classes=3), _batch()
    for per_pass_ball in (True, False):
        attack = LayeredPGD(EPS, ALPHA, STEPS, per_pass_ball=per_pass_ball, unit="fraction")
        result = module.survival(network, attack, images, labels)
        assert result["classes"] == [0, 1, 2] and [row["target"] for row in result["passes"]] == [0, 1, 2]
        for row in result["passes"]:
            for key in ("own", "chain", "own_vs_last_only"):
                assert 0.0 <= row[key]["mean"] <= 1.0 and row[key]["n"] == 2
        assert result["passes"][-1]["chain"]["mean"] == 1.0
        assert sum(result["predicted"][c]["mean"] for c in "012") == pytest.approx(1.0)
    assert result["linf"]["mean"] <= EPS + 1e-6
