"""
Attacks through a MONAI inferer (issue 20, item 1): the window-chunked gradient through a sliding window equals
autograd through MONAI's own ``sliding_window_inference`` (to 1e-5) while at most one chunk of windows holds its graph;
every attack, ``Attackd``, ``AdversarialPrepareBatch``, ``RobustnessSweep`` and ``AttackEvaluation`` run the network
only through the inferer; the settings name the inferer, so a resume with another one is refused.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, from_engine
from monai.inferers import SimpleInferer, SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import UNet
from monai.transforms import Activationsd, AsDiscreted, Compose
from torch import nn
from torch.utils.data import DataLoader

from monai_ext import attacks
from monai_ext.attacks import (
    AttackObjective,
    InfererNetwork,
    attack_loss,
    cospgd_loss,
    describe_inferer,
    network_logits,
    segpgd_loss,
    sliding_window_gradient,
    with_inferer,
)
from monai_ext.engines import AttackEvaluation, RobustnessSweep
from monai_ext.engines.utils import AdversarialPrepareBatch
from monai_ext.transforms import Attackd

pytestmark = pytest.mark.usefixtures("one_thread")

ROI = (12, 8, 12)
SHAPE = (2, 1, 21, 16, 9)  # 21 is no multiple of the window, 9 is smaller than it: MONAI pads


def _unet(seed: int = 0) -> nn.Module:
    """A small 3D U-Net with batch norm, in eval mode with running statistics that are not the initial ones."""
    torch.manual_seed(seed)
    net = UNet(3, 1, 3, channels=(4, 8), strides=(2,), num_res_units=1, norm="batch")
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _batch(shape: tuple[int, ...] = SHAPE, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen), torch.randint(0, 3, (shape[0], 1, *shape[2:]), generator=gen)


def _monai_gradient(
    network: nn.Module, inferer: SlidingWindowInferer, images: torch.Tensor, loss: Callable
) -> tuple[torch.Tensor, torch.Tensor]:
    """The independent fact: logits and input gradient by autograd through MONAI's ``sliding_window_inference``."""
    x = images.clone().requires_grad_(True)
    logits = sliding_window_inference(
        x, inferer.roi_size, inferer.sw_batch_size, network, inferer.overlap, inferer.mode, inferer.sigma_scale,
        inferer.padding_mode, inferer.cval,
    )  # fmt: skip
    (grad,) = torch.autograd.grad(loss(logits), x)
    return logits.detach(), grad


