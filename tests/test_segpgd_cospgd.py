"""SegPGD and CosPGD: the authors' weighting functions (the ``cospgd`` package) give the same losses, steps and
adversarial images; the weights by hand on a 2 x 2 image; ball and data range (hypothesis); 2D, 3D, binary; doors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_in_ball_and_range, attack_case
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from monai_ext.attacks import (
    CosPGD,
    SegPGD,
    cospgd_loss,
    cospgd_weights,
    segpgd_loss,
    segpgd_weights,
    to_data_units,
    two_class_logits,
)
from monai_ext.attacks.objective import predicted_classes
from monai_ext.transforms import Attackd

torch.set_num_threads(1)


def _net(spatial_dims: int = 2, out_channels: int = 3, hidden: int = 6, seed: int = 0) -> nn.Module:
    """A small conv net with smooth activations (no exactly-zero gradients whose sign could flip on rounding)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return nn.Sequential(
        conv(1, hidden, 3, padding=1),
        nn.Tanh(),
        conv(hidden, hidden, 3, padding=1),
        nn.Tanh(),
        conv(hidden, out_channels, 1),
    ).eval()


class Recorder(nn.Module):
    """Records every input the wrapped network sees: the iterates of an attack."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.net(x)


# ------------------------------------------------------------------------------------------ the authors' functions
def _authors_loop(net, images, labels, kind, num_steps, eps, alpha, norm, targeted, num_classes):
    """The attack loop of the authors' ``unet_backbones`` trainer over ``cospgd.Attack``: per step ``t = 0..T-1``,
    CE with ``reduction="none"``, scaled by ``segpgd_scale(..., iteration=t, iterations=T)`` or ``cospgd_scale``,
    ``.mean()``, backward, ``step_inf`` / ``step_l2``. Returns the losses and the iterates after each step."""
    from cospgd import Attack

    orig, x, losses, iterates = images.clone(), images.clone(), [], []
    for t in range(num_steps):
        x.requires_grad_(True)
        preds = net(x)
        loss = F.cross_entropy(preds, labels, reduction="none")
        if kind == "segpgd":
            loss = Attack.segpgd_scale(preds, labels, loss, t, num_steps, targeted=targeted)
        else:
            loss = Attack.cospgd_scale(preds, labels, loss, num_classes=num_classes, targeted=targeted)
        loss = loss.mean()
        (grad,) = torch.autograd.grad(loss, x)
        step = Attack.step_inf if norm == "linf" else Attack.step_l2
        x = step(x.detach(), eps, grad, orig, alpha, targeted, clamp_min=0, clamp_max=1)
        losses.append(float(loss))
        iterates.append(x)
    return losses, iterates


@pytest.mark.parametrize("kind", ["segpgd", "cospgd"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_equals_the_authors_functions(kind, norm, targeted, num_classes):
    """Losses, steps and adversarial images equal a loop over the authors' ``segpgd_scale`` / ``cospgd_scale``
    (to 1e-5). lambda_t: the authors loop ``t = 0..T-1`` with ``lambda = t / (2T)``, the paper's ``(t - 1) / (2T)``
    for ``t = 1..T``, and so does SegPGD. The authors' SegPGD loss sums over the batch (``sum / (H W)``), ours
    averages over it: theirs is ``B`` times ours."""
    pytest.importorskip("cospgd")
    net = _net(out_channels=num_classes)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 12, 12, generator=gen)
    labels = torch.randint(0, num_classes, (2, 1, 12, 12), generator=gen)
    target = (labels + 1) % num_classes  # the "inverse" target
    steps, eps, alpha = 6, (8.0 if norm == "linf" else 96.0), (2.0 if norm == "linf" else 24.0)
    cls = SegPGD if kind == "segpgd" else CosPGD
    attack = cls(eps, alpha, steps, norm=norm, random_start=False, target="inverse" if targeted else None)
    recorder = Recorder(net)
    adv = attack(recorder, images, labels)

    theirs_losses, theirs_iterates = _authors_loop(
        net, images, (target if targeted else labels)[:, 0], kind, steps, eps / 255, alpha / 255, norm, targeted,
        num_classes,
    )  # fmt: skip
    ours_iterates = recorder.inputs[1:] + [adv]  # the network saw x_0 .. x_{T-1}
    assert len(recorder.inputs) == steps
    for t, (x_t, ours, theirs) in enumerate(zip(recorder.inputs, ours_iterates, theirs_iterates)):
        with torch.no_grad():
            logits = net(x_t)
        objective_labels = target if targeted else labels
        if kind == "segpgd":
            ours_loss = float(segpgd_loss(logits, objective_labels, t, steps, targeted)) * images.shape[0]
        else:
            ours_loss = float(cospgd_loss(logits, objective_labels, targeted))
        assert ours_loss == pytest.approx(theirs_losses[t], rel=1e-5, abs=1e-6), f"loss of step {t}"
        assert (ours - theirs).abs().max() <= 1e-5, f"iterate after step {t}"
    assert (adv - theirs_iterates[-1]).abs().max() <= 1e-5


# ------------------------------------------------------------------------------------------ weights by hand
# a 2 x 2 image, two classes; per pixel the logits, the label, the softmax p and the prediction
LOGITS = torch.tensor([[0.0, 1.0], [math.log(3.0), 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)]])  # (pixel, C)
LABELS = torch.tensor([1, 0, 1, 1])
# softmax: (1/(1+e), e/(1+e)), (0.75, 0.25), (0.75, 0.25), (0.2, 0.8); predictions 1, 0, 0, 1


def _image(values: torch.Tensor) -> torch.Tensor:
    return values.T.reshape(1, -1, 2, 2)  # (1, C, 2, 2), pixels in row-major order


def test_segpgd_weights_by_hand():
    logits, labels = _image(LOGITS), LABELS.reshape(1, 1, 2, 2)
    # step 2 of 5: lambda = 2 / 10; correct pixels (1, 2, 4) weigh 1 - lambda, the fooled pixel 3 weighs lambda
    expected = torch.tensor([0.8, 0.8, 0.2, 0.8]).reshape(1, 2, 2)
    assert torch.allclose(segpgd_weights(logits, labels, 2, 5), expected)
    # targeted at class 0: pixels 2 and 3 are there already (lambda), pixels 1 and 4 not yet (1 - lambda)
    target = torch.zeros(1, 1, 2, 2)
    assert torch.allclose(segpgd_weights(logits, target, 2, 5, targeted=True), torch.tensor([[[0.8, 0.2], [0.2, 0.8]]]))
    assert torch.allclose(segpgd_weights(logits, labels, 0, 5), torch.tensor([[[1.0, 1.0], [0.0, 1.0]]]))
    # the loss: mean over the pixels of weight * (-log p_label)
    e = math.e
    ce = [-math.log(e / (1 + e)), -math.log(0.75), -math.log(0.25), -math.log(0.8)]
    assert float(segpgd_loss(logits, labels, 2, 5)) == pytest.approx(
        (0.8 * ce[0] + 0.8 * ce[1] + 0.2 * ce[2] + 0.8 * ce[3]) / 4
    )


def test_cospgd_weights_by_hand():
    logits, labels = _image(LOGITS), LABELS.reshape(1, 1, 2, 2)
    e = math.e
    p = [(1 / (1 + e), e / (1 + e)), (0.75, 0.25), (0.75, 0.25), (0.2, 0.8)]
    cos = [pi[y] / math.hypot(*pi) for pi, y in zip(p, LABELS.tolist())]  # p_y / ||p||_2
    assert cos[1] == pytest.approx(0.75 / math.sqrt(0.625)) and cos[3] == pytest.approx(0.8 / math.sqrt(0.68))
    expected = torch.tensor(cos).reshape(1, 2, 2)
    assert torch.allclose(cospgd_weights(logits, labels), expected, atol=1e-6)
    assert torch.allclose(cospgd_weights(logits, labels, targeted=True), 1 - expected, atol=1e-6)
    ce = [-math.log(pi[y]) for pi, y in zip(p, LABELS.tolist())]
    assert float(cospgd_loss(logits, labels)) == pytest.approx(sum(c * l for c, l in zip(cos, ce)) / 4, rel=1e-6)


@pytest.mark.parametrize("num_classes", [1, 2, 3, 5])
def test_weights_equal_the_argmax_and_cosine_similarity_forms(num_classes):
    """The weights, computed without ``argmax`` over the class axis and without ``F.cosine_similarity`` (both slow on
    the CPU), equal those forms bit for bit: ``predicted_classes`` is the argmax of the two-class logits (ties, a
    zero single logit and equal logits included) and the CosPGD weights are ``cos(softmax, onehot)``."""
    gen = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(3, num_classes, 9, 11, generator=gen) * 4
    logits[0, :, :2] = 0.0  # ties
    labels = torch.randint(0, max(num_classes, 2), (3, 1, 9, 11), generator=gen)
    two = two_class_logits(logits)
    assert torch.equal(predicted_classes(logits), two.argmax(1))
    assert torch.equal(predicted_classes(logits, keepdim=True), two.argmax(1, keepdim=True))
    for step, targeted in ((0, False), (3, True)):
        lam = step / 8
        won = (two.argmax(1) == labels[:, 0]) == targeted
        assert torch.equal(segpgd_weights(logits, labels, step, 4, targeted), torch.where(won, lam, 1.0 - lam))
    probs = F.softmax(two, dim=1)
    onehot = F.one_hot(labels[:, 0], two.shape[1]).movedim(-1, 1).float()
    cos = F.cosine_similarity(probs, onehot, dim=1)
    assert torch.equal(cospgd_weights(logits, labels), cos)
    assert torch.equal(cospgd_weights(logits, labels, targeted=True), 1 - cos)


def test_single_logit_is_the_two_class_logits_zero_z():
    z = torch.randn(2, 1, 3, 3)
    labels = torch.randint(0, 2, (2, 1, 3, 3))
    two = torch.cat([torch.zeros_like(z), z], 1)
    assert torch.allclose(cospgd_weights(z, labels), cospgd_weights(two, labels))
    assert torch.equal(segpgd_weights(z, labels, 1, 4), segpgd_weights(two, labels, 1, 4))
    # the cross-entropy of (0, z) is the binary cross-entropy of z
    bce = F.binary_cross_entropy_with_logits(z, labels.float(), reduction="none")[:, 0]
    assert torch.allclose(cospgd_loss(z, labels), (cospgd_weights(z, labels) * bce).mean(), atol=1e-6)


# ------------------------------------------------------------------------------------------ property test
@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["segpgd", "cospgd"]),
    norm=st.sampled_from(["linf", "l2"]),
    spatial_dims=st.sampled_from([2, 3]),
    out_channels=st.integers(1, 3),
    targeted=st.booleans(),
    random_start=st.booleans(),
    eps_fraction=st.floats(0.0, 1.0),
    data_range=st.sampled_from([(0.0, 1.0), (-1.0, 1.0)]),
    seed=st.integers(0, 2**16),
)
def test_stay_in_ball_and_range(
    kind, norm, spatial_dims, out_channels, targeted, random_start, eps_fraction, data_range, seed
):
    torch.manual_seed(seed)
    spatial = (6, 6) if spatial_dims == 2 else (4, 4, 4)
    images, labels = attack_case(2, 1, out_channels, spatial, data_range)
    eps = eps_fraction * (32.0 if norm == "linf" else 256.0)
    cls = SegPGD if kind == "segpgd" else CosPGD
    attack = cls(eps, eps / 3, 4, norm=norm, random_start=random_start, data_range=data_range,
                 target="inverse" if targeted else None, seed=seed)  # fmt: skip
    adv = attack(_net(spatial_dims, out_channels, hidden=3, seed=seed), images, labels)
    assert_in_ball_and_range(adv, images, to_data_units(eps, "levels", data_range), norm, data_range)


# ------------------------------------------------------------------------------------------ behaviour and doors
def _threshold_net(spatial_dims: int, out_channels: int) -> nn.Module:
    """A 1x1 conv: class 0 below intensity 0.5, the last class above (logits +-20 (x - 0.5), 0 in between)."""
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(1, out_channels, 1)
    weights = [20.0] if out_channels == 1 else [-20.0, *[0.0] * (out_channels - 2), 20.0]
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).view(out_channels, 1, *[1] * spatial_dims))
        conv.bias.copy_(-0.5 * conv.weight.flatten())
    return conv.eval()


@pytest.mark.parametrize("cls", [SegPGD, CosPGD])
@pytest.mark.parametrize("spatial_dims, out_channels", [(2, 3), (3, 2), (2, 1)])
@pytest.mark.parametrize("targeted", [False, True])
def test_fool_the_network(cls, spatial_dims, out_channels, targeted):
    """Pixels within 12 levels of the threshold: a 16-level attack flips most of them (to the target, if any)."""
    net = _threshold_net(spatial_dims, out_channels)
    gen = torch.Generator().manual_seed(4)
    spatial = (10, 10) if spatial_dims == 2 else (5, 5, 5)
    images = 0.5 + (torch.rand(2, 1, *spatial, generator=gen) - 0.5) * 24 / 255
    num_classes = max(out_channels, 2)
    with torch.no_grad():
        labels = (net(images) > 0).long() if out_channels == 1 else net(images).argmax(1, keepdim=True)
    target = torch.where(labels == 0, num_classes - 1, 0)
    attack = cls(16, 4, 10, random_start=False, target=(lambda x, y: target) if targeted else None)
    with torch.no_grad():
        logits = net(attack(net, images, labels))
    pred = (logits > 0).long() if out_channels == 1 else logits.argmax(1, keepdim=True)
    if targeted:
        assert (pred == target).float().mean() > 0.9
    else:
        assert (pred == labels).float().mean() < 0.1


def test_doors_attackd_equals_the_batch_call():
    net, images = _net(), torch.rand(1, 1, 8, 8)
    labels = torch.randint(0, 3, (1, 1, 8, 8))
    attack = SegPGD(8, 2, 3, random_start=False)
    out = Attackd(keys="image", attack=attack, network=net)({"image": images[0], "label": labels[0]})
    assert torch.equal(out["image"], attack(net, images, labels)[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="norm"):
        SegPGD(8, 2, 3, norm="l1")
    with pytest.raises(ValueError, match="num_steps"):
        CosPGD(8, 2, -1)
