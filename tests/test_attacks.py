"""Tests of the attacks (FGSM, I-FGSM, PGD) and their MONAI doors (``Attackd``, ``AdversarialPrepareBatch``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_in_ball_and_range, attack_case
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MeanDice, from_engine
from monai.transforms import AsDiscreted, Compose
from torch import nn

from monai_ext.attacks import FGSM, PGD, IterativeFGSM, attack_loss, kurakin_num_steps, resolve_target, to_data_units
from monai_ext.engines.utils import AdversarialPrepareBatch
from monai_ext.networks.nets import NLCEN
from monai_ext.transforms import Attackd

torch.set_num_threads(2)


class TinyNet(nn.Module):
    """Conv-BN-ReLU-conv segmentation net, logits (B, out_channels, *spatial)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, hidden: int = 8) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        self.body = nn.Sequential(
            conv(in_channels, hidden, 3, padding=1),
            norm(hidden),
            nn.ReLU(),
            conv(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            conv(hidden, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _squares(num: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square on a darker noisy background; the label is the square. Images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.rand(num, 1, size, size, generator=g) + 0.1
    labels = torch.zeros(num, 1, size, size)
    for i in range(num):
        w = int(torch.randint(4, size // 2, (1,), generator=g))
        r, c = (int(v) for v in torch.randint(0, size - w, (2,), generator=g))
        labels[i, :, r : r + w, c : c + w] = 1
    images = (images + 0.45 * labels).clamp(0, 1)
    return images, labels


@pytest.fixture(scope="module")
def trained():
    """A TinyNet trained for a few dozen steps to segment the squares; returned in eval mode with held-out data."""
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    net.train()
    for step in range(60):
        x, y = _squares(8, seed=step + 1)
        opt.zero_grad()
        F.cross_entropy(net(x), y[:, 0].long()).backward()
        opt.step()
    net.eval()
    x, y = _squares(4, seed=1000)
    with torch.no_grad():
        dice = _dice(net(x).argmax(1, keepdim=True), y)
    assert dice > 0.8, f"the toy network did not learn its task (Dice {dice:.3f})"
    return net, x, y


def _dice(pred: torch.Tensor, label: torch.Tensor) -> float:
    inter = (pred * label).sum()
    return float(2 * inter / (pred.sum() + label.sum()).clamp_min(1))


def _loss(net: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(attack_loss(net(x), labels))


# ------------------------------------------------------------------------------------------------ property test
ATTACKS = ("fgsm", "ifgsm", "ifgsm_inverse", "pgd_linf", "pgd_l2")


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(ATTACKS),
    spatial_dims=st.sampled_from([2, 3]),
    batch=st.integers(1, 3),
    in_channels=st.integers(1, 2),
    out_channels=st.integers(1, 4),
    size=st.integers(4, 12),
    unit=st.sampled_from(["levels", "fraction"]),
    eps_fraction=st.floats(0.0, 1.0),
    data_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 2.0)]),
    loss=st.sampled_from(["ce", "dice"]),
    seed=st.integers(0, 2**16),
)
def test_attacks_stay_in_ball_and_range(
    kind, spatial_dims, batch, in_channels, out_channels, size, unit, eps_fraction, data_range, loss, seed
):
    torch.manual_seed(seed)
    spatial = (size,) * 2 if spatial_dims == 2 else (min(size, 6),) * 3
    eps = eps_fraction * (32.0 if unit == "levels" else 0.125)  # up to 32 levels or 1/8 of the range
    net = TinyNet(spatial_dims, in_channels, out_channels, hidden=4)
    images, labels = attack_case(batch, in_channels, out_channels, spatial, data_range)
    common = {"unit": unit, "data_range": data_range, "loss": loss}
    alpha = eps / 4
    attack = {
        "fgsm": lambda: FGSM(eps, **common),
        "ifgsm": lambda: IterativeFGSM(eps, num_steps=min(kurakin_num_steps(eps * 255 / 32), 6), **common),
        "ifgsm_inverse": lambda: IterativeFGSM(eps, alpha=alpha, num_steps=4, target="inverse", **common),
        "pgd_linf": lambda: PGD(eps, alpha, 4, norm="linf", random_start=True, seed=seed, **common),
        "pgd_l2": lambda: PGD(eps * 8, alpha * 8, 4, norm="l2", random_start=True, seed=seed, **common),
    }[kind]()
    adv = attack(net, images, labels)

    assert adv.dtype == images.dtype and not adv.requires_grad
    norm = "l2" if kind == "pgd_l2" else "linf"
    assert_in_ball_and_range(adv, images, to_data_units(attack.eps, unit, data_range), norm, data_range)


# ------------------------------------------------------------------------------------------------ behaviour
def test_attacks_move_the_loss_the_right_way(trained):
    net, x, y = trained
    clean = _loss(net, x, y)
    for attack in (FGSM(4), IterativeFGSM(4), PGD(4, 1, 5, seed=0), PGD(64, 16, 5, norm="l2", seed=0)):
        assert _loss(net, attack(net, x, y), y) > clean + 1e-3, attack

    inverse = 1 - y
    clean_target = _loss(net, x, inverse)
    for attack in (FGSM(4, target="inverse"), IterativeFGSM(4, target="inverse"), PGD(4, 1, 5, target="inverse")):
        assert _loss(net, attack(net, x, y), inverse) < clean_target - 1e-3, attack
    full_background = torch.zeros_like(y)
    assert _loss(net, PGD(8, 2, 5, target=0)(net, x, y), full_background) < _loss(net, x, full_background)

    # the helpful direction of gradient perturbation: descend the loss on the ground truth
    helpful = IterativeFGSM(4, target=lambda images, labels: labels)
    assert _loss(net, helpful(net, x, y), y) < clean - 1e-4


# The NLCEN paper's budgets (eps in levels of 0-255) and the number of iterations of Kurakin et al.'s rule
# N = min(eps + 4, ceil(1.25 * eps)), worked by hand: e.g. eps 0.5 -> min(4.5, ceil(0.625) = 1) = 1,
# eps 10 -> min(14, ceil(12.5) = 13) = 13, eps 14 -> min(18, ceil(17.5) = 18) = 18, eps 18 -> min(22, 23) = 22.
KURAKIN_STEPS = {
    0.5: 1, 1: 2, 2: 3, 4: 5, 6: 8, 8: 10, 10: 13, 12: 15, 14: 18,
    16: 20, 18: 22, 20: 24, 22: 26, 24: 28, 26: 30, 28: 32, 30: 34, 32: 36,
}  # fmt: skip


@pytest.mark.parametrize("eps, expected", sorted(KURAKIN_STEPS.items()))
def test_kurakin_schedule(eps, expected):
    assert kurakin_num_steps(eps) == expected and isinstance(kurakin_num_steps(eps), int)
    assert IterativeFGSM(eps).num_steps == expected
    assert IterativeFGSM(eps / 255, unit="fraction").num_steps == expected  # no float drift: 8/255*255 != 8


def test_fgsm_matches_reference_and_pgd_one_step(trained):
    net, _, y = trained
    x = 0.25 + 0.5 * torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))  # no clipping at eps 4
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(net(xg), y[:, 0].long()), xg)[0]
    reference = x + 4 / 255 * grad.sign()
    assert torch.equal(FGSM(4)(net, x, y), reference)
    assert torch.equal(PGD(4, alpha=4, num_steps=1, random_start=False)(net, x, y), reference)