class WindowOnly(nn.Module):
    """A network that refuses any input but a window: an attack that ran it outside the inferer fails."""

    def __init__(self, network: nn.Module, roi: tuple[int, ...] = ROI) -> None:
        super().__init__()
        self.network, self.roi = network, tuple(roi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.roi:
            raise RuntimeError(f"the network ran on {tuple(x.shape)}, not on a window {self.roi}")
        return self.network(x)


class WholeGraph(SlidingWindowInferer):
    """MONAI's sliding window under another class name: differentiated through as a whole, by plain autograd."""


# ------------------------------------------------------------------------------------ the gradient equals MONAI's


@pytest.mark.parametrize("sw_batch_size", [1, 3])
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_gradient_equals_autograd_through_sliding_window_inference(overlap, mode, sw_batch_size) -> None:
    network, (images, labels) = _unet(), _batch()
    inferer = SlidingWindowInferer(ROI, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode)
    loss = functools.partial(lambda z, y: F.cross_entropy(z, y, reduction="sum"), y=labels[:, 0])  # O(1) gradients
    logits, grad = sliding_window_gradient(functools.partial(network_logits, network), inferer, images, loss)
    ref_logits, ref_grad = _monai_gradient(network, inferer, images, loss)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    assert ref_grad.abs().max() > 0.1
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "loss, target",
    [
        ("ce", None),
        ("dice", None),
        ("jsd", None),
        ("masked_ce", None),
        ("ce", "inverse"),
        (functools.partial(segpgd_loss, step=1, num_steps=4), None),
        (cospgd_loss, None),
    ],
)
def test_every_loss_through_the_objective(loss, target) -> None:
    network, (images, labels) = _unet(), _batch()
    inferer = SlidingWindowInferer(ROI, sw_batch_size=2, overlap=0.5, mode="gaussian")
    objective = AttackObjective(InfererNetwork(network, inferer), images, labels, loss, target)
    logits, grad = objective.logits_and_gradient(images)
    objective_labels = (labels + 1) % 3 if target else labels
    ref_logits, ref_grad = _monai_gradient(network, inferer, images, lambda z: attack_loss(z, objective_labels, loss))
    ref_grad = -ref_grad if target else ref_grad
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    scale = ref_grad.abs().max()
    assert scale > 0
    torch.testing.assert_close(grad / scale, ref_grad / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding_mode": "replicate"},
        {"padding_mode": "reflect"},
        {"padding_mode": "constant", "cval": 0.5},
        {"mode": "gaussian", "sigma_scale": (0.3, 0.1, 0.2), "cache_roi_weight_map": True},
        {"roi_size": (12, -1, 12)},  # a window as wide as the volume along one axis
        {"sw_batch_size": 64},  # every window in one chunk
    ],
)
def test_padding_weights_and_chunks(kwargs) -> None:
    network, (images, labels) = _unet(), _batch()
    inferer = SlidingWindowInferer(**{"roi_size": ROI, "sw_batch_size": 2, "overlap": 0.5, **kwargs})
    loss = functools.partial(lambda z, y: F.cross_entropy(z, y, reduction="sum"), y=labels[:, 0])
    logits, grad = sliding_window_gradient(functools.partial(network_logits, network), inferer, images, loss)
    ref_logits, ref_grad = _monai_gradient(network, inferer, images, loss)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5)


