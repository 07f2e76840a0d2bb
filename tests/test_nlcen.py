"""Tests of NLCEN, NLCEUNet and the deep-supervision loss of eq. 5 (He et al., AAAI 2019)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks.utils import eval_mode

import monai_ext.networks.nets.nlcen as nlcen_module
from monai_ext.networks.blocks import NLCE
from monai_ext.networks.nets import NLCEN, NLCEUNet

# small settings so the suite stays fast on a 2-core CPU
SMALL = {"fpn_channels": 16, "num_codes": 8}


def _nlce_modules(net: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in net.modules() if isinstance(m, NLCE)]


def _eq5_loss() -> DeepSupervisionLoss:
    return DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0), weights=[0.25] * 5)


def _batch(shape: tuple[int, ...], out_channels: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, *shape, generator=g)
    y = torch.randint(0, out_channels, (2, 1, *shape), generator=g)
    return x, y


@pytest.mark.parametrize("spatial_dims,shape", [(2, (64, 64)), (3, (32, 32, 32)), (2, (72, 80))])
def test_train_and_eval_outputs(spatial_dims, shape):
    torch.manual_seed(0)
    net = NLCEN(spatial_dims=spatial_dims, in_channels=1, out_channels=3, backbone="resnet18", **SMALL)
    x = torch.rand(2, 1, *shape)
    net.train()
    out = net(x)
    assert isinstance(out, (list, tuple)) and len(out) == 5
    for o in out:
        assert o.shape == (2, 3, *shape)
    with eval_mode(net), torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *shape)
    assert net.training  # eval_mode restores the previous state


@pytest.mark.parametrize("backbone,channels", [("resnet34", [64, 128, 256, 512]), ("resnet50", [256, 512, 1024, 2048])])
def test_other_backbones(backbone, channels):
    net = NLCEN(spatial_dims=2, in_channels=3, out_channels=2, backbone=backbone, **SMALL)
    assert net.feature_channels == channels
    assert [m.in_channels for m in net.fpn.inner_blocks] == channels
    with eval_mode(net), torch.no_grad():
        y = net(torch.rand(2, 3, 64, 64))
    assert y.shape == (2, 2, 64, 64)


def test_eval_output_works_with_monai_inferer():
    """What ``verify_net_in_out`` and MONAI Label rely on: eval forward returns one logits tensor."""
    net = NLCEN(spatial_dims=2, in_channels=1, out_channels=2, **SMALL)
    x = torch.rand(1, 1, 80, 72)
    with eval_mode(net), torch.no_grad():
        y = net(x)
        assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.shape == (1, 2, 80, 72)
        z = SlidingWindowInferer(roi_size=(64, 64), sw_batch_size=2, overlap=0.25)(x, net)
    assert z.shape == (1, 2, 80, 72)
    net.deep_supervision = False
    assert isinstance(net.train()(torch.rand(2, 1, 64, 64)), torch.Tensor)


def test_ablation_switches(monkeypatch):
    net = NLCEN(spatial_dims=2, backbone="resnet18", use_nlce=False, **SMALL)
    assert not _nlce_modules(net)
    assert all(isinstance(m, torch.nn.Identity) for m in net.nlce)
    full = NLCEN(spatial_dims=2, backbone="resnet18", use_nlce=True, **SMALL)
    assert len(_nlce_modules(full)) == 4
    n_nlce = sum(p.numel() for m in _nlce_modules(full) for p in m.parameters())
    assert sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in net.parameters()) == n_nlce > 0

    # the switches reach every NLCE, each on the channels of its level
    calls = []

    class SpyNLCE(NLCE):
        def __init__(self, **kwargs):
            calls.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(nlcen_module, "NLCE", SpyNLCE)
    for nonlocal_, context in [(False, True), (True, False)]:
        calls.clear()
        net = NLCEN(spatial_dims=2, use_nonlocal=nonlocal_, use_context=context, num_codes=5, fpn_channels=16)
        assert len(calls) == 4 and len(_nlce_modules(net)) == 4
        assert [c["in_channels"] for c in calls] == [64, 128, 256, 512]
        for c in calls:
            switches = (c["use_nonlocal"], c["use_context"], c["num_codes"], c["spatial_dims"])
            assert switches == (nonlocal_, context, 5, 2)


def test_argument_validation():
    with pytest.raises(ValueError, match="resnet18.*resnet50"):
        NLCEN(backbone="resnet19")
    with pytest.raises(ValueError, match="fpn_channels"):
        NLCEN(fpn_channels=30)
    with pytest.raises(ValueError, match="spatial_dims"):
        NLCEN(spatial_dims=1)
    with pytest.raises(ValueError, match="out_channels"):
        NLCEN(out_channels=0)


def test_eq5_loss_is_deep_supervision_loss():
    """L = 1/4 sum_i L_g^i + 0.25 L_r: MONAI's DeepSupervisionLoss with weights [0.25] * 5 on the train outputs."""
    torch.manual_seed(0)
    net = NLCEN(spatial_dims=2, out_channels=3, **SMALL).train()
    x, y = _batch((64, 72), out_channels=3)
    out = net(x)
    loss = _eq5_loss()(out, y)
    hand = 0.25 * sum(F.cross_entropy(o, y[:, 0].long()) for o in out)
    assert torch.allclose(loss, hand, rtol=0, atol=1e-6)
    refined, *coarse = out
    hand_eq5 = 0.25 * sum(F.cross_entropy(o, y[:, 0]) for o in coarse) + 0.25 * F.cross_entropy(refined, y[:, 0])
    assert torch.allclose(loss, hand_eq5, rtol=0, atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = NLCEN(spatial_dims=2, **SMALL).train()
    x, y = _batch((64, 64))
    _eq5_loss()(net(x), y).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_overfits_one_batch():
    torch.manual_seed(0)
    net = NLCEN(spatial_dims=2, **SMALL).train()
    y = torch.zeros(2, 1, 64, 64, dtype=torch.long)  # two rectangles, seen through a little noise
    y[0, :, 8:40, 16:48] = 1
    y[1, :, 24:56, 4:30] = 1
    x = y.float() + 0.1 * torch.randn(2, 1, 64, 64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = _eq5_loss()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_nlce_unet():
    torch.manual_seed(0)
    kw = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": (8, 16, 32), "strides": (2, 2)}
    net = NLCEUNet(**kw, num_res_units=1, num_codes=8)
    x = torch.rand(2, 1, 64, 64)
    assert net(x).shape == (2, 2, 64, 64)
    nlces = _nlce_modules(net)
    assert len(nlces) == 1
    with eval_mode(net), torch.no_grad():
        y_full = net(x)
    assert isinstance(y_full, torch.Tensor) and y_full.shape == (2, 2, 64, 64)

    # plain UNet when use_nlce=False
    plain = NLCEUNet(**kw, num_res_units=1, use_nlce=False)
    assert not _nlce_modules(plain)
    n_nlce = sum(p.numel() for p in nlces[0].parameters())
    assert sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in plain.parameters()) == n_nlce

    # switching a part of the NLCE off (same weights otherwise) changes the output
    with torch.no_grad():
        for p in nlces[0].parameters():
            p.add_(0.1 * torch.randn_like(p))
        y_full = net.eval()(x)
    for switch in ({"use_nlce": False}, {"use_context": False}, {"use_nonlocal": False}):
        other = NLCEUNet(**kw, num_res_units=1, num_codes=8, **switch)
        own = other.state_dict()
        shared = {k: v for k, v in net.state_dict().items() if k in own and own[k].shape == v.shape}
        other.load_state_dict(shared, strict=False)
        with eval_mode(other), torch.no_grad():
            assert not torch.allclose(other(x), y_full, atol=1e-5), switch


def test_torchscript():
    """NLCEN and NLCEUNet script (``torch.jit.script``, as MONAI's ``ckpt_export``): same outputs, any input size."""
    torch.manual_seed(0)
    net = NLCEN(2, 1, 2, **SMALL)
    scripted = torch.jit.script(net)
    for shape in ((1, 1, 64, 64), (2, 1, 40, 72)):
        x = torch.rand(shape)
        with torch.no_grad():
            torch.testing.assert_close(scripted.eval()(x), net.eval()(x), rtol=0.0, atol=1e-6)
            train_outputs, scripted_outputs = net.train()(x), scripted.train()(x)
        assert len(scripted_outputs) == 5
        for ours, theirs in zip(scripted_outputs, train_outputs):
            torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-6)
    unet = NLCEUNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(unet)(x), unet(x), rtol=0.0, atol=1e-6)
    with pytest.raises(torch.jit.Error, match="in_channels=4"):  # the blocks' input checks compile with their forward
        torch.jit.script(NLCE(2, 4, num_codes=4))(torch.rand(1, 3, 5, 5))