def test_inverse_and_full_area_targets():
    y = torch.tensor([0, 1, 2, 3]).view(1, 1, 2, 2)
    assert torch.equal(resolve_target("inverse", None, y, num_classes=4), (y + 1) % 4)
    binary = torch.tensor([0, 1, 1, 0]).view(1, 1, 2, 2)
    assert torch.equal(resolve_target("inverse", None, binary, num_classes=2), 1 - binary)
    assert torch.equal(resolve_target(2, None, y, num_classes=4), torch.full_like(y, 2))
    with pytest.raises(ValueError, match="target class 5 is out of range"):
        resolve_target(5, None, y, num_classes=4)


def test_binary_single_logit_network():
    torch.manual_seed(0)
    net = TinyNet(out_channels=1).eval()
    x, y = _squares(2)
    adv = IterativeFGSM(8, target="inverse")(net, x, y)
    assert adv.shape == x.shape
    assert _loss(net, adv, 1 - y) < _loss(net, x, 1 - y)  # binary cross-entropy with logits on the single logit


def _state(net: nn.Module):
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [None if p.grad is None else p.grad.clone() for p in net.parameters()],
        [p.requires_grad for p in net.parameters()],
        [m.training for m in net.modules()],
    )


def _assert_same_state(before, after):
    (sd0, g0, r0, m0), (sd1, g1, r1, m1) = before, after
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)  # BN running stats included
    assert [a is None for a in g0] == [b is None for b in g1]
    assert all(torch.equal(a, b) for a, b in zip(g0, g1) if a is not None)
    assert r0 == r1 and m0 == m1


