"""The attack losses of ``monai_ext.attacks.losses``: each entry of the name-to-loss table against a naive per-pixel
reference written with ``math``, values by hand (SEA's Jensen-Shannon divergence, masked and class-balanced masked
cross-entropy), the class weights from a label, and the batch mean and per-image reductions of ``attack_loss``."""

from __future__ import annotations

import math

import pytest
import torch

from monai_ext.attacks import (
    APGD,
    LOSSES,
    PGD,
    PIXEL_LOSSES,
    BalancedMaskedCE,
    attack_loss,
    class_frequency_weights,
    pixel_losses,
)
from monai_ext.attacks.losses import predicted_classes, two_class_logits


def _naive(logits: torch.Tensor, labels: torch.Tensor, loss: str, class_weights: list[float] | None = None) -> list:
    """The loss of each image, pixel by pixel in double precision: logits ``(B, C, H, W)``, labels ``(B, 1, H, W)``."""
    batch, num_classes = logits.shape[:2]
    out = []
    for b in range(batch):
        pixels = [(i, j) for i in range(logits.shape[2]) for j in range(logits.shape[3])]
        ys = [int(labels[b, 0, i, j]) for i, j in pixels]
        if class_weights is None:  # N / (K n_c) for the K classes present
            counts = {c: ys.count(c) for c in set(ys)}
            weights = {c: len(ys) / (len(counts) * n) for c, n in counts.items()}
        else:
            weights = dict(enumerate(class_weights))
        total = 0.0
        for (i, j), y in zip(pixels, ys):
            z = [float(logits[b, c, i, j]) for c in range(num_classes)]
            top = max(z)
            p = [math.exp(v - top) / sum(math.exp(u - top) for u in z) for v in z]
            ce = -math.log(p[y])
            correct = max(range(num_classes), key=lambda c: z[c]) == y
            if loss == "ce":
                total += ce
            elif loss == "masked_ce":
                total += ce if correct else 0.0
            elif loss == "balanced_masked_ce":
                total += weights[y] * ce if correct else 0.0
            else:  # jsd: (KL(p || m) + KL(e_y || m)) / 2, m = (p + e_y) / 2
                m = [(p[c] + (c == y)) / 2 for c in range(num_classes)]
                total += (sum(p[c] * math.log(p[c] / m[c]) for c in range(num_classes)) + math.log(1 / m[y])) / 2
        out.append(total / len(pixels))
    return out


@pytest.mark.parametrize("loss", list(PIXEL_LOSSES))
@pytest.mark.parametrize("num_classes", [2, 4])
def test_table_matches_a_naive_per_pixel_reference(loss, num_classes):
    gen = torch.Generator().manual_seed(num_classes)
    logits = torch.randn(3, num_classes, 4, 5, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, num_classes, (3, 1, 4, 5), generator=gen)
    labels[2] = 1  # an image of one class
    expected = torch.tensor(_naive(logits, labels, loss), dtype=torch.float64)
    torch.testing.assert_close(LOSSES[loss](logits, labels), expected)
    torch.testing.assert_close(attack_loss(logits, labels, loss, reduction="none"), expected)
    torch.testing.assert_close(attack_loss(logits, labels, loss), expected.mean())
    torch.testing.assert_close(pixel_losses(logits, labels, loss).flatten(1).mean(1), expected)


def test_given_class_weights_match_the_naive_reference():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 4, 4), generator=gen)
    weights = [0.2, 0.3, 0.5]
    expected = torch.tensor(_naive(logits, labels, "balanced_masked_ce", weights), dtype=torch.float64)
    loss = BalancedMaskedCE(weights)
    torch.testing.assert_close(loss(logits, labels).double(), expected.mean())
    torch.testing.assert_close(attack_loss(logits, labels, loss, reduction="none").double(), expected)


def test_sea_losses_by_hand():
    """On a 2 x 2 image with softmax (0.75, 0.25) everywhere: labels 0, 1, 0, 1 (the first and third correct)."""
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    labels = torch.tensor([[0, 1], [0, 1]]).view(1, 1, 2, 2)
    # JSD(p, e_y) = (sum_c p_c log(p_c / m_c) + log(1 / m_y)) / 2, m = (p + e_y) / 2
    right = (0.75 * math.log(0.75 / 0.875) + 0.25 * math.log(0.25 / 0.125) + math.log(1 / 0.875)) / 2
    wrong = (0.75 * math.log(0.75 / 0.375) + 0.25 * math.log(0.25 / 0.625) + math.log(1 / 0.625)) / 2
    expected = torch.tensor([[right, wrong], [right, wrong]])
    assert torch.allclose(pixel_losses(logits, labels, "jsd")[0], expected.float(), atol=1e-6)
    assert wrong < math.log(2) and right < wrong
    # masked CE: -log 0.75 on the correct pixels, 0 on the wrong ones; the mean over all four pixels
    assert torch.allclose(pixel_losses(logits, labels, "masked_ce")[0], torch.tensor([[-math.log(0.75), 0.0]] * 2))
    assert float(attack_loss(logits, labels, "masked_ce")) == pytest.approx(-math.log(0.75) / 2)


