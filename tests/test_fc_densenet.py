"""FC-DenseNet (the Tiramisu) as an image-to-image network, the translator-then-segmenter network, and the SSIM + L1
loss of deep input transfer."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet
from skimage.metrics import structural_similarity
from torch import nn

from monai_ext.losses import SSIML1Loss
from monai_ext.networks.nets import FC_DENSENET_CONFIGS, FCDenseNet, TranslateThenSegment

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**kwargs) -> FCDenseNet:
    return FCDenseNet(**{"num_layers": 56, "growth_rate": 3, "init_features": 4, **kwargs})


@pytest.mark.parametrize("num_layers", sorted(FC_DENSENET_CONFIGS))
def test_layer_counts_are_the_papers(num_layers: int) -> None:
    """Counting convolutions and transposed convolutions gives the name: 56, 67 or 103 layers (Jegou et al.)."""
    net = FCDenseNet(2, 1, num_layers=num_layers, growth_rate=2, init_features=4)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == num_layers


def test_shapes_channels_and_linear_head() -> None:
    net = _tiny(spatial_dims=2, in_channels=3).eval()
    x = torch.rand(2, 3, 64, 32)
    assert net.out_channels == 3 and net(x).shape == (2, 3, 64, 32)
    assert _tiny(in_channels=3, out_channels=5)(x).shape == (2, 5, 64, 32)
    assert _tiny(spatial_dims=3, in_channels=1).eval()(torch.rand(1, 1, 32, 32, 64)).shape == (1, 1, 32, 32, 64)
    features = {}
    net.head.register_forward_hook(lambda m, i, o: features.update(x=i[0]))
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out, nn.functional.conv2d(features["x"], net.head.weight, net.head.bias))
        net.head.bias.fill_(-5.0)  # nothing after the head: any value comes out, negative ones too
        assert net(x).max() < 0
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.rand(1, 3, 48, 32))
    with pytest.raises(ValueError, match="num_layers must be one of"):
        FCDenseNet(num_layers=100)
    with pytest.raises(ValueError, match="residual needs out_channels == in_channels"):
        FCDenseNet(in_channels=1, out_channels=2, residual=True)


def test_residual_starts_as_identity_and_scripts() -> None:
    net = _tiny(in_channels=2, residual=True).eval()
    x = torch.randn(2, 2, 32, 64)
    assert torch.equal(net(x), x)  # the head starts at zero: the untrained translator changes nothing
    nn.init.normal_(net.head.weight)
    scripted = torch.jit.script(net)
    for shape in ((2, 2, 32, 64), (1, 2, 64, 64)):
        y = torch.randn(shape)
        torch.testing.assert_close(scripted(y), net(y))
        assert not torch.equal(net(y), y)


def test_translate_then_segment() -> None:
    translator = _tiny(in_channels=1, residual=True)
    segmenter = UNet(2, 1, 2, (4, 8), (2,))
    net = TranslateThenSegment(translator, segmenter).eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(net(x), segmenter(x))  # identity translator: the segmenter alone
    nn.init.normal_(translator.head.weight, std=0.1)
    torch.testing.assert_close(net(x), segmenter(translator(x)))
    assert {k.split(".")[0] for k in net.state_dict()} == {"translator", "segmenter"}
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))
    with pytest.raises(TypeError, match="translator must be a torch.nn.Module"):
        TranslateThenSegment(lambda x: x, segmenter)


def test_ssim_l1_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 24, 24, generator=gen), torch.rand(2, 1, 24, 24, generator=gen) * 1.5 - 0.2
    assert SSIML1Loss()(a, a).abs().item() < 1e-6  # identical images: zero
    l1 = (a - b).abs().mean()
    torch.testing.assert_close(SSIML1Loss(lambda_ssim=0.0)(a, b), l1)  # GP_T: L1 alone
    # SSIM by scikit-image (Gaussian window, sigma 1.5, population statistics, as Wang et al.)
    ssim = [
        structural_similarity(a[i, 0].numpy(), b[i, 0].numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for i in range(2)
    ]  # fmt: skip
    expected = 0.5 * (1 - sum(ssim) / 2) + 2.0 * l1.item()
    assert SSIML1Loss(lambda_l1=2.0, lambda_ssim=0.5)(a, b).item() == pytest.approx(expected, abs=2e-3)
    x = a.clone().requires_grad_(True)
    SSIML1Loss()(x, b).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert SSIML1Loss(spatial_dims=3)(torch.rand(1, 1, 12, 12, 12), torch.rand(1, 1, 12, 12, 12)) > 0
    with pytest.raises(ValueError, match="both 0"):
        SSIML1Loss(lambda_l1=0, lambda_ssim=0)
