"""
GP_cG, the Cycle-GAN translator of deep input transfer: the least-squares losses and one trainer iteration against
hand-computed values, who updates what, the discriminators learning, the cycle loss falling and a generator reaching
the perturbed images' range on a toy problem, the ResNet generator's linear output, the image pool and the
learning-rate schedule; the paired pix2pix-style variant (GP_p2p) against hand-computed values; then
``train_cyclegan.json`` / ``train_pix2pix.json`` and their evaluations on the bundle's synthetic data.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import BUNDLES_DIR, run_bundle_configs, tiny
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.engines import (
    CYCLE_GAN_LOSS_TERMS,
    PIX2PIX_LOSS_TERMS,
    CycleGANTrainer,
    ImagePool,
    Pix2PixTrainer,
    linear_decay,
    loss_terms,
)
from monai_ext.losses import LeastSquaresDiscriminatorLoss, LeastSquaresGeneratorLoss
from monai_ext.networks.nets import ResNetGenerator
from monai_ext.utils import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLE = "gp_input_transfer"
#: the toy problem's perturbation: B = A + OFFSET with A in [0, 1], so B lies in [-3, -2], outside [-1, 1] and [0, 1]
OFFSET = -3.0
#: generator and discriminator sizes of the bundle smoke runs
TINY_GAN = {"generator_features": 4, "generator_blocks": 1, "d_features": 4}


def _loader(num: int = 8, batch_size: int = 2, size: int = 32) -> DataLoader:
    """Pairs ``{"image": a, "label": a + OFFSET}`` of random ``(1, size, size)`` images ``a`` in ``[0, 1]``."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, size, size, generator=g) for _ in range(num)]
    return DataLoader([{"image": a, "label": a + OFFSET} for a in images], batch_size=batch_size)


def _conv(weight: float, bias: float) -> nn.Conv2d:
    """``x -> weight * x + bias``, a 1x1 convolution of one channel."""
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(weight)
        conv.bias.fill_(bias)
    return conv


def _trainer(nets: dict[str, nn.Module], lr: float = 2e-3, **kwargs) -> CycleGANTrainer:
    generators = [*nets["network"].parameters(), *nets["generator_ba"].parameters()]
    discriminators = [*nets["discriminator_a"].parameters(), *nets["discriminator_b"].parameters()]
    kwargs.setdefault("train_data_loader", _loader())
    return CycleGANTrainer(
        device="cpu",
        max_epochs=kwargs.pop("max_epochs", 1),
        epoch_length=kwargs.pop("epoch_length", 1),
        optimizer=torch.optim.Adam(generators, lr=lr, betas=(0.5, 0.999)),
        d_optimizer=torch.optim.Adam(discriminators, lr=2e-3, betas=(0.5, 0.999)),
        **nets,
        **kwargs,
    )


def _toy_nets(residual: bool = False, seed: int = 0) -> dict[str, nn.Module]:
    """Tiny ResNet generators and MONAI PatchGAN discriminators (instance norm, as Cycle-GAN's)."""
    torch.manual_seed(seed)
    return {
        "network": ResNetGenerator(2, 1, features=4, num_blocks=1, residual=residual),
        "generator_ba": ResNetGenerator(2, 1, features=4, num_blocks=1, residual=residual),
        "discriminator_a": PatchDiscriminator(2, 4, 1, norm="INSTANCE", bias=True),
        "discriminator_b": PatchDiscriminator(2, 4, 1, norm="INSTANCE", bias=True),
    }


def _history(trainer: CycleGANTrainer | Pix2PixTrainer) -> list[dict[str, float]]:
    """Each iteration's loss terms and the mean of its translation ``fake_b``, filled as ``trainer`` runs."""
    history: list[dict[str, float]] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: CycleGANTrainer | Pix2PixTrainer) -> None:
        output = engine.state.output
        terms = loss_terms(output, (*CYCLE_GAN_LOSS_TERMS, *PIX2PIX_LOSS_TERMS))
        history.append({**terms, "fake_b": float(output[0]["pred"].mean())})

    return history


# --- losses -------------------------------------------------------------------------------------------------------


def test_least_squares_losses_by_hand() -> None:
    real, fake = torch.tensor([[0.5, 2.0]]), torch.tensor([[0.0, -1.0]])
    # D: 0.5 * (((0.5 - 1)^2 + (2 - 1)^2) / 2 + (0^2 + (-1)^2) / 2) = 0.5 * (0.625 + 0.5)
    assert float(LeastSquaresDiscriminatorLoss()(real, fake)) == pytest.approx(0.5625)
    assert float(LeastSquaresDiscriminatorLoss("sum")(real, fake)) == pytest.approx(0.5 * (1.25 + 1.0))
    # G: ((0 - 1)^2 + (-1 - 1)^2) / 2
    assert float(LeastSquaresGeneratorLoss()(fake)) == pytest.approx(2.5)
    assert float(LeastSquaresGeneratorLoss("sum")(fake)) == pytest.approx(5.0)
    monai_ls = PatchAdversarialLoss(criterion="least_squares", no_activation_leastsq=True)
    assert torch.allclose(LeastSquaresGeneratorLoss()(fake), monai_ls(fake, True, False))
    with pytest.raises(ValueError, match="reduction"):
        LeastSquaresGeneratorLoss("none")


