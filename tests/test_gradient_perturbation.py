"""
Gradient perturbation (Taghanaki et al. 2019, eq. 3-6) against independent facts: a naive per-pixel ``G``, each step
lowering it, the step's L-inf norm being ``gamma``, the steps a linear segmenter needs counted by hand, batched GP
with early stop equal to GP image by image (and converged images costing no further pass), and its three doors
(dictionary transform, prepare-batch, ``Attackd`` record).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from monai_ext.attacks import GradientPerturbation, gp_objective, matches_label
from monai_ext.engines.utils import GradientPerturbationPrepareBatch
from monai_ext.transforms import Attackd, GradientPerturbationd

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_segmenter(seed: int = 0, classes: int = 2) -> nn.Module:
    """A fixed smooth nonlinear segmenter: conv 3x3, tanh, conv 3x3."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, classes, 3, padding=1)).eval()


def _linear_segmenter(scale: float = 10.0) -> nn.Module:
    """Per pixel: logit 1 - logit 0 = scale * (x - 0.5), so a pixel is class 1 exactly when x > 0.5."""
    net = nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[[[0.0]]], [[[scale]]]]))
        net.bias.copy_(torch.tensor([0.0, -scale / 2]))
    return net.eval()


def _naive_g(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """G per image by a loop over the pixels: the predicted class's logit minus the true class's."""
    out = []
    for b in range(logits.shape[0]):
        total = 0.0
        for i in range(logits.shape[2]):
            for j in range(logits.shape[3]):
                scores = logits[b, :, i, j]
                total += float(scores.max() - scores[int(labels[b, 0, i, j])])
        out.append(total)
    return out


def _data(batch: int = 3, size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, size, size, generator=gen)
    labels = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
    return images, labels


def test_objective_matches_a_naive_loop() -> None:
    net = _toy_segmenter()
    images, labels = _data()
    with torch.no_grad():
        logits = net(images)
    assert gp_objective(logits, labels).tolist() == pytest.approx(_naive_g(logits, labels), rel=1e-5)
    right = logits.argmax(1, keepdim=True)
    assert gp_objective(logits, right).abs().max() == 0  # every pixel right: G is exactly 0


def test_each_step_lowers_g() -> None:
    """GP is memoryless (the predicted class is recomputed each step): one step at a time is the whole run."""
    net, (images, labels) = _toy_segmenter(), _data()
    one_step = GradientPerturbation(gamma=0.002, num_steps=1)
    x = images
    with torch.no_grad():
        previous = _naive_g(net(x), labels)
    for _ in range(12):
        x = one_step(net, x, labels)
        with torch.no_grad():
            current = _naive_g(net(x), labels)
        assert all(c < p for c, p in zip(current, previous, strict=True)), (previous, current)
        previous = current
    whole = GradientPerturbation(gamma=0.002, num_steps=12)(net, images, labels)
    torch.testing.assert_close(whole, x, rtol=0, atol=1e-5)


def test_step_is_gamma_times_the_linf_normalised_gradient() -> None:
    net, (images, labels) = _toy_segmenter(), _data()
    gamma = 0.05
    result = GradientPerturbation(gamma=gamma, num_steps=1).perturb(net, images, labels)
    x = images.clone().requires_grad_(True)
    logits = net(x)
    predicted = logits.detach().argmax(1, keepdim=True)
    g = (logits.gather(1, predicted) - logits.gather(1, labels.long())).sum()  # the objective written out again
    (grad,) = torch.autograd.grad(g, x)
    expected = images - gamma * grad / grad.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    torch.testing.assert_close(result.images, expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(result.delta, result.images - images)
    assert result.delta.flatten(1).abs().amax(1).tolist() == pytest.approx([gamma] * 3, rel=1e-6)
    assert result.iterations.tolist() == [1, 1, 1]


def test_image_already_right_comes_back_unchanged() -> None:
    net, (images, _) = _toy_segmenter(), _data()
    with torch.no_grad():
        labels = net(images).argmax(1, keepdim=True)
    result = GradientPerturbation().perturb(net, images, labels)
    assert torch.equal(result.images, images) and not result.delta.any()
    assert result.iterations.tolist() == [0, 0, 0] and result.converged.all()


def test_steps_of_a_linear_segmenter_counted_by_hand() -> None:
    """
    With logit 1 - logit 0 = 10 (x - 0.5) per pixel, every wrong pixel has the same gradient magnitude, so each step
    moves all of them by gamma toward their side of 0.5: an image needs ceil(distance / gamma) steps for its farthest
    wrong pixel (values chosen off the boundaries), and none once right.
    """
    net, gamma = _linear_segmenter(), 0.1
    values = [[0.32, 0.90], [0.44, 0.66], [0.05, 0.97], [0.20, 0.70]]  # per image: two pixels
    labels_ = [[1, 1], [1, 0], [1, 0], [0, 1]]
    images = torch.tensor(values).view(4, 1, 1, 2)
    labels = torch.tensor(labels_, dtype=torch.float32).view(4, 1, 1, 2)
    expected = []
    for xs, ys in zip(values, labels_, strict=True):
        needed = [math.floor((0.5 - x) / gamma) + 1 if y == 1 and x < 0.5 else 0 for x, y in zip(xs, ys)]
        needed += [math.floor((x - 0.5) / gamma) + 1 if y == 0 and x > 0.5 else 0 for x, y in zip(xs, ys)]
        expected.append(max(needed))
    result = GradientPerturbation(gamma=gamma, num_steps=100).perturb(net, images, labels)
    assert result.iterations.tolist() == expected == [2, 2, 5, 0]
    assert result.converged.all()
    capped = GradientPerturbation(gamma=gamma, num_steps=3).perturb(net, images, labels)
    assert capped.iterations.tolist() == [2, 2, 3, 0] and capped.converged.tolist() == [True, True, False, True]


class _Counting(nn.Module):
    """Counts the images it is run on (forward passes times batch size)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.images = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.net(x)


def test_batched_with_early_stop_equals_image_by_image() -> None:
    torch.manual_seed(3)
    net = _Counting(_toy_segmenter(seed=2))
    images, labels = _data(batch=6, size=8, seed=4)
    with torch.no_grad():
        labels[0] = net(images[:1]).argmax(1, keepdim=True)[0]  # right already: 0 steps
        labels[1] = net(images[1:2]).argmax(1, keepdim=True)[0]
    labels[1, 0, 3, 3] = 1 - labels[1, 0, 3, 3]  # one pixel wrong: a few steps
    gp = GradientPerturbation(gamma=0.2, num_steps=15)
    net.images = 0
    batched = gp.perturb(net, images, labels)
    assert net.images == int((batched.iterations + 1).sum())  # a stopped image is never run again
    assert batched.iterations[0] == 0 and 0 < batched.iterations[1] < 15
    for i in range(6):
        alone = gp.perturb(net, images[i : i + 1], labels[i : i + 1])
        assert alone.iterations.item() == batched.iterations[i].item(), i
        assert alone.converged.item() == batched.converged[i].item(), i
        torch.testing.assert_close(alone.images[0], batched.images[i], rtol=0, atol=1e-5)


def test_dice_tolerance_single_logit_clip_and_modes() -> None:
    logits = torch.tensor([[[[1.0, -1.0, 1.0, -1.0]], [[2.0, 1.0, 0.0, 3.0]]]])  # argmax 1, 1, 0, 1
    labels = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])  # Dice of class 1: 2 * 2 / (3 + 2) = 0.8
    assert not matches_label(logits, labels).item()
    assert matches_label(logits, labels, 0.2).item() and not matches_label(logits, labels, 0.19).item()
    # a single-logit network z is the two-logit network (0, z)
    two = _toy_segmenter(seed=5)
    single = nn.Sequential(two, nn.Conv2d(2, 1, 1, bias=False)).eval()
    with torch.no_grad():
        single[1].weight.copy_(torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1))
    images, labels = _data(seed=6)
    a = GradientPerturbation(0.05, 5).perturb(single, images, labels)
    b = GradientPerturbation(0.05, 5).perturb(nn.Sequential(single, _PrependZero()), images, labels)
    torch.testing.assert_close(a.images, b.images)
    assert torch.equal(a.iterations, b.iterations)
    # clipping and modes: the network's training mode and gradients are left alone
    two.train()
    clipped = GradientPerturbation(1.0, 5, clip_range=(0, 1))(two, images, labels)
    assert clipped.min() >= 0 and clipped.max() <= 1 and two.training
    assert all(p.grad is None for p in two.parameters())
    with pytest.raises(ValueError, match="outside data_range"):
        GradientPerturbation(clip_range=(0, 1))(two, images + 2, labels)
    with pytest.raises(ValueError, match="class indices in \\[0, 1\\]"):
        GradientPerturbation()(two, images, labels * 3)
    with pytest.raises(ValueError, match="gamma"):
        GradientPerturbation(gamma=0)


class _PrependZero(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(z), z], 1)


def test_doors_give_the_same_perturbation() -> None:
    net, (images, labels) = _toy_segmenter(), _data()
    gp = GradientPerturbation(gamma=0.1, num_steps=4)
    direct = gp.perturb(net, images, labels)
    item = {"image": MetaTensor(images[0], meta={"filename_or_obj": "a.png"}), "label": labels[0]}
    out = GradientPerturbationd("image", network=net, perturbation=gp, output_keys="gp", delta_keys="delta")(item)
    assert torch.equal(out["image"], item["image"]) and isinstance(out["gp"], MetaTensor)
    assert out["gp"].meta["filename_or_obj"] == "a.png"
    torch.testing.assert_close(out["gp"].as_tensor(), direct.images[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["delta"], direct.delta[0], rtol=0, atol=1e-6)
    assert out["gp_gp_iterations"].item() == direct.iterations[0].item()
    batch = GradientPerturbationd("image", network=net, perturbation=gp, batched=True)(
        {"image": images, "label": labels}
    )
    torch.testing.assert_close(batch["image"], direct.images)
    assert torch.equal(batch["image_gp_iterations"], direct.iterations)
    prepare = GradientPerturbationPrepareBatch(net, gp)
    prepared, kept = prepare({"image": images, "label": labels})
    torch.testing.assert_close(prepared, direct.images)
    assert torch.equal(kept, labels)
    assert prepare.summary()["images"] == 3 and prepare.iterations == direct.iterations.tolist()
    recorded = Attackd("image", attack=gp, network=net, record_key="gp")(dict(item))
    assert recorded["gp"]["record"] == {
        "iterations": direct.iterations[0].item(),
        "converged": bool(direct.converged[0]),
    }
    np.testing.assert_allclose(recorded["image"].numpy(), direct.images[0].numpy(), atol=1e-6)