def test_balanced_masked_ce_by_hand():
    """Softmax (0.75, 0.25) everywhere, labels 0, 0, 0, 1: three correct pixels of class 0, a wrong one of class 1."""
    logits = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    labels = torch.tensor([[0, 0], [0, 1]]).view(1, 1, 2, 2)
    # weights N / (K n_c): 4 / (2 * 3) = 2/3 and 4 / (2 * 1) = 2; their mean over the pixels is 1
    weights = class_frequency_weights(labels[:, 0], 2)
    torch.testing.assert_close(weights, torch.tensor([[2 / 3, 2.0]]))
    # the mean over the classes of each class's mean masked CE: (-log 0.75 + 0) / 2
    assert float(attack_loss(logits, labels, "balanced_masked_ce")) == pytest.approx(-math.log(0.75) / 2)
    # given weights, SEA's way: the mean over the pixels of w_y times the masked CE
    assert float(BalancedMaskedCE([0.2, 0.8])(logits, labels)) == pytest.approx(0.2 * 3 * -math.log(0.75) / 4)
    # equal areas: the masked CE itself
    even = torch.tensor([[0, 1], [0, 1]]).view(1, 1, 2, 2)
    assert float(attack_loss(logits, even, "balanced_masked_ce")) == pytest.approx(
        float(attack_loss(logits, even, "masked_ce"))
    )


def test_class_frequency_weights():
    labels = torch.tensor([[0, 0, 0, 2, 2, 2, 2, 2], [1] * 8])
    weights = class_frequency_weights(labels, 4)
    torch.testing.assert_close(weights, torch.tensor([[8 / 6, 0.0, 8 / 10, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    per_pixel = torch.gather(weights, 1, labels)
    torch.testing.assert_close(per_pixel.mean(1), torch.ones(2))  # the mean weight over an image's pixels is 1


@pytest.mark.parametrize(
    "loss", [*LOSSES, BalancedMaskedCE([1.0, 2.0, 3.0]), lambda logits, labels: logits.mean()], ids=str
)
@pytest.mark.parametrize("out_channels", [1, 3])
def test_per_sample_reduction_averages_to_the_mean(loss, out_channels):
    if isinstance(loss, BalancedMaskedCE) and out_channels == 1:
        loss = BalancedMaskedCE([1.0, 2.0])
    logits = torch.randn(3, out_channels, 4, 5)
    labels = torch.randint(0, max(out_channels, 2), (3, 1, 4, 5))
    per_sample = attack_loss(logits, labels, loss, reduction="none")
    assert per_sample.shape == (3,)
    assert torch.allclose(per_sample.mean(), attack_loss(logits, labels, loss), atol=1e-6)
    assert torch.allclose(per_sample[1], attack_loss(logits[1:2], labels[1:2], loss), atol=1e-6)


def test_single_logit_is_two_class():
    z = torch.randn(2, 1, 3, 3)
    labels = torch.randint(0, 2, (2, 1, 3, 3))
    two = torch.cat([torch.zeros_like(z), z], dim=1)
    for name in PIXEL_LOSSES:
        torch.testing.assert_close(LOSSES[name](z, labels), LOSSES[name](two, labels))
    torch.testing.assert_close(
        attack_loss(z, labels), torch.nn.functional.binary_cross_entropy_with_logits(z, labels.float())
    )


@pytest.mark.parametrize("num_classes", [1, 2, 3])
def test_predicted_classes_is_the_argmax_of_two_class_logits(num_classes):
    logits = torch.randn(3, num_classes, 5, 4)
    logits[0, :, 0, 0] = 0.0  # a tie: the first class, as argmax
    expected = two_class_logits(logits).argmax(1)
    assert torch.equal(predicted_classes(logits), expected)
    assert torch.equal(predicted_classes(logits, keepdim=True), expected[:, None])


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        attack_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2), reduction="sum")
    with pytest.raises(ValueError, match="unknown loss"):
        attack_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2), loss="hinge")
    with pytest.raises(ValueError, match="non-negative"):
        BalancedMaskedCE([0.5, -1.0])
    with pytest.raises(ValueError, match="non-negative"):
        BalancedMaskedCE([0.5, float("nan")])
    with pytest.raises(ValueError, match="3 class weights"):
        BalancedMaskedCE([1.0, 1.0, 1.0])(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))
    assert repr(BalancedMaskedCE([0.25, 0.75])) == "BalancedMaskedCE(class_weights=[0.25, 0.75])"


@pytest.mark.parametrize("loss", ["masked_ce", "balanced_masked_ce", BalancedMaskedCE([0.5, 0.5])])
def test_masked_losses_refuse_a_target(loss):
    """A masked loss keeps only the pixels still classified correctly: every attack refuses it with a target."""
    with pytest.raises(ValueError, match="untargeted"):
        PGD(eps=4, alpha=1, num_steps=2, loss=loss, target=1)
    with pytest.raises(ValueError, match="untargeted"):
        APGD(eps=4, num_steps=2, track_loss=loss, target=1)