def test_one_iteration_matches_hand_computed_losses() -> None:
    """Linear 1x1 generators and discriminators: every loss term of Zhu et al.'s objective, written out."""
    nets = {
        "network": _conv(2.0, 0.5),
        "generator_ba": _conv(0.5, -0.1),
        "discriminator_a": _conv(1.5, 0.2),
        "discriminator_b": _conv(-1.0, 0.3),
    }
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g) - 1.0
    trainer = _trainer(nets, train_data_loader=[{"image": a, "label": b}])
    trainer.run()

    def g_ab(x):
        return 2.0 * x + 0.5

    def g_ba(x):
        return 0.5 * x - 0.1

    def d_a(x):
        return 1.5 * x + 0.2

    def d_b(x):
        return -1.0 * x + 0.3

    fake_b, fake_a = g_ab(a), g_ba(b)
    adv = ((d_b(fake_b) - 1) ** 2).mean() + ((d_a(fake_a) - 1) ** 2).mean()
    cycle = (g_ba(fake_b) - a).abs().mean() + (g_ab(fake_a) - b).abs().mean()
    identity = (g_ab(b) - b).abs().mean() + (g_ba(a) - a).abs().mean()
    d_loss = 0.5 * (((d_a(a) - 1) ** 2).mean() + (d_a(fake_a) ** 2).mean()) + 0.5 * (
        ((d_b(b) - 1) ** 2).mean() + (d_b(fake_b) ** 2).mean()
    )
    expected = {
        "loss": adv + 10.0 * cycle + 0.5 * 10.0 * identity,
        "adv_loss": adv,
        "cycle_loss": cycle,
        "identity_loss": identity,
        "d_loss": d_loss,
        "d_real": (d_a(a).mean() + d_b(b).mean()) / 2,
        "d_fake": (d_a(fake_a).mean() + d_b(fake_b).mean()) / 2,
    }
    got = loss_terms(trainer.state.output, CYCLE_GAN_LOSS_TERMS)
    assert got == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)
    torch.testing.assert_close(trainer.state.output[0]["pred"], fake_b[0])


# --- trainer: who updates what ------------------------------------------------------------------------------------


@pytest.mark.parametrize("disabled", ["optimizer", "d_optimizer"])
def test_each_pair_moves_only_through_its_own_optimizer(disabled: str) -> None:
    nets = _toy_nets(residual=False)
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    trainer = _trainer(nets)
    getattr(trainer, disabled).step = lambda *args, **kwargs: None
    d_grads: list = []
    trainer.add_event_handler(
        IterationEvents.BACKWARD_COMPLETED,
        lambda e: d_grads.extend(p.grad for n in ("discriminator_a", "discriminator_b") for p in nets[n].parameters()),
    )
    trainer.run()
    moved = {n: any(not torch.equal(b, p) for b, p in zip(before[n], net.parameters())) for n, net in nets.items()}
    generators_move, discriminators_move = disabled == "d_optimizer", disabled == "optimizer"
    assert moved == {
        "network": generators_move,
        "generator_ba": generators_move,
        "discriminator_a": discriminators_move,
        "discriminator_b": discriminators_move,
    }
    assert all(grad is None for grad in d_grads)  # the generators' loss gives the frozen discriminators no gradient
    assert all(p.requires_grad for n in ("discriminator_a", "discriminator_b") for p in nets[n].parameters())


def test_optimizers_must_hold_their_own_networks() -> None:
    nets = _toy_nets()
    everything = [p for net in nets.values() for p in net.parameters()]
    with pytest.raises(ValueError, match="optimizer holds"):
        CycleGANTrainer("cpu", 1, _loader(), **nets, optimizer=torch.optim.Adam(everything),
                        d_optimizer=torch.optim.Adam(nets["discriminator_a"].parameters()))  # fmt: skip
    with pytest.raises(ValueError, match="lambda_cycle"):
        _trainer(nets, lambda_cycle=-1.0)


# --- trainer: learning on a toy problem ---------------------------------------------------------------------------


