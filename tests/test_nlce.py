"""Tests of monai_ext.networks.blocks.nlce against naive references of eq. (1)-(3) of the NLCE paper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

from monai_ext.networks.blocks import NLCE, ContextEncoding, NonLocalBlock

SHAPES = {2: (2, 6, 5, 7), 3: (2, 6, 3, 4, 5)}  # (B, C, *spatial)


def _conv1x1(x: torch.Tensor, conv: torch.nn.Module) -> torch.Tensor:
    """1x1 conv as a matmul over channels: (B, C, N) -> (B, C', N)."""
    w = conv.weight.reshape(conv.weight.shape[0], -1)
    y = torch.einsum("oc,bcn->bon", w, x)
    return y if conv.bias is None else y + conv.bias[None, :, None]


def _batch_norm(x: torch.Tensor, bn: torch.nn.Module, training: bool) -> torch.Tensor:
    """Batch norm over dim 1, with batch statistics (training) or the running ones (eval)."""
    if training:
        dims = [d for d in range(x.ndim) if d != 1]
        mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    else:
        shape = [1, -1] + [1] * (x.ndim - 2)
        mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    shape = [1, -1] + [1] * (x.ndim - 2)
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def naive_nonlocal(block: NonLocalBlock, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Eq. (1)-(2) with the explicit N x N affinity matrix, then z = W_z y + x."""
    xf = x.flatten(2)  # (B, C, N)
    theta, phi, g = (_conv1x1(xf, m) for m in (block.theta, block.phi, block.g))  # (B, C', N)
    f = torch.exp(torch.einsum("bci,bcj->bij", theta, phi))  # f(x_i, x_j), eq. (1)
    attn = f / f.sum(-1, keepdim=True)  # normalised over j
    y = torch.einsum("bij,bcj->bci", attn, g)  # eq. (2)
    wz = _batch_norm(_conv1x1(y, block.w_z[0]), block.w_z[1], training)
    return (wz + xf).reshape(x.shape)


def naive_context(enc: ContextEncoding, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Eq. (3) with the explicit residuals r_ik (B, N, K, C'')."""
    conv, bn = enc.proj[0], enc.proj[1]
    z = torch.relu(_batch_norm(_conv1x1(x.flatten(2), conv), bn, training)).transpose(1, 2)  # (B, N, C'')
    r = z[:, :, None, :] - enc.codewords[None, None]  # (B, N, K, C'')
    logits = -enc.scale * (r**2).sum(-1)  # (B, N, K)
    w = torch.exp(logits - logits.max(-1, keepdim=True).values)
    a = w / w.sum(-1, keepdim=True)
    e_k = (a[..., None] * r).sum(1)  # (B, K, C'')
    return torch.relu(_batch_norm(e_k, enc.codeword_norm, training)).sum(1)


def _randomise_bn(module: torch.nn.Module) -> None:
    """Non-trivial affine and running statistics, so eval mode is tested for real."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_nonlocal_matches_naive(spatial_dims, training, dtype):
    torch.manual_seed(0)
    block = NonLocalBlock(spatial_dims, 6, inter_channels=4).to(dtype)
    _randomise_bn(block)
    block.train(training)
    x = torch.randn(*SHAPES[spatial_dims], dtype=dtype)
    expected = naive_nonlocal(block, x, training)
    out = block(x)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_context_encoding_matches_naive(spatial_dims, training, dtype):
    torch.manual_seed(0)
    enc = ContextEncoding(spatial_dims, 6, num_codes=5, code_channels=4).to(dtype)
    _randomise_bn(enc)
    with torch.no_grad():  # codewords in the range of the features, so the assignments are not uniform
        enc.codewords.normal_()
    enc.train(training)
    x = torch.randn(*SHAPES[spatial_dims], dtype=dtype)
    expected = naive_context(enc, x, training)
    out = enc(x)
    assert out.shape == (x.shape[0], 4)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_nonlocal_uses_fused_attention(spatial_dims):
    """The attention must run in a fused SDPA kernel (no N x N matrix), forward and backward."""
    block = NonLocalBlock(spatial_dims, 6).train()
    x = torch.randn(*SHAPES[spatial_dims], requires_grad=True)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        block(x).sum().backward()  # raises "No available kernel" if only the math fallback would work
    assert x.grad is not None


def test_defaults():
    block = NonLocalBlock(2, 7)
    assert block.inter_channels == 3
    assert NonLocalBlock(2, 1).inter_channels == 1
    enc = ContextEncoding(2, 128)
    assert (enc.num_codes, enc.code_channels) == (32, 64)
    assert ContextEncoding(2, 16).code_channels == 16
    assert float(enc.scale.detach().min()) >= 0.0 and float(enc.scale.detach().max()) <= 1.0
    assert float(enc.codewords.detach().abs().max()) <= (32 * 64) ** -0.5


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_nlce_shapes(spatial_dims, batch):
    spatial = (5, 6) if spatial_dims == 2 else (3, 4, 5)
    x = torch.randn(batch, 8, *spatial)
    for training in (True, False):
        net = NLCE(spatial_dims, 8, num_codes=4).train(training)
        assert net(x).shape == x.shape


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_switches(spatial_dims):
    torch.manual_seed(0)
    x = torch.randn(*SHAPES[spatial_dims])
    full = NLCE(spatial_dims, 6, num_codes=4).eval()
    _randomise_bn(full)
    state = full.state_dict()
    parts = {}
    for nl in (True, False):
        for ctx in (True, False):
            net = NLCE(spatial_dims, 6, num_codes=4, use_nonlocal=nl, use_context=ctx).eval()
            net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()})
            parts[nl, ctx] = net(x)
    with torch.no_grad():
        f_z = full.non_local(x)
        gamma = torch.sigmoid(full.fc(full.context(f_z)))
        torch.testing.assert_close(parts[True, True], f_z * gamma.view(*gamma.shape, *[1] * spatial_dims))
    torch.testing.assert_close(parts[True, False], f_z)
    assert not torch.allclose(parts[True, True], parts[False, True])  # use_nonlocal changes the output
    assert not torch.allclose(parts[True, True], parts[True, False])  # use_context changes the output
    assert not torch.allclose(parts[False, True], x)
    assert torch.equal(parts[False, False], x)  # both off: identity
    assert len(list(NLCE(spatial_dims, 6, use_nonlocal=False, use_context=False).parameters())) == 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_reach_every_parameter(spatial_dims):
    torch.manual_seed(0)
    net = NLCE(spatial_dims, 6, num_codes=4).train()
    x = torch.randn(*SHAPES[spatial_dims], requires_grad=True)
    (net(x) * torch.randn(*SHAPES[spatial_dims])).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().max() > 0, name
    assert x.grad is not None and x.grad.abs().max() > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"spatial_dims": 4, "in_channels": 4}, "spatial_dims"),
        ({"spatial_dims": 0, "in_channels": 4}, "spatial_dims"),
        ({"spatial_dims": 2, "in_channels": 0}, "in_channels"),
        ({"spatial_dims": 2, "in_channels": 4, "num_codes": 0}, "num_codes"),
        ({"spatial_dims": 2, "in_channels": 4, "inter_channels": 0}, "inter_channels"),
        ({"spatial_dims": 2, "in_channels": 4, "code_channels": -1}, "code_channels"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NLCE(**kwargs)


def test_bad_arguments_parts():
    with pytest.raises(ValueError, match="spatial_dims"):
        NonLocalBlock(5, 4)
    with pytest.raises(ValueError, match="in_channels"):
        NonLocalBlock(2, 0)
    with pytest.raises(ValueError, match="num_codes"):
        ContextEncoding(2, 4, num_codes=0)


@pytest.mark.parametrize("shape", [(2, 4, 5), (2, 4, 5, 5, 5), (2, 3, 5, 5), (4, 5, 5)])
def test_bad_input(shape):
    for module in (NLCE(2, 4, num_codes=4), NonLocalBlock(2, 4), ContextEncoding(2, 4, num_codes=4)):
        with pytest.raises(ValueError, match="in_channels"):
            module(torch.randn(*shape))


@settings(max_examples=10, deadline=None)
@given(
    spatial_dims=st.sampled_from([1, 2, 3]),
    batch=st.integers(1, 3),
    channels=st.integers(2, 6),  # train-mode BN over K codewords needs B * C'' > 1
    size=st.lists(st.integers(2, 5), min_size=3, max_size=3),
    num_codes=st.integers(1, 5),
)
def test_property_matches_naive(spatial_dims, batch, channels, size, num_codes):
    torch.manual_seed(0)
    x = torch.randn(batch, channels, *size[:spatial_dims], dtype=torch.float64)
    net = NLCE(spatial_dims, channels, num_codes=num_codes).double().train()
    out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    f_z = naive_nonlocal(net.non_local, x, training=True)
    e = naive_context(net.context, f_z, training=True)
    gamma = torch.sigmoid(F.linear(e, net.fc.weight, net.fc.bias))
    torch.testing.assert_close(out, f_z * gamma.view(*gamma.shape, *[1] * spatial_dims), atol=1e-8, rtol=1e-8)