class SavedBytes:
    """The bytes autograd holds for backward passes (saved tensors), now and at most, through
    ``torch.autograd.graph.saved_tensors_hooks``."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> _Held:
        return _Held(self, tensor)

    @staticmethod
    def unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def measure(self, run: Callable[[], object]) -> int:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            run()
        return self.peak


class _Held:
    def __init__(self, meter: SavedBytes, tensor: torch.Tensor) -> None:
        self.meter, self.tensor, self.size = meter, tensor, tensor.numel() * tensor.element_size()
        meter.live += self.size
        meter.peak = max(meter.peak, meter.live)

    def __del__(self) -> None:
        self.meter.live -= self.size


def test_one_chunk_of_windows_holds_its_graph() -> None:
    """The saved tensors at their peak: one chunk's forward graph and the loss's on the whole volume, where autograd
    through the whole sliding window holds every window's graph (24 windows in 12 chunks here)."""
    network, (images, labels) = _unet(), _batch((1, 1, 40, 32, 24))
    inferer = SlidingWindowInferer((16, 16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian")
    loss = functools.partial(lambda z, y: F.cross_entropy(z, y), y=labels[:, 0])
    predict = functools.partial(network_logits, network)
    chunked = SavedBytes().measure(lambda: sliding_window_gradient(predict, inferer, images, loss))
    whole = SavedBytes().measure(lambda: _monai_gradient(network, inferer, images, loss))
    windows = images[..., :16, :16, :16].repeat(2, 1, 1, 1, 1).requires_grad_(True)
    one_chunk = SavedBytes().measure(lambda: torch.autograd.grad(network(windows).sum(), windows))
    logits = torch.zeros(1, 3, 40, 32, 24, requires_grad=True)
    loss_only = SavedBytes().measure(lambda: torch.autograd.grad(loss(logits), logits))
    assert chunked <= one_chunk + loss_only
    assert whole > 10 * one_chunk


# ------------------------------------------------------------------------------------------- the attacks and doors

ATTACKS: dict[str, Callable[..., object]] = {
    "FGSM": lambda **kw: attacks.FGSM(8, **kw),
    "IterativeFGSM": lambda **kw: attacks.IterativeFGSM(4, target="inverse", **kw),
    "PGD": lambda **kw: attacks.PGD(8, 2, 2, seed=0, **kw),
    "SegPGD": lambda **kw: attacks.SegPGD(8, 2, 2, seed=0, **kw),
    "CosPGD": lambda **kw: attacks.CosPGD(8, 2, 2, seed=0, **kw),
    "APGD": lambda **kw: attacks.APGD(8, num_steps=3, loss="jsd", **kw),
    "LayeredPGD": lambda **kw: attacks.LayeredPGD(8, 2, num_steps=1, **kw),
    "SignSelectionFGSM": lambda **kw: attacks.SignSelectionFGSM(8, search="greedy", **kw),
    "GradientPerturbation": lambda **kw: attacks.GradientPerturbation(gamma=0.01, num_steps=2, **kw),
    "ensemble_attack": lambda **kw: attacks.ensemble_attack(8, num_steps=1, **kw),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_runs_the_network_only_through_its_inferer(name: str) -> None:
    """With ``inferer=``, or handed an ``InfererNetwork``: the network only ever sees windows, and with an inferer of
    its own the attack names it in its settings."""
    network, (images, labels) = WindowOnly(_unet()), _batch()
    inferer = SlidingWindowInferer(ROI, sw_batch_size=3, overlap=0.25, mode="gaussian")
    with pytest.raises(RuntimeError, match="not on a window"):
        ATTACKS[name]()(network, images, labels)
    own = ATTACKS[name](inferer=inferer)
    adv = own(network, images, labels)
    assert adv.shape == images.shape and not torch.equal(adv, images)
    handed = ATTACKS[name]()(InfererNetwork(network, inferer), images, labels)
    assert handed.shape == images.shape
    settings = json.loads(json.dumps(own.settings()))
    assert settings["inferer"] == describe_inferer(inferer)
    assert settings["inferer"]["name"] == "SlidingWindowInferer" and settings["inferer"]["roi_size"] == list(ROI)
    assert "inferer" not in ATTACKS[name]().settings()


def test_an_attack_through_the_windows_equals_one_through_the_whole_graph() -> None:
    """PGD with the window-chunked gradient and PGD by autograd through the whole sliding window (an inferer class
    the chunked path does not take) give the same adversarial volume."""
    network, (images, labels) = _unet(), _batch()
    args = {"roi_size": ROI, "sw_batch_size": 2, "overlap": 0.5, "mode": "gaussian"}
    chunked = attacks.PGD(8, 2, 3, random_start=False, inferer=SlidingWindowInferer(**args))(network, images, labels)
    whole = attacks.PGD(8, 2, 3, random_start=False, inferer=WholeGraph(**args))(network, images, labels)
    assert (chunked - whole).abs().gt(1e-6).float().mean() < 1e-3  # a sign of a vanishing gradient may flip


def test_with_inferer() -> None:
    network = _unet()
    inferer = SlidingWindowInferer(ROI, overlap=0.5)
    assert with_inferer(network, None) is network and with_inferer(network, SimpleInferer()) is network
    wrapped = with_inferer(network, inferer)
    assert isinstance(wrapped, InfererNetwork) and wrapped.network is network
    assert with_inferer(wrapped, SlidingWindowInferer(ROI, overlap=0.5)) is wrapped  # described alike
    with pytest.raises(ValueError, match="already run through"):
        with_inferer(wrapped, SlidingWindowInferer(ROI, overlap=0.25))
    assert dict(wrapped.named_parameters()).keys() == {f"network.{k}" for k, _ in network.named_parameters()}
    with attacks.attack_mode(wrapped.train()):
        assert not any(m.training for m in network.modules())
    assert all(m.training for m in network.modules())


def _volumes(n: int = 3, shape: tuple[int, ...] = (20, 16, 9)) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        label = torch.zeros(1, *shape)
        label[:, 4:14, 3:12, 2:7] = 1
        image = (0.2 + 0.6 * label + 0.05 * torch.rand(1, *shape, generator=gen)).clamp(0, 1)
        items.append({"image": image, "label": label})
    return items


def _threshold() -> nn.Module:
    """A 1x1x1-conv 'threshold' network, logits ``(0.5 - x, x - 0.5) * 20``, that accepts windows only."""
    net = nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([-20.0, 20.0]).view(2, 1, 1, 1, 1))
        net.bias.copy_(torch.tensor([10.0, -10.0]))
    return WindowOnly(net.eval())


def test_robustness_sweep_attacks_through_its_inferer_and_refuses_another(tmp_path) -> None:
    inferer = SlidingWindowInferer(ROI, sw_batch_size=2, overlap=0.5, mode="gaussian")
    args = {
        "dataloader": DataLoader(_volumes(), batch_size=2),
        "attack": functools.partial(attacks.IterativeFGSM, target="inverse"),
        "epsilons": [0, 96],
        "num_classes": 2,
        "output_dir": tmp_path,
    }
    clean, attacked = RobustnessSweep(_threshold(), inferer=inferer, **args).run()["results"]
    assert clean["mean_dice"] > 0.99 and attacked["mean_dice"] < clean["mean_dice"] - 0.5
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["settings"]["inferer"] == describe_inferer(inferer)
    other = SlidingWindowInferer(ROI, sw_batch_size=2, overlap=0.25, mode="gaussian")
    with pytest.raises(ValueError, match="inferer"):
        RobustnessSweep(_threshold(), inferer=other, **args).run()
    again = RobustnessSweep(_threshold(), inferer=inferer, **args).run()["results"]
    assert again == saved["results"]  # taken from the file


def test_attack_evaluation_attacks_through_the_evaluators_inferer(tmp_path) -> None:
    def evaluator(inferer: SlidingWindowInferer) -> SupervisedEvaluator:
        post = Compose([Activationsd("pred", softmax=True), AsDiscreted(["pred", "label"], argmax=[True, False],
                                                                        to_onehot=2)])  # fmt: skip
        dice = MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))
        return SupervisedEvaluator(torch.device("cpu"), DataLoader(_volumes(), batch_size=2), _threshold(),
                                   inferer=inferer, postprocessing=post, key_val_metric={"mean_dice": dice})  # fmt: skip

    inferer = SlidingWindowInferer(ROI, sw_batch_size=3, overlap=0.5)
    conditions = {"clean": None, "fgsm": attacks.FGSM(96)}
    results = AttackEvaluation(evaluator(inferer), conditions, ["background", "fg"], output_dir=tmp_path).run()
    assert results["fgsm"]["mean_dice"] < results["clean"]["mean_dice"] - 0.5
    assert json.loads((tmp_path / "attack_evaluation.json").read_text())["settings"]["inferer"]["overlap"] == 0.5
    other = evaluator(SlidingWindowInferer(ROI, sw_batch_size=3, overlap=0.25))
    with pytest.raises(ValueError, match="inferer"):
        AttackEvaluation(other, conditions, ["background", "fg"], output_dir=tmp_path).run()


def test_attackd_and_adversarial_prepare_batch_take_an_inferer() -> None:
    inferer = SlidingWindowInferer(ROI, sw_batch_size=2, overlap=0.5)
    item = _volumes(1)[0]
    transform = Attackd("image", attack=attacks.FGSM(8), network=_threshold(), inferer=inferer, record_key="how")
    out = transform(item)
    assert out["image"].shape == item["image"].shape and not torch.equal(out["image"], item["image"])
    assert out["how"]["settings"]["inferer"] == describe_inferer(inferer)
    prepare = AdversarialPrepareBatch(attacks.FGSM(8), _threshold(), inferer=inferer)
    images, _ = prepare({"image": item["image"][None], "label": item["label"][None]})
    torch.testing.assert_close(images[0], out["image"])
