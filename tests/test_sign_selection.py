"""
Sign-selection FGSM (method 2 of the robust training paper): the exhaustive search against a brute-force loop over all
``3^C`` sign vectors, ties to fewer non-zero signs, greedy equal to exhaustive on a separable loss, recorded signs that
rebuild the image, candidate losses against ``attack_loss``, and bounded forward passes.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet

from monai_ext.attacks import SignSelectionFGSM, attack_loss
from monai_ext.attacks.sign_selection import (
    apply_signs,
    candidate_losses,
    exhaustive_signs,
    greedy_signs,
    sign_combinations,
)

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.05


class Recording(torch.nn.Module):
    """The network, recording the batch size of each forward pass."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.sizes = network, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.network(x)


def _unet(num_classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(2, 1, num_classes, channels=(4, 8), strides=(2,), num_res_units=0).eval()


def _batch(num_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 12, 12, generator=gen), torch.randint(0, num_classes, (2, 1, 12, 12), generator=gen)


def _brute_force(network, images, labels, num_classes):
    """Per image: a_c from its own gradient, then one forward per sign vector; the lowest loss, ties as documented."""
    chosen = []
    for x, y in zip(images, labels):
        x = x[None]
        directions = []
        for c in range(num_classes):
            xg = x.clone().requires_grad_(True)
            target = torch.full((1, *x.shape[2:]), c, dtype=torch.long)
            (grad,) = torch.autograd.grad(F.cross_entropy(network(xg), target), xg)
            directions.append(EPS * grad.sign())
        best = None
        for signs in itertools.product((-1, 0, 1), repeat=num_classes):
            candidate = (x + sum(s * a for s, a in zip(signs, directions))).clamp(0, 1)
            with torch.no_grad():
                loss = F.cross_entropy(network(candidate), y[None, 0].long()).item()
            key = (loss, sum(s != 0 for s in signs), signs)
            best = key if best is None or key < best else best
        chosen.append(best)
    return chosen


def test_sign_combinations() -> None:
    table = sign_combinations(3)
    assert table.shape == (27, 3) and len({tuple(r) for r in table.tolist()}) == 27
    assert table[0].tolist() == [0, 0, 0] and set(table.flatten().tolist()) == {-1, 0, 1}
    nonzero = (table != 0).sum(dim=1).tolist()
    assert nonzero == sorted(nonzero)


def test_exhaustive_finds_the_brute_force_minimum() -> None:
    """C = 3 (27 candidates), two images, chunks of 5 candidates (chunks that span both images)."""
    network, (images, labels) = _unet(), _batch()
    recording = Recording(network)
    attack = SignSelectionFGSM(EPS, chunk_size=5, unit="fraction")
    adv, records = attack.with_record(recording, images, labels)
    expected = _brute_force(network, images, labels, 3)
    for record, (loss, _, signs) in zip(records, expected):
        assert tuple(record["signs"]) == signs
        assert record["loss"] == pytest.approx(loss, abs=1e-5)
    assert max(recording.sizes) <= 5  # memory bounded by the chunk
    assert sum(recording.sizes) == 2 + 3 * 2 + 2 * 27 + 2  # class count, 3 gradients, candidates, clean losses
    chosen = torch.tensor([signs for _, _, signs in expected])
    torch.testing.assert_close(attack.apply(network, images, chosen), adv, rtol=0, atol=0)


def test_ties_go_to_fewer_nonzero_signs() -> None:
    """A network blind to its input: every candidate has the clean loss, so no sign is set."""
    blind = torch.nn.Conv2d(1, 3, kernel_size=1)
    with torch.no_grad():
        blind.weight.zero_()
    images, labels = _batch()
    for search in ("exhaustive", "greedy"):
        records = SignSelectionFGSM(EPS, search=search, unit="fraction").with_record(blind, images, labels)[1]
        assert all(r["signs"] == [0, 0, 0] and r["loss"] == r["clean_loss"] for r in records)


@pytest.mark.parametrize("seed", range(5))
def test_greedy_equals_exhaustive_on_a_separable_loss(seed: int) -> None:
    """A pixel-wise network and directions on disjoint pixels: the loss is a sum of one term per sign."""
    gen = torch.Generator().manual_seed(seed)
    num_classes, size = 4, 8
    network = torch.nn.Conv2d(1, num_classes, kernel_size=1)
    with torch.no_grad():
        network.weight.copy_(torch.randn(num_classes, 1, 1, 1, generator=gen) * 5)
        network.bias.copy_(torch.randn(num_classes, generator=gen))
    images = torch.rand(3, 1, size, size, generator=gen) * 0.6 + 0.2
    labels = torch.randint(0, num_classes, (3, 1, size, size), generator=gen)
    owner = torch.randint(0, num_classes, (size, size), generator=gen)  # the one class moving each pixel
    magnitude = torch.rand(3, num_classes, 1, size, size, generator=gen) * 0.2
    directions = torch.stack([magnitude[:, c] * (owner == c) for c in range(num_classes)], dim=1)
    args = (network, images, labels, directions, (0.0, 1.0))
    exhaustive, greedy = exhaustive_signs(*args, chunk_size=7), greedy_signs(*args, chunk_size=7)
    assert torch.equal(greedy[0], exhaustive[0])
    torch.testing.assert_close(greedy[1], exhaustive[1])


def test_greedy_is_linear_in_the_classes() -> None:
    network, (images, labels) = Recording(_unet(num_classes=4)), _batch(4)
    SignSelectionFGSM(EPS, search="greedy", chunk_size=100, unit="fraction")(network, images, labels)
    assert sum(network.sizes) == 2 + 4 * 2 + 2 * (1 + 2 * 4) + 2


@pytest.mark.parametrize("loss", ["ce", "dice", "callable"])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_candidate_losses_are_attack_loss_per_candidate(loss: str, num_classes: int) -> None:
    """Each candidate's loss is ``attack_loss`` of that candidate image alone (one loss module for every attack)."""
    if loss == "callable":
        loss = lambda logits, labels: (logits - labels).abs().mean()
    classes = max(num_classes, 2)
    network, (images, labels) = _unet(num_classes), _batch(classes)
    directions = EPS * torch.randn(2, classes, *images.shape[1:], generator=torch.Generator().manual_seed(2))
    rows = sign_combinations(classes)[:5]
    losses = candidate_losses(network, images, labels, directions, rows, (0.0, 1.0), loss, chunk_size=4)
    with torch.no_grad():
        for b, k in itertools.product(range(2), range(len(rows))):
            candidate = apply_signs(images[b : b + 1], directions[b : b + 1], rows[k : k + 1], (0.0, 1.0))
            expected = attack_loss(network(candidate), labels[b : b + 1], loss)
            torch.testing.assert_close(losses[b, k], expected)


def test_records_rebuild_the_image_and_settings() -> None:
    network, (images, labels) = _unet(4), _batch(4)
    attack = SignSelectionFGSM(2, search="greedy")
    adv, records = attack.with_record(network, images, labels)
    assert all(r["loss"] <= r["clean_loss"] for r in records)
    assert (adv - images).abs().max() <= 4 * 2 / 255 + 1e-6  # at most eps per non-zero sign
    torch.testing.assert_close(attack.apply(network, images, [r["signs"] for r in records]), adv, rtol=0, atol=0)
    assert torch.equal(attack(network, images, labels), adv)
    assert attack.settings() == {"eps": 2, "unit": "levels", "data_range": (0.0, 1.0), "loss": "ce",
                                 "search": "greedy", "chunk_size": 64}  # fmt: skip
    with pytest.raises(ValueError, match="signs of shape"):
        attack.apply(network, images, [[0, 1]] * 2)
    with pytest.raises(ValueError, match="search"):
        SignSelectionFGSM(2, search="random")