def test_discriminators_learn() -> None:
    """Generators held fixed: both discriminators' least-squares loss falls, and they score real above generated."""
    trainer = _trainer(_toy_nets(residual=True), max_epochs=10)
    trainer.optimizer.step = lambda *args, **kwargs: None
    history = _history(trainer)
    trainer.run()
    first, last = history[0], history[-1]
    assert last["d_loss"] < 0.5 * first["d_loss"], [round(h["d_loss"], 3) for h in history]
    assert last["d_real"] > last["d_fake"] + 0.5


@pytest.fixture(scope="module")
def toy_run() -> list[dict[str, float]]:
    """Cycle-GAN's full objective, 30 iterations on ``A -> A + OFFSET`` (generators Zhu's: not residual)."""
    trainer = _trainer(_toy_nets(residual=False), lr=1e-2, max_epochs=30)
    history = _history(trainer)
    trainer.run()
    return history


def test_cycle_loss_falls(toy_run: list[dict[str, float]]) -> None:
    first = toy_run[0]["cycle_loss"]
    assert first > 1.0 and max(h["cycle_loss"] for h in toy_run[-5:]) < 0.3 * first


def test_generator_reaches_the_perturbed_range(toy_run: list[dict[str, float]]) -> None:
    """The translation of images in [0, 1] ends in B's range [-3, -2]: nothing squashes it to [-1, 1] or [0, 1]."""
    assert toy_run[0]["fake_b"] > -0.5
    assert all(OFFSET < h["fake_b"] < OFFSET + 1 for h in toy_run[-5:]), [round(h["fake_b"], 2) for h in toy_run]


# --- parts --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_resnet_generator_is_linear_at_the_end(spatial_dims: int) -> None:
    """The untrained residual generator is the identity, even far outside [-1, 1]; the head is a bare convolution."""
    net = ResNetGenerator(spatial_dims, 2, features=4, num_blocks=2, residual=True).eval()
    x = torch.randn(1, 2, *[8] * spatial_dims) * 100
    with torch.no_grad():
        torch.testing.assert_close(net(x), x)
    plain = ResNetGenerator(spatial_dims, 2, out_channels=3, features=4, num_blocks=1)
    assert plain(x).shape == (1, 3, *[8] * spatial_dims)
    assert isinstance(list(plain.modules())[-1], (nn.Conv2d, nn.Conv3d))
    with pytest.raises(ValueError, match="divisible by 4"):
        plain(torch.zeros(1, 2, *[6] * spatial_dims))
    with pytest.raises(ValueError, match="residual"):
        ResNetGenerator(spatial_dims, 2, out_channels=3, residual=True)


def test_resnet_generator_size_and_script() -> None:
    """Zhu et al.'s 9-block generator of 64 maps (11.37M parameters for one channel); TorchScript compiles it."""
    assert sum(p.numel() for p in ResNetGenerator(2, 1).parameters()) == 11_365_633
    net = ResNetGenerator(2, 1, features=4, num_blocks=1, residual=True).eval()
    x = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_image_pool() -> None:
    """Images pass while the pool fills; then some are swapped for earlier images, and the pool keeps its size."""
    torch.manual_seed(0)
    pool = ImagePool(3)
    first = torch.arange(2.0).view(2, 1, 1, 1)
    torch.testing.assert_close(pool(first), first)
    later = torch.arange(2.0, 12.0).view(10, 1, 1, 1)
    out = pool(later)
    swapped = out != later
    assert len(pool.images) == 3 and swapped.any() and not swapped.all()
    assert (out[swapped] < later[swapped]).all()  # what a swap returns is an earlier image
    torch.testing.assert_close(ImagePool(0)(later), later)


def test_linear_decay() -> None:
    factor = linear_decay(epochs=6, decay_epochs=3)
    assert [factor(e) for e in range(7)] == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25, 0.0])
    assert linear_decay(2, 0)(1) == 1.0
    with pytest.raises(ValueError, match="decay_epochs"):
        linear_decay(2, 3)


def test_load_weights_with_prefix(tmp_path) -> None:
    whole = nn.Sequential()
    whole.add_module("translator", nn.Conv2d(1, 1, 3))
    whole.add_module("segmenter", nn.Conv2d(1, 2, 1))
    path = tmp_path / "model.pt"
    torch.save(whole.state_dict(), path)
    part = load_weights(nn.Conv2d(1, 2, 1), path, prefix="segmenter.")
    torch.testing.assert_close(part.weight, whole.segmenter.weight)
    with pytest.raises(RuntimeError):
        load_weights(nn.Conv2d(1, 2, 1), path)  # without the prefix the names do not match


# --- the paired pix2pix-style variant -----------------------------------------------------------------------------


