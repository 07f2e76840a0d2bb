"""WorstCaseAttack: per image never better for the network than any of its attacks, the winner recorded; Dice by
hand; the reported ensemble."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_ext.attacks import APGD, PGD, CosPGD, IterativeFGSM, SegPGD, WorstCaseAttack, dice_score, ensemble_attack
from monai_ext.engines.utils import AdversarialPrepareBatch

torch.set_num_threads(1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 3, 3, padding=1)).eval()


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(n, 1, 10, 10, generator=gen)
    with torch.no_grad():
        labels = _net()(images).argmax(1, keepdim=True)  # every pixel right before the attack
    return images, labels


def test_dice_score_by_hand():
    # 2 x 2, three classes; image 0: prediction (1, 1, 2, 0) vs labels (1, 2, 2, 0)
    pred = torch.tensor([[1, 1], [2, 0]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1)[None].float()
    labels = torch.tensor([[[[1, 2], [2, 0]]]])
    # class 1: 2 * 1 / (2 + 1) = 2/3; class 2: 2 * 1 / (1 + 2) = 2/3
    assert torch.allclose(dice_score(logits, labels), torch.tensor([2 / 3], dtype=torch.float64))
    # a single logit: foreground where > 0; empty prediction and empty labels count 1, a missed class 0
    z = torch.tensor([[[[1.0, -1.0], [-1.0, -1.0]]], [[[-1.0, -1.0], [-1.0, -1.0]]], [[[-1.0] * 2] * 2]])
    y = torch.tensor([[[[1, 1], [0, 0]]], [[[0, 0], [0, 0]]], [[[1, 0], [0, 0]]]])
    assert torch.allclose(dice_score(z, y), torch.tensor([2 / 3, 1.0, 0.0], dtype=torch.float64))


def test_never_better_than_any_member_and_records_the_winner():
    net, (images, labels) = _net(), _batch()
    members = [
        IterativeFGSM(4, target="inverse"),
        PGD(4, 1, 5, random_start=False),
        APGD(4, 5, loss="jsd"),
        SegPGD(4, 1, 5, random_start=False),
        CosPGD(4, 1, 5, random_start=False),
    ]
    ensemble = WorstCaseAttack(members)
    adv = ensemble(net, images, labels)
    with torch.no_grad():
        ours = dice_score(net(adv), labels)
        each = torch.stack([dice_score(net(member(net, images, labels)), labels) for member in members])
    assert (ours <= each.min(0).values + 1e-7).all()
    assert torch.equal(ours, each[ensemble.winners, torch.arange(len(images))])
    assert sum(ensemble.wins) == len(images) and ensemble.names[2] == "APGD"
    # ties go to the earlier attack: two copies of one attack, the first always wins
    twice = WorstCaseAttack([members[1], members[1]])
    twice(net, images, labels)
    assert twice.winners.tolist() == [0] * len(images)


def test_any_score_and_the_engine_door():
    net, (images, labels) = _net(), _batch(2)
    scores = iter([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])  # the first attack's, then the second's
    ensemble = WorstCaseAttack([lambda n, x, y: x * 0.5, lambda n, x, y: x * 0.25], score=lambda lo, la: next(scores))
    adv = AdversarialPrepareBatch(ensemble, net)({"image": images, "label": labels})[0]
    assert ensemble.winners.tolist() == [1, 0]
    assert torch.equal(adv, torch.stack([images[0] * 0.25, images[1] * 0.5]))


def test_reported_ensemble():
    ensemble = ensemble_attack(8, num_steps=10)
    assert ensemble.names == ["APGD", "APGD", "APGD", "SegPGD", "CosPGD"]
    assert list(ensemble.win_counts()) == ["APGD (ce)", "APGD (jsd)", "APGD (masked_ce)", "SegPGD", "CosPGD"]
    same = PGD(4, 1, 5, random_start=False)
    assert list(WorstCaseAttack([same, same, lambda n, x, y: x]).win_counts()) == [
        "PGD (ce)",
        "PGD (ce) #2",
        "function",
    ]
    assert [a.loss for a in ensemble.attacks[:3]] == ["ce", "jsd", "masked_ce"]
    assert all(a.target is None and a.eps == 8 for a in ensemble.attacks)
    assert ensemble.settings()["attacks"][3]["alpha"] == pytest.approx(2.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        WorstCaseAttack([])
    with pytest.raises(ValueError, match="score"):
        WorstCaseAttack([PGD(4, 1, 3)], score=3)