def test_network_state_untouched():
    torch.manual_seed(0)
    net = TinyNet().train()
    params = list(net.parameters())
    params[0].grad = torch.ones_like(params[0])  # a set grad stays equal, None stays None
    params[-1].requires_grad_(False)
    net.body[1].eval()  # a module frozen in eval mode stays so
    x, y = _squares(2)
    before = _state(net)
    for attack in (FGSM(8), IterativeFGSM(2, target="inverse"), PGD(8, 2, 2, norm="l2")):
        attack(net, x, y)
        _assert_same_state(before, _state(net))
    assert net.training and not net.body[1].training


def test_nlcen_in_train_mode_is_attacked_through_its_eval_output():
    torch.manual_seed(0)
    net = NLCEN(spatial_dims=2, in_channels=1, out_channels=2, fpn_channels=16, num_codes=4).train()
    x = torch.rand(2, 1, 32, 32)
    y = torch.randint(0, 2, (2, 1, 32, 32))
    before = _state(net)
    adv = IterativeFGSM(1, target="inverse")(net, x, y)  # two steps of one level
    assert adv.shape == x.shape and (adv - x).abs().max() <= 1 / 255 + 1e-6 and not torch.equal(adv, x)
    _assert_same_state(before, _state(net))
    assert net.training


def test_bad_arguments():
    net = TinyNet().eval()
    x, y = _squares(2)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        FGSM(-1)
    with pytest.raises(ValueError, match="eps must be finite"):
        PGD(float("nan"), 1, 3)
    with pytest.raises(ValueError, match="alpha must be finite"):
        PGD(8, float("nan"), 3)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        IterativeFGSM(8, num_steps=-1)
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        PGD(8, 1, 3, norm="l1")
    with pytest.raises(ValueError, match="unknown unit"):
        FGSM(8, unit="percent")
    with pytest.raises(ValueError, match="unknown loss"):
        FGSM(8, loss="mse")
    with pytest.raises(ValueError, match="unknown target"):
        FGSM(8, target="everything")
    bad = MetaTensor(x.clone(), meta={"filename_or_obj": ["a.png", "b.png"]})
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"images 'b.png' contain NaN or inf values \(batch index \[1\]\)"):
        FGSM(8)(net, bad, y)
    shapes = r"labels of shape \(2, 1, 8, 16\) do not match images of shape \(2, 1, 16, 16\)"
    with pytest.raises(ValueError, match=shapes):
        FGSM(8)(net, x, y[..., :8, :])
    with pytest.raises(ValueError, match="outside data_range"):
        FGSM(8)(net, x * 3, y)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\]"):
        FGSM(8)(net, x, y + 1)


# ------------------------------------------------------------------------------------------------ MONAI doors
def test_attackd_equals_the_batch_callable(trained):
    net, x, y = trained
    attack = IterativeFGSM(4, target="inverse")
    image = MetaTensor(x[0], meta={"filename_or_obj": "case0.png"})
    out = Attackd(keys="image", label_key="label", attack=attack, network=net)({"image": image, "label": y[0]})
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["filename_or_obj"] == "case0.png"
    assert torch.equal(out["image"].as_tensor(), attack(net, x[:1], y[:1])[0])
    assert torch.equal(out["label"], y[0])


def _evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, prepare_batch=None) -> float:
    data = [{"image": x[i], "label": y[i]} for i in range(len(x))]
    post = Compose([AsDiscreted(keys="pred", argmax=True, to_onehot=2), AsDiscreted(keys="label", to_onehot=2)])
    kwargs = {} if prepare_batch is None else {"prepare_batch": prepare_batch}
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=net,
        postprocessing=post,
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        **kwargs,
    )
    evaluator.run()
    return evaluator.state.metrics["dice"]


def test_prepare_batch_in_evaluator_and_trainer(trained):
    net, x, y = trained
    clean = _evaluate(net, x, y)
    adversarial = _evaluate(net, x, y, AdversarialPrepareBatch(PGD(16, 4, 5, seed=0), network=net))
    assert adversarial < clean - 0.05, (clean, adversarial)

    # mix: only the first round(mix * B) samples of a batch are attacked
    images, labels = AdversarialPrepareBatch(FGSM(8), network=net, mix=0.5)({"image": x, "label": y})
    assert not torch.equal(images[:2], x[:2]) and torch.equal(images[2:], x[2:]) and torch.equal(labels, y)

    # online adversarial training: a trainer iterates on attacked batches, its network stays in train mode
    student = TinyNet()
    seen = []

    def attack(network, images, labels):
        adv = FGSM(8)(network, images, labels)
        seen.append((network.training, torch.equal(adv, images)))
        return adv

    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(4)]), batch_size=2),
        network=student,
        optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
        loss_function=lambda pred, label: F.cross_entropy(pred, label[:, 0].long()),
        prepare_batch=AdversarialPrepareBatch(attack, network=student),
    )
    trainer.run()
    assert seen == [(True, False), (True, False)] and student.training
