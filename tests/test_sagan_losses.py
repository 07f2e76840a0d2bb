"""Tests of monai_ext.losses.gan: the hinge losses of SAGAN, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from monai_ext.losses import HingeDiscriminatorLoss, HingeGeneratorLoss


def test_discriminator_hinge_by_hand():
    real = torch.tensor([[2.0], [0.5], [-1.0]])  # relu(1 - real) = 0, 0.5, 2
    fake = torch.tensor([[-3.0], [0.0], [1.5]])  # relu(1 + fake) = 0, 1, 2.5
    torch.testing.assert_close(HingeDiscriminatorLoss()(real, fake), torch.tensor(2.5 / 3 + 3.5 / 3))
    torch.testing.assert_close(HingeDiscriminatorLoss("sum")(real, fake), torch.tensor(6.0))
    torch.testing.assert_close(HingeDiscriminatorLoss("none")(real, fake), torch.tensor([[0.0], [1.5], [4.5]]))


def test_discriminator_hinge_margins_stop_gradients():
    real = torch.tensor([2.0, 0.5], requires_grad=True)
    fake = torch.tensor([-2.0, -0.5], requires_grad=True)
    HingeDiscriminatorLoss("sum")(real, fake).backward()
    torch.testing.assert_close(real.grad, torch.tensor([0.0, -1.0]))  # beyond the margin +1: no gradient
    torch.testing.assert_close(fake.grad, torch.tensor([0.0, 1.0]))  # beyond the margin -1: no gradient


def test_generator_hinge_by_hand():
    fake = torch.tensor([[-3.0], [0.0], [1.5]], requires_grad=True)
    loss = HingeGeneratorLoss()(fake)
    torch.testing.assert_close(loss, torch.tensor(0.5))
    loss.backward()
    torch.testing.assert_close(fake.grad, torch.full((3, 1), -1.0 / 3))  # unbounded: always pushes scores up
    torch.testing.assert_close(HingeGeneratorLoss("sum")(fake), torch.tensor(1.5), check_device=False)
    torch.testing.assert_close(HingeGeneratorLoss("none")(fake.detach()), -fake.detach())


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        HingeDiscriminatorLoss("max")
    with pytest.raises(ValueError, match="reduction"):
        HingeGeneratorLoss("batch")
    with pytest.raises(ValueError, match="one shape"):
        HingeDiscriminatorLoss("none")(torch.zeros(2, 1), torch.zeros(3, 1))
