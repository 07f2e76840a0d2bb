"""Tests of monai_ext.engines.AdversarialSegmentationTrainer: who updates what, the loss terms, the baseline mode."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.losses import DiceCELoss
from monai.utils import AdversarialIterationEvents
from torch.utils.data import DataLoader

from monai_ext.engines import LOSS_TERMS, AdversarialSegmentationTrainer, loss_terms
from monai_ext.networks.blocks import SelfAttention
from monai_ext.networks.nets import SAGANDiscriminator, SAGANGenerator

NUM_CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster than two, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _loader(num: int = 4, batch_size: int = 2) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = [
        {"image": torch.rand(1, 16, 16, generator=g), "label": torch.randint(0, NUM_CLASSES, (1, 16, 16), generator=g)}
        for _ in range(num)
    ]
    return DataLoader(data, batch_size=batch_size)


def _parts(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    gen = SAGANGenerator(2, 1, NUM_CLASSES, channels=(4, 8), attention_levels=(1,))
    disc = SAGANDiscriminator(2, 1, NUM_CLASSES, channels=(4, 8), attention_levels=(0,))
    for m in [*gen.modules(), *disc.modules()]:
        if isinstance(m, SelfAttention):
            with torch.no_grad():
                m.gamma.fill_(0.5)  # at gamma = 0 only gamma would get a gradient, and every weight should move
    return {
        "network": gen,
        "optimizer": torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.0, 0.9)),
        "discriminator": disc,
        "d_optimizer": torch.optim.Adam(disc.parameters(), lr=4e-3, betas=(0.0, 0.9)),
    }


def _trainer(parts: dict, epoch_length: int = 1, **kwargs) -> AdversarialSegmentationTrainer:
    kwargs.setdefault("adversarial_weight", 0.5)
    return AdversarialSegmentationTrainer(
        device="cpu",
        max_epochs=1,
        epoch_length=epoch_length,
        train_data_loader=_loader(),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        **parts,
        **kwargs,
    )


def _params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _changed(before: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, bool]:
    return {n: not torch.equal(before[n], p.detach()) for n, p in net.named_parameters()}


def _unchanged(before: dict[str, torch.Tensor], net: torch.nn.Module) -> list[str]:
    return [n for n, changed in _changed(before, net).items() if not changed]


def test_one_iteration_updates_both_networks():
    parts = _parts()
    g0, d0 = _params(parts["network"]), _params(parts["discriminator"])
    trainer = _trainer(parts)
    trainer.run()
    assert trainer.state.iteration == 1
    assert not _unchanged(g0, parts["network"])
    assert not _unchanged(d0, parts["discriminator"])
    out = loss_terms(trainer.state.output)
    assert set(out) == set(LOSS_TERMS)
    assert out["loss"] == pytest.approx(out["seg_loss"] + 0.5 * out["adv_loss"], rel=1e-5)
    assert all(p.requires_grad for p in parts["discriminator"].parameters())  # frozen only during G's step


@pytest.mark.parametrize("frozen", ["optimizer", "d_optimizer"])
def test_each_network_moves_only_through_its_own_optimizer(frozen):
    """With one optimizer's step disabled, that network's parameters do not move at all."""
    parts = _parts()
    parts[frozen].step = lambda *args, **kwargs: None
    g0, d0 = _params(parts["network"]), _params(parts["discriminator"])
    _trainer(parts).run()
    g_changed, d_changed = _changed(g0, parts["network"]), _changed(d0, parts["discriminator"])
    if frozen == "optimizer":
        assert not any(g_changed.values()) and all(d_changed.values()), d_changed
    else:
        assert not any(d_changed.values()) and all(g_changed.values()), g_changed


def test_gradients_stay_with_their_network():
    """D's gradients are those of D's loss alone (G's adversarial backward adds none), and D's loss gives G none."""
    parts = _parts()
    gen, disc = parts["network"], parts["discriminator"]
    trainer = _trainer(parts)
    seen: dict = {}

    @trainer.on(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
    def _record(engine):
        seen["d"] = {n: p.grad.clone() for n, p in disc.named_parameters()}
        seen["g"] = [p.grad for p in gen.parameters()]

    trainer.run()
    assert all(g is None or not g.any() for g in seen["g"])  # the fake pairs are detached for D's step
    for n, p in disc.named_parameters():
        assert torch.equal(p.grad, seen["d"][n]), n
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in gen.parameters())


def test_zero_weight_trains_the_generator_alone():
    parts = _parts()
    calls = []
    parts["discriminator"].register_forward_hook(lambda *args: calls.append(1))
    g0, d0 = _params(parts["network"]), _params(parts["discriminator"])
    trainer = _trainer(parts, adversarial_weight=0.0)
    trainer.run()
    assert not calls and not any(_changed(d0, parts["discriminator"]).values())
    assert not _unchanged(g0, parts["network"])
    out = loss_terms(trainer.state.output)
    assert set(out) == {"loss", "seg_loss"} and out["loss"] == out["seg_loss"]
    parts = _parts()
    _trainer({"network": parts["network"], "optimizer": parts["optimizer"]}, adversarial_weight=0).run()  # no D


def test_loss_terms_every_iteration():
    trainer = _trainer(_parts(), epoch_length=2)
    logged = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: logged.append(loss_terms(engine.state.output)))
    trainer.run()
    assert len(logged) == 2 and all(set(terms) == set(LOSS_TERMS) for terms in logged)
    assert isinstance(trainer.state.output, list)  # decollated, as MONAI's handlers expect


def test_bad_arguments():
    parts = _parts()
    with pytest.raises(ValueError, match="adversarial_weight"):
        _trainer(parts, adversarial_weight=-0.1)
    with pytest.raises(ValueError, match="adversarial_weight"):
        _trainer(parts, adversarial_weight=float("nan"))
    with pytest.raises(ValueError, match="discriminator"):
        _trainer({"network": parts["network"], "optimizer": parts["optimizer"]}, adversarial_weight=0.1)
    shared = torch.optim.Adam([*parts["network"].parameters(), *parts["discriminator"].parameters()])
    with pytest.raises(ValueError, match="optimizer holds"):
        _trainer({**parts, "optimizer": shared})


def test_bad_labels():
    parts = _parts()
    trainer = _trainer(parts)
    bad = [{"image": torch.rand(1, 16, 16), "label": torch.full((1, 16, 16), 3.0)}] * 2
    trainer.data_loader = DataLoader(bad, batch_size=2)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\].*\[3, 3\]"):
        trainer.run()
