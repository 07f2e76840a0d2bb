"""Tests of monai_ext.networks.blocks.sagan: self-attention and spectral-norm residual blocks vs naive references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.utils import parametrize

from monai_ext.networks.blocks import SelfAttention, SNResidualBlock, sn_conv

SHAPES = {1: (2, 16, 9), 2: (2, 16, 5, 7), 3: (2, 16, 3, 4, 5)}  # (B, C, *spatial)
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster than two, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _conv1x1(x: torch.Tensor, conv: torch.nn.Module) -> torch.Tensor:
    """1x1 conv as a matmul over channels: (B, C, N) -> (B, C', N), with the (normalised) weight the module uses."""
    w = conv.weight.reshape(conv.weight.shape[0], -1)
    y = torch.einsum("oc,bcn->bon", w, x)
    return y if conv.bias is None else y + conv.bias[None, :, None]


def naive_self_attention(block: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """SAGAN eq. (1)-(3) with the explicit N x N attention map beta."""
    xf = x.flatten(2)  # (B, C, N)
    f, g, h = (_conv1x1(xf, m) for m in (block.key, block.query, block.value))  # (B, C', N)
    s = torch.einsum("bci,bcj->bij", f, g)  # s_ij = f(x_i)^T g(x_j)
    beta = torch.exp(s - s.max(1, keepdim=True).values)
    beta = beta / beta.sum(1, keepdim=True)  # softmax over i: beta[b, i, j] = beta_{j,i}
    o = _conv1x1(torch.einsum("bij,bci->bcj", beta, h), block.out)
    return (block.gamma * o + xf).reshape(x.shape)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("training", [False, True])
def test_gamma_zero_is_identity(spatial_dims, training):
    torch.manual_seed(0)
    block = SelfAttention(spatial_dims, 16).train(training)
    assert float(block.gamma.detach()) == 0.0  # the paper's initialisation
    x = torch.randn(*SHAPES[spatial_dims])
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_self_attention_matches_naive(spatial_dims, training, dtype):
    torch.manual_seed(0)
    block = SelfAttention(spatial_dims, 16, inter_channels=4).to(dtype).train(training)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = torch.randn(*SHAPES[spatial_dims], dtype=dtype)
    with parametrize.cached():  # one spectral-norm weight for the block and the reference (train mode updates u)
        out = block(x)
        expected = naive_self_attention(block, x)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, x, atol=1e-3)  # the attention term is not negligible


def test_self_attention_without_spectral_norm_matches_naive():
    torch.manual_seed(0)
    block = SelfAttention(2, 16, spectral_norm=False).double().train()
    with torch.no_grad():
        block.gamma.fill_(-1.3)
    x = torch.randn(*SHAPES[2], dtype=torch.float64)
    torch.testing.assert_close(block(x), naive_self_attention(block, x), atol=1e-10, rtol=1e-10)
    assert not parametrize.is_parametrized(block.query)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_self_attention_uses_fused_kernel(spatial_dims):
    """No N x N matrix: the attention must run in a fused SDPA kernel, forward and backward."""
    block = SelfAttention(spatial_dims, 16).train()
    with torch.no_grad():
        block.gamma.fill_(0.5)
    x = torch.randn(*SHAPES[spatial_dims], requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        block(x).sum().backward()  # raises "No available kernel" if only the math fallback would work
    assert x.grad is not None


def test_gamma_learns_from_zero():
    """At gamma = 0 the block is the identity, but gamma gets a gradient, so the attention can switch on."""
    torch.manual_seed(0)
    block = SelfAttention(2, 16).train()
    x = torch.randn(*SHAPES[2])
    (block(x) * torch.randn(*SHAPES[2])).sum().backward()
    assert block.gamma.grad is not None and float(block.gamma.grad.abs()) > 0


def test_defaults_and_parametrisation():
    block = SelfAttention(2, 64)
    assert block.inter_channels == 8
    assert SelfAttention(2, 4).inter_channels == 1
    assert block.key.bias is None and block.value.bias is None
    for conv in (block.query, block.key, block.value, block.out):
        assert parametrize.is_parametrized(conv, "weight")


def naive_residual(block: SNResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """The block written out with functional ops (norm=None, ReLU), eval mode."""
    d = block.spatial_dims
    conv = CONV[d]

    def c(m: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        return conv(t, m.weight, m.bias, padding=m.weight.shape[-1] // 2)

    up = (lambda t: F.interpolate(t, scale_factor=2, mode="nearest")) if block.resample == "up" else (lambda t: t)
    down = (lambda t: POOL[d](t, 2)) if block.resample == "down" else (lambda t: t)
    pre = torch.relu(x) if block.preactivation else x
    h = down(c(block.conv2, torch.relu(c(block.conv1, up(pre)))))
    if isinstance(block.shortcut, torch.nn.Identity):
        return h + x
    skip = down(c(block.shortcut, up(x))) if block.preactivation else c(block.shortcut, down(up(x)))
    return h + skip


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("resample", ["none", "down", "up"])
@pytest.mark.parametrize("preactivation", [True, False])
def test_residual_block_matches_naive(spatial_dims, resample, preactivation):
    torch.manual_seed(0)
    shape = {1: (2, 3, 8), 2: (2, 3, 4, 6), 3: (1, 3, 4, 2, 4)}[spatial_dims]
    block = SNResidualBlock(spatial_dims, 3, 5, resample=resample, preactivation=preactivation).double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    out = block(x)
    factor = {"none": 1.0, "down": 0.5, "up": 2.0}[resample]
    assert out.shape == (shape[0], 5, *(int(s * factor) for s in shape[2:]))
    torch.testing.assert_close(out, naive_residual(block, x), atol=1e-10, rtol=1e-10)


def test_residual_block_identity_shortcut_and_norm():
    block = SNResidualBlock(2, 6, 6, norm="batch")
    assert isinstance(block.shortcut, torch.nn.Identity)
    assert isinstance(block.pre[0], torch.nn.BatchNorm2d) and isinstance(block.mid[0], torch.nn.BatchNorm2d)
    assert not isinstance(SNResidualBlock(2, 6, 6, resample="down").shortcut, torch.nn.Identity)
    assert isinstance(SNResidualBlock(2, 3, 6, preactivation=False).pre, torch.nn.Identity)
    x = torch.randn(2, 6, 8, 8)
    assert block(x).shape == x.shape
    convs = [block.conv1, block.conv2]
    assert all(parametrize.is_parametrized(m, "weight") for m in convs)
    plain = SNResidualBlock(2, 6, 8, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())


def test_sn_conv_starts_normalised():
    """
    torch's spectral_norm runs 15 power iterations at creation: sigma_max of the weight in use is near 1 at once
    (the power-iteration estimate is a lower bound of sigma_max, so the normalised value may exceed 1 slightly).
    """
    for seed in range(3):
        torch.manual_seed(seed)
        conv = sn_conv(2, 8, 16, kernel_size=3).eval()  # eval: reading the weight runs no further iteration
        w = conv.weight.detach().reshape(16, -1)
        raw = conv.parametrizations.weight.original.detach().reshape(16, -1)
        assert abs(float(torch.linalg.matrix_norm(w, ord=2)) - 1.0) < 0.05
        assert abs(float(torch.linalg.matrix_norm(raw, ord=2)) - 1.0) > 0.1  # the raw weight is not normalised


@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda: SelfAttention(4, 8), "spatial_dims"),
        (lambda: SelfAttention(2, 0), "in_channels"),
        (lambda: SelfAttention(2, 8, inter_channels=0), "inter_channels"),
        (lambda: SNResidualBlock(0, 4, 4), "spatial_dims"),
        (lambda: SNResidualBlock(2, 4, -1), "out_channels"),
        (lambda: SNResidualBlock(2, 4, 4, resample="pool"), "resample"),
        (lambda: SNResidualBlock(2, 4, 4, kernel_size=2), "kernel_size"),
    ],
)
def test_bad_arguments(factory, name):
    with pytest.raises(ValueError, match=name):
        factory()


@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 5, 5, 5), (2, 3, 5, 5)])
def test_bad_input(shape):
    for module in (SelfAttention(2, 8), SNResidualBlock(2, 8, 8)):
        with pytest.raises(ValueError, match="in_channels=8"):
            module(torch.randn(*shape))
    with pytest.raises(ValueError, match="even"):
        SNResidualBlock(2, 8, 8, resample="down")(torch.randn(1, 8, 5, 6))