def test_pix2pix_iteration_matches_hand_computed_losses() -> None:
    """Linear 1x1 generator and conditional discriminator: Isola et al.'s objective (least squares), written out."""
    gen, disc = _conv(2.0, 0.5), nn.Conv2d(2, 1, 1)
    with torch.no_grad():
        disc.weight.copy_(torch.tensor([1.5, -1.0]).view(1, 2, 1, 1))
        disc.bias.fill_(0.3)
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g) - 1.0
    trainer = Pix2PixTrainer("cpu", 1, [{"image": a, "label": b}], gen, disc, lambda_l1=100.0,
                             optimizer=torch.optim.SGD(gen.parameters(), lr=0.1),
                             d_optimizer=torch.optim.SGD(disc.parameters(), lr=0.1))  # fmt: skip
    trainer.run()

    def d_before(x, y):
        return 1.5 * x - 1.0 * y + 0.3

    def d_after(x, y):  # D has taken its step before G's: the generator's adversarial term uses the updated D
        return float(disc.weight[0, 0]) * x + float(disc.weight[0, 1]) * y + float(disc.bias)

    fake_b = 2.0 * a + 0.5
    d_real, d_fake = d_before(a, b), d_before(a, fake_b)
    adv, l1 = ((d_after(a, fake_b) - 1) ** 2).mean(), (fake_b - b).abs().mean()
    expected = {
        "loss": adv + 100.0 * l1,
        "adv_loss": adv,
        "l1_loss": l1,
        "d_loss": 0.5 * (((d_real - 1) ** 2).mean() + (d_fake**2).mean()),
        "d_real": d_real.mean(),
        "d_fake": d_fake.mean(),
    }
    got = loss_terms(trainer.state.output, PIX2PIX_LOSS_TERMS)
    assert got == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)


def test_pix2pix_generator_learns_the_offset() -> None:
    """The paired L1 term pulls the translation of [0, 1] images into B's range [-3, -2] within a few steps."""
    torch.manual_seed(0)
    gen = ResNetGenerator(2, 1, features=4, num_blocks=1, residual=True)
    disc = PatchDiscriminator(2, 4, 2, norm="INSTANCE", bias=True)
    trainer = Pix2PixTrainer("cpu", 20, _loader(), gen, disc, epoch_length=1,
                             optimizer=torch.optim.Adam(gen.parameters(), lr=2e-2, betas=(0.5, 0.999)),
                             d_optimizer=torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.999)))  # fmt: skip
    history = _history(trainer)
    trainer.run()
    assert history[-1]["l1_loss"] < 0.2 * history[0]["l1_loss"]
    assert OFFSET < history[-1]["fake_b"] < OFFSET + 1, [round(h["fake_b"], 2) for h in history]


# --- the bundle ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "train, evaluate", [("train_cyclegan", "evaluate_gp_cg"), ("train_pix2pix", "evaluate_gp_p2p")]
)
def test_evaluate_config_builds_the_trained_translator(train: str, evaluate: str) -> None:
    """The evaluation restates its training config's generator (it does not read that config): the same network and
    the same size options."""
    configs = BUNDLES_DIR / BUNDLE / "configs"
    trained = json.loads((configs / f"{train}.json").read_text())
    evaluated = json.loads((configs / f"{evaluate}.json").read_text())
    for key in ("method", "ckpt_dir", "network_def#translator", "generator_features", "generator_blocks",
                "generator_residual"):  # fmt: skip
        assert evaluated[key] == trained[key], key


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, train, extra",
    [
        ("gp_cg", "train_cyclegan", {"generator_ba", "discriminator_a", "discriminator_b"}),
        ("gp_p2p", "train_pix2pix", {"discriminator"}),
    ],
)
def test_bundle_trains_and_evaluates(trained_bundle, method: str, train: str, extra: set[str]) -> None:
    """One iteration on the GP set of the synthetic data, then the translator scored through translate-then-segment."""
    root, _ = trained_bundle(BUNDLE)
    sizes = {**tiny(BUNDLE), **TINY_GAN}
    run_bundle_configs(BUNDLE, ["train", train], bundle_root=str(root), epochs=1, batch_size=4, overwrite=True,
                       **{"train#trainer#epoch_length": 1}, **sizes)  # fmt: skip
    orig = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    trained = torch.load(root / "models" / method / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(trained[k], v) for k, v in orig.items() if k.startswith("segmenter."))  # frozen segmenter
    names = {k.removeprefix("translator.") for k in trained if k.startswith("translator.")}
    assert names == set(ResNetGenerator(2, 1, features=4, num_blocks=1, residual=True).state_dict())
    assert trained["translator.head.1.conv.weight"].any()  # the zero-initialised head has moved
    checkpoint = torch.load(root / "models" / method / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert {*extra, "d_optimizer", "d_lr_scheduler"} <= set(checkpoint)

    run_bundle_configs(BUNDLE, ["train", "evaluate", f"evaluate_{method}"], bundle_root=str(root), **sizes)
    result = json.loads((root / "eval" / method / "per_image.json").read_text())
    assert result["label"] == method and len(result["values"]["dice"]) == 8
