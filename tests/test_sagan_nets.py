"""Tests of monai_ext.networks.nets.sagan: generator and discriminator shapes, conditioning, spectral norm."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from monai_ext.losses import HingeDiscriminatorLoss, HingeGeneratorLoss
from monai_ext.networks.blocks import SelfAttention
from monai_ext.networks.nets import SAGANDiscriminator, SAGANGenerator
from monai_ext.networks.utils import fold_parametrizations

SMALL = (4, 8, 8, 16)  # channels of 4 levels: spatial sizes divisible by 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster than two, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("spatial_dims, spatial", [(2, (16, 24)), (3, (8, 16, 8)), (1, (32,))])
@pytest.mark.parametrize("training", [True, False])
def test_generator_shapes(spatial_dims, spatial, training):
    torch.manual_seed(0)
    net = SAGANGenerator(spatial_dims, 2, 3, channels=SMALL, attention_levels=(1, 2)).train(training)
    out = net(torch.randn(2, 2, *spatial))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, *spatial)  # one logits tensor in both modes


def test_generator_layout():
    net = SAGANGenerator(2, 1, 4, channels=(4, 8, 16, 32, 64), attention_levels=(2,))
    assert isinstance(net.encoder_attention[2], SelfAttention) and isinstance(net.decoder_attention[2], SelfAttention)
    assert sum(isinstance(m, SelfAttention) for m in net.modules()) == 2  # encoder and decoder, level 2 only
    assert net.divisor == 16
    deepest = SAGANGenerator(2, 1, 4, channels=(4, 8, 16), attention_levels=(2,))  # no decoder stage at the bottom
    assert sum(isinstance(m, SelfAttention) for m in deepest.modules()) == 1
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(m, "weight") for m in convs)
    plain = SAGANGenerator(2, 1, 4, channels=(4, 8), attention_levels=(), spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


def test_generator_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = SAGANGenerator(2, 1, 3, channels=SMALL, attention_levels=(0, 1)).train()
    for m in net.modules():
        if isinstance(m, SelfAttention):
            with torch.no_grad():
                m.gamma.fill_(0.5)  # at gamma = 0 only gamma itself would get a gradient
    x = torch.randn(2, 1, 16, 16)
    (net(x) * torch.randn(2, 3, 16, 16)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("spatial_dims, spatial", [(2, (16, 32)), (3, (8, 8, 16))])
def test_discriminator_shapes_and_conditioning(spatial_dims, spatial):
    torch.manual_seed(0)
    net = SAGANDiscriminator(spatial_dims, 1, 3, channels=SMALL, attention_levels=(0,)).eval()
    with torch.no_grad():
        net.attention[0].gamma.fill_(0.5)
    image = torch.randn(2, 1, *spatial)
    seg = torch.softmax(torch.randn(2, 3, *spatial), 1)
    score = net(image, seg)
    assert score.shape == (2, 1)
    assert not torch.allclose(score, net(image, seg.roll(1, dims=1)))  # the score depends on the segmentation
    assert not torch.allclose(score, net(image + 1.0, seg))  # ... and on the image
    torch.testing.assert_close(net(image[:1], seg[:1]), score[:1])  # per-sample (no batch statistics)


def test_discriminator_layout():
    net = SAGANDiscriminator(2, 1, 4, channels=(4, 8, 16, 32))
    assert [b.resample for b in net.blocks] == ["down", "down", "down", "none"]
    assert not net.blocks[0].preactivation and all(b.preactivation for b in net.blocks[1:])
    assert isinstance(net.attention[1], SelfAttention) and sum(isinstance(a, SelfAttention) for a in net.attention) == 1
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert parametrize.is_parametrized(net.linear, "weight")
    assert SAGANDiscriminator(2, 1, 4).divisor == 32  # default: SAGAN's five downsamplings


def _sn_modules(*nets: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for net in nets for n, m in net.named_modules() if parametrize.is_parametrized(m, "weight")]


def test_spectral_norm_holds_after_training_steps():
    """
    sigma_max of every normalised weight (as an (out, -1) matrix, by torch.linalg) stays near 1 through adversarial
    training steps (SAGAN's learning rates), although the raw weights are scaled far from it. One power iteration per
    forward underestimates sigma_max a little while the weights move, hence the tolerance.
    """
    torch.manual_seed(0)
    gen = SAGANGenerator(2, 1, 3, channels=SMALL, attention_levels=(1,))
    disc = SAGANDiscriminator(2, 1, 3, channels=SMALL, attention_levels=(1,))
    with torch.no_grad():
        for _, m in _sn_modules(gen, disc):
            m.parametrizations.weight.original.mul_(5.0)  # raw sigma_max 2 to 4
    g_opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.0, 0.9))
    d_opt = torch.optim.Adam(disc.parameters(), lr=4e-4, betas=(0.0, 0.9))
    d_loss_fn, g_loss_fn = HingeDiscriminatorLoss(), HingeGeneratorLoss()
    raw_before = {n: m.parametrizations.weight.original.detach().clone() for n, m in _sn_modules(gen, disc)}
    image = torch.rand(4, 1, 16, 16)
    real = torch.nn.functional.one_hot(torch.randint(0, 3, (4, 16, 16)), 3).permute(0, 3, 1, 2).float()
    for _ in range(10):
        fake = torch.softmax(gen(image), 1)
        d_opt.zero_grad()
        d_loss_fn(disc(image, real), disc(image, fake.detach())).backward()
        d_opt.step()
        g_opt.zero_grad()
        g_loss_fn(disc(image, fake)).backward()
        g_opt.step()
    gen.eval(), disc.eval()  # eval: reading a weight uses the current u, v without another power iteration
    for name, m in _sn_modules(gen, disc):
        raw = m.parametrizations.weight.original.detach()
        assert not torch.equal(raw, raw_before[name]), f"{name} was not trained"
        raw_sigma = float(torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2))
        sigma = float(torch.linalg.matrix_norm(m.weight.detach().reshape(raw.shape[0], -1), ord=2))
        assert raw_sigma > 1.5, f"{name}: raw sigma_max {raw_sigma:.4f}"
        assert abs(sigma - 1.0) < 0.1, f"{name}: sigma_max {sigma:.4f}"


@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda: SAGANGenerator(4, 1, 2), "spatial_dims"),
        (lambda: SAGANGenerator(2, 0, 2), "in_channels"),
        (lambda: SAGANGenerator(2, 1, 0), "out_channels"),
        (lambda: SAGANGenerator(2, 1, 2, channels=(8,)), "channels"),
        (lambda: SAGANGenerator(2, 1, 2, channels=(8, 0)), "channels"),
        (lambda: SAGANGenerator(2, 1, 2, channels=(4, 8), attention_levels=(2,)), "attention_levels"),
        (lambda: SAGANGenerator(2, 1, 2, channels=(4, 8), attention_levels=(1, 1)), "attention_levels"),
        (lambda: SAGANDiscriminator(2, 1, 0), "num_classes"),
        (lambda: SAGANDiscriminator(2, 1, 2, channels=()), "channels"),
        (lambda: SAGANDiscriminator(2, 1, 2, channels=(4, 8), attention_levels=(-1,)), "attention_levels"),
    ],
)
def test_bad_arguments(factory, name):
    with pytest.raises(ValueError, match=name):
        factory()


def test_bad_inputs():
    gen = SAGANGenerator(2, 1, 3, channels=SMALL)
    with pytest.raises(ValueError, match="divisible by 8"):
        gen(torch.randn(1, 1, 16, 20))
    with pytest.raises(ValueError, match="in_channels=1"):
        gen(torch.randn(1, 3, 16, 16))
    disc = SAGANDiscriminator(2, 1, 3, channels=SMALL)
    image = torch.randn(2, 1, 16, 16)
    with pytest.raises(ValueError, match="num_classes=3"):
        disc(image, torch.randn(2, 2, 16, 16))
    with pytest.raises(ValueError, match="num_classes=3"):
        disc(image, torch.randn(2, 3, 16, 8))
    with pytest.raises(ValueError, match="in_channels=1"):
        disc(torch.randn(2, 2, 16, 16), torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by 8"):
        disc(torch.randn(2, 1, 12, 16), torch.randn(2, 3, 12, 16))


def test_torchscript_folds_spectral_norm_and_leaves_the_network_as_it_is():
    """``torch.jit.script`` compiles a copy with folded spectral norms: equal eval outputs, the original unchanged."""
    torch.manual_seed(0)
    gen = SAGANGenerator(2, 1, 3, channels=SMALL, attention_levels=(1,))
    disc = SAGANDiscriminator(2, 1, 3, channels=SMALL)
    image, seg = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 16, 16)
    gen(image), disc(image, seg)  # a training-mode pass: the power iteration moves u and v away from their init
    gen.eval(), disc.eval()
    parametrized = sum(parametrize.is_parametrized(m) for m in gen.modules())
    scripted_gen, scripted_disc = torch.jit.script(gen), torch.jit.script(disc)
    with torch.no_grad():
        for size in (16, 24):  # any size divisible by 8
            x = torch.rand(2, 1, size, size)
            torch.testing.assert_close(scripted_gen(x), gen(x), rtol=0.0, atol=0.0)
        torch.testing.assert_close(scripted_disc(image, seg), disc(image, seg), rtol=0.0, atol=0.0)
    assert sum(parametrize.is_parametrized(m) for m in gen.modules()) == parametrized > 0
    assert not any(parametrize.is_parametrized(m) for m in fold_parametrizations(gen).modules())
    gen.train()(image).sum().backward()  # the original still trains through its parametrisations
    with pytest.raises(torch.jit.Error, match="divisible by 8"):  # the input checks compile with the forward
        scripted_gen(torch.rand(1, 1, 12, 16))
