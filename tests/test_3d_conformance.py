"""
Everything that claims 3D, run in 3D (issue 20, item 5): every attack exported by ``monai_ext.attacks`` (the list is
read from its ``__all__``, so a new attack class must be added here), ``Attackd``, ``RobustnessSweep``,
``shared_sweep``, the ProtoSeg metrics and handlers, the NLCE block and ``NLCEUNet``, each on a small volume and each
against facts computed here: naive cross-entropy, Dice and Jaccard, prototypes from block means, an explicit
``N x N`` softmax.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import BasicUNet, UNet
from monai.transforms import Activationsd, Compose
from torch import nn

from monai_ext import attacks
from monai_ext.engines import RobustnessSweep
from monai_ext.handlers import (
    FeatureRecorderHandler,
    MeanSAScoreHandler,
    OutputDiceHandler,
    ProtoSegSaver,
    SAMPlotHandler,
    SAScoreHandler,
)
from monai_ext.losses import ProtoSegLoss
from monai_ext.metrics import (
    MeanSAScoreMetric,
    SAScoreMetric,
    VarianceOfGradients,
    compute_layer_sa_scores,
    compute_prototypes,
    compute_sa_score,
    mean_sa_score,
    protoseg,
    segmentation_ability_map,
)
from monai_ext.networks.blocks import NLCE, NonLocalBlock
from monai_ext.networks.nets import NLCEUNet
from monai_ext.networks.utils import BASIC_UNET_LAYERS
from monai_ext.transforms import Attackd, GradientPerturbationd

pytestmark = pytest.mark.usefixtures("one_thread")

BATCH, SPATIAL, CLASSES = 2, (16, 16, 12), 3  # a small, non-cubic volume: a transposed axis shows
EPS = 16.0  # levels: 16 / 255 of the range
LEVEL = 1.0 / 255
SLIDING_WINDOW = SlidingWindowInferer(roi_size=(8, 8, 8), sw_batch_size=3, overlap=0.25, mode="gaussian")


# --------------------------------------------------------------------------------------------------------- helpers


def _untrained_unet3d(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(3, 1, CLASSES, channels=(4, 8), strides=(2,), num_res_units=1, norm="batch", dropout=0.2)


@functools.cache
def _trained_state() -> dict[str, torch.Tensor]:
    """A few Adam steps on one batch: a network whose predictions follow the volumes (an attack must then undo
    them), with running statistics that are not the initial ones."""
    net = _untrained_unet3d().train()
    images, labels = volume_batch(seed=10)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels[:, 0]).backward()
        optimizer.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


def unet3d() -> UNet:
    """A tiny MONAI 3D UNet with batch norm and dropout (a mode or a running statistic that changes shows), trained
    for a few steps; a new object each call."""
    net = _untrained_unet3d()
    net.load_state_dict(_trained_state())
    return net


def volume_batch(seed: int = 0, batch: int = BATCH, spatial: tuple[int, ...] = SPATIAL, classes: int = CLASSES):
    """Images in [0, 1] that follow their labels (a box of class 1, a slab of class 2) plus noise; every class is
    present in every volume. ``(images (B, 1, *spatial), labels (B, 1, *spatial) long)``."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, 1, *spatial, dtype=torch.long)
    for b in range(batch):
        d, h, w = (s // 4 + b for s in spatial)
        labels[b, 0, d : d + spatial[0] // 2, h : h + spatial[1] // 2, w : w + spatial[2] // 2] = 1
        if classes > 2:
            labels[b, 0, :, :, : 2 + b] = 2
    images = (0.3 * labels.float() + 0.4 * torch.rand(batch, 1, *spatial, generator=gen)).clamp(0, 1)
    images[:, :, 0] = 0.0  # values on both bounds of the range: clipping must hold there
    images[:, :, -1] = 1.0
    return images, labels


def naive_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The cross-entropy per image, ``-log softmax(logits)_y`` averaged over the voxels: ``(B,)``."""
    logp = logits.double() - torch.logsumexp(logits.double(), dim=1, keepdim=True)
    return -logp.gather(1, labels.long()).flatten(1).mean(1)


def naive_dice(pred: torch.Tensor, labels: torch.Tensor, classes: int, empty: float = 1.0) -> torch.Tensor:
    """Dice per image and foreground class of class-index maps ``(B, 1, *spatial)``: ``(B, classes - 1)``; a class
    absent from both counts ``empty``."""
    rows = []
    for p, t in zip(pred, labels):
        row = []
        for c in range(1, classes):
            pc, tc = p == c, t == c
            total = int(pc.sum() + tc.sum())
            row.append(2.0 * int((pc & tc).sum()) / total if total else empty)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def naive_jaccard(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Jaccard per image and foreground class, ``(B, classes - 1)`` (every class present in the labels)."""
    return torch.tensor(
        [[int(((p == c) & (t == c)).sum()) / int(((p == c) | (t == c)).sum()) for c in range(1, classes)]
         for p, t in zip(pred, labels)],
        dtype=torch.float64,
    )  # fmt: skip


def gp_value(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The objective of gradient perturbation per image: the sum over voxels of max logit minus true-class logit."""
    logits = logits.double()
    return (logits.amax(1, keepdim=True) - logits.gather(1, labels.long())).flatten(1).sum(1)


def eval_logits(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The logits of a copy of ``network`` in eval mode (the network itself is left alone)."""
    with torch.no_grad():
        return copy.deepcopy(network).eval()(images)


def sliding_window_logits(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The logits of a copy of ``network`` in eval mode through MONAI's ``sliding_window_inference`` with the
    settings of :data:`SLIDING_WINDOW`."""
    with torch.no_grad():
        return sliding_window_inference(images, (8, 8, 8), 3, copy.deepcopy(network).eval(), 0.25, "gaussian")


def snapshot(network: nn.Module) -> tuple[list[bool], dict[str, torch.Tensor]]:
    return [m.training for m in network.modules()], {k: v.clone() for k, v in network.state_dict().items()}


# ----------------------------------------------------------------------------------------------- the attack table


def loss_toward(target: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """An objective that should go down: the CE to the target labels ``target(labels)``."""
    return lambda logits, labels: naive_ce(logits, target(labels))


def ce_up(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return naive_ce(logits, labels)


@dataclass
class Case:
    """One attack configuration: how to build it, its ball (``None``: none), the per-image objective that should
    move, and whether it should go ``"up"`` or ``"down"`` (``"never_up"``: down or equal)."""

    build: Callable[[], Callable]
    norm: str | None
    radius: float | None  # in data units
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    direction: str = "up"


INVERSE = loss_toward(lambda y: (y + 1) % CLASSES)
LAST_CLASS = loss_toward(lambda y: torch.full_like(y, CLASSES - 1))
TO_ZERO = loss_toward(torch.zeros_like)

CASES: dict[str, Case] = {
    "FGSM": Case(lambda: attacks.FGSM(EPS), "linf", EPS * LEVEL, ce_up),
    "FGSM-dice": Case(lambda: attacks.FGSM(EPS, loss="dice"), "linf", EPS * LEVEL, ce_up),
    "IterativeFGSM": Case(lambda: attacks.IterativeFGSM(EPS, alpha=4, num_steps=5), "linf", EPS * LEVEL, ce_up),
    "IterativeFGSM-inverse": Case(
        lambda: attacks.IterativeFGSM(EPS, alpha=4, num_steps=5, target="inverse"), "linf", EPS * LEVEL, INVERSE, "down"
    ),
    "PGD": Case(lambda: attacks.PGD(EPS, 4, 5, seed=0), "linf", EPS * LEVEL, ce_up),
    "PGD-l2": Case(lambda: attacks.PGD(255.0, 100.0, 5, norm="l2", seed=0), "l2", 1.0, ce_up),
    "PGD-target0": Case(
        lambda: attacks.PGD(EPS, 4, 5, target=0, random_start=False), "linf", EPS * LEVEL, TO_ZERO, "down"
    ),
    "SegPGD": Case(lambda: attacks.SegPGD(EPS, 4, 5, seed=0), "linf", EPS * LEVEL, ce_up),
    "CosPGD": Case(lambda: attacks.CosPGD(EPS, 4, 5, seed=0), "linf", EPS * LEVEL, ce_up),
    "APGD": Case(lambda: attacks.APGD(EPS, num_steps=5), "linf", EPS * LEVEL, ce_up),
    "APGD-l2-jsd": Case(lambda: attacks.APGD(255.0, num_steps=5, norm="l2", loss="jsd"), "l2", 1.0, ce_up),
    # one ball per pass (the default): each pass within eps of the last, the whole chain within CLASSES eps
    "LayeredPGD": Case(
        lambda: attacks.LayeredPGD(EPS, 4, num_steps=4), "linf", CLASSES * EPS * LEVEL, LAST_CLASS, "down"
    ),
    # the signs minimise the loss on the true labels (the clean image wins a tie): the ball is checked per image
    "SignSelectionFGSM": Case(lambda: attacks.SignSelectionFGSM(EPS), "linf", CLASSES * EPS * LEVEL, ce_up, "never_up"),
    # no ball: clipped to the range, the objective it descends checked
    "GradientPerturbation": Case(
        lambda: attacks.GradientPerturbation(0.02, 5, clip_range=(0, 1)), None, None, gp_value, "down"
    ),
    "WorstCaseAttack": Case(lambda: attacks.ensemble_attack(EPS, num_steps=2), "linf", EPS * LEVEL, ce_up),
    # no ball: VAFA's bound is SSIM (tests/test_vafa.py checks it against MONAI's SSIMMetric)
    "VAFA": Case(
        lambda: attacks.VAFA(q_max=20, block_size=4, num_steps=5, ssim_threshold=0.5, loss="ce"), None, None, ce_up
    ),
}


def _case_class(name: str) -> str:
    return name.split("-")[0]


def is_attack_class(cls: object) -> bool:
    """An attack class: a concrete subclass of ``Attack``, or a class whose instances are called as
    ``attack(network, images, labels)`` (gradient perturbation, the worst-case ensemble)."""
    if not inspect.isclass(cls) or inspect.isabstract(cls):
        return False
    if issubclass(cls, attacks.Attack):
        return True
    try:
        params = list(inspect.signature(cls.__call__).parameters)
    except (TypeError, ValueError):
        return False
    return params[1:4] == ["network", "images", "labels"]


def test_every_exported_attack_is_parametrised():
    """An attack class exported by ``monai_ext.attacks`` fails here until it has a case in ``CASES``."""
    exported = {name for name in attacks.__all__ if is_attack_class(getattr(attacks, name))}
    covered = {_case_class(name) for name in CASES}
    assert not exported - covered, f"exported attacks without a 3D case here: {sorted(exported - covered)}"
    assert covered <= exported  # the detection finds every attack of the table
    for name, case in CASES.items():  # and a case builds what it names
        assert type(case.build()).__name__ == _case_class(name), name
    assert not is_attack_class(attacks.AttackObjective) and not is_attack_class(attacks.SharedTrajectories)
    assert {"ensemble_attack", "shared_sweep"} <= set(attacks.__all__)  # the functions tested below


@pytest.mark.parametrize("through", ["network", "sliding_window"])
@pytest.mark.parametrize("name", list(CASES))
def test_attack_in_3d(name: str, through: str):
    """Every attack on a volume, on the network itself or, as a bundle's evaluator runs a 3D network, through a
    gaussian-blended sliding window of 8 x 8 x 8 windows (handed over as an ``InfererNetwork``)."""
    case = CASES[name]
    network = unet3d()
    network.train()
    network.model[1].eval()  # a module frozen in eval mode stays so
    images, labels = volume_batch()
    modes, state = snapshot(network)
    seen = []  # per forward pass: whether any module was in training mode, and the input's shape

    def record_forward(module: nn.Module, args: tuple) -> None:
        seen.append((any(m.training for m in module.modules()), args[0].shape))

    hook = network.register_forward_pre_hook(record_forward)
    attack = case.build()
    target = network if through == "network" else attacks.InfererNetwork(network, SLIDING_WINDOW)
    record = None
    try:
        if name == "SignSelectionFGSM":
            adv, record = attack.with_record(target, images, labels)
        else:
            adv = attack(target, images, labels)
    finally:
        hook.remove()
    # the output: the input's type, shape, dtype; detached; in the data range and the attack's ball
    assert type(adv) is torch.Tensor and adv.shape == images.shape and adv.dtype == images.dtype
    assert not adv.requires_grad and torch.isfinite(adv).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    delta = (adv - images).double()
    if case.norm == "linf":
        assert delta.abs().max() <= case.radius + 1e-6
    elif case.norm == "l2":
        assert delta.flatten(1).norm(dim=1).max() <= case.radius + 1e-5
    if record is not None:  # sign selection: at most eps per non-zero sign, per image
        for b, r in enumerate(record):
            nonzero = sum(s != 0 for s in r["signs"])
            assert delta[b].abs().max() <= nonzero * EPS * LEVEL + 1e-6
    assert not torch.equal(adv, images)
    # the network: run on the whole volume or its windows, only in eval mode; its modes, weights, buffers and
    # gradients untouched
    window = images.shape[2:] if through == "network" else SLIDING_WINDOW.roi_size
    assert seen and all(tuple(shape[2:]) == tuple(window) for _, shape in seen)
    assert not any(training for training, _ in seen)
    after_modes, after_state = snapshot(network)
    assert after_modes == modes
    assert all(torch.equal(state[k], after_state[k]) for k in state)
    assert all(p.grad is None for p in network.parameters())
    # the objective moved the way the attack goes, on every image (of the logits the attack saw)
    logits_of = eval_logits if through == "network" else sliding_window_logits
    before = case.objective(logits_of(network, images), labels)
    after = case.objective(logits_of(network, adv), labels)
    if case.direction == "up":
        assert (after > before).all(), (before, after)
    elif case.direction == "down":
        assert (after < before).all(), (before, after)
    else:
        assert (after <= before + 1e-9).all(), (before, after)


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith(("IterativeFGSM-", "PGD-target"))])
def test_attack_on_a_single_logit_3d_network(name: str):
    """A binary network with one logit (B, 1, *spatial), as many 3D bundles have: the same shape, range and ball."""
    case = CASES[name]
    torch.manual_seed(1)
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 1, 1)).eval()
    images, labels = volume_batch(classes=2)
    adv = case.build()(network, images, labels)
    assert adv.shape == images.shape and adv.dtype == images.dtype and adv.min() >= 0 and adv.max() <= 1
    delta = (adv - images).double()
    if case.norm == "linf":
        assert (
            delta.abs().max()
            <= case.radius * (2 / CLASSES if name in ("SignSelectionFGSM", "LayeredPGD") else 1) + 1e-6
        )
    elif case.norm == "l2":
        assert delta.flatten(1).norm(dim=1).max() <= case.radius + 1e-5


def test_worst_case_keeps_the_lowest_dice_of_its_attacks_in_3d():
    network, (images, labels) = unet3d().eval(), volume_batch(1)
    ensemble = attacks.ensemble_attack(EPS, num_steps=2)
    adv = ensemble(network, images, labels)

    def dice_of(x: torch.Tensor) -> torch.Tensor:
        return naive_dice(eval_logits(network, x).argmax(1, keepdim=True), labels, CLASSES).mean(1)

    members = torch.stack([dice_of(a(network, images, labels)) for a in ensemble.attacks])  # (attacks, B)
    torch.testing.assert_close(dice_of(adv), members.min(0).values)
    assert (members[ensemble.winners, torch.arange(BATCH)] == members.min(0).values).all()


@settings(max_examples=12, deadline=None)
@given(
    size=st.tuples(st.integers(2, 7), st.integers(2, 7), st.integers(2, 7)),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(0.0, 32.0),
    steps=st.integers(0, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_pgd_ball_and_range_on_any_volume(size, norm, eps, steps, dtype, seed):
    """PGD on volumes of any odd or even size (a fully convolutional net, no downsampling): shape, dtype, the data
    range and the ball hold for any budget, step count and norm."""
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 2, 1)).to(dtype)
    images = torch.rand(2, 1, *size, dtype=dtype)
    labels = torch.randint(0, 2, (2, *size))  # (B, *spatial) labels are taken as well
    adv = attacks.PGD(eps, eps / 2, steps, norm=norm, seed=seed)(network, images, labels)
    assert adv.shape == images.shape and adv.dtype == dtype
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - images).double().flatten(1)
    radius = eps * LEVEL
    measured = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (measured <= radius + (1e-6 if dtype == torch.float32 else 1e-12) * max(1, radius)).all()


# ----------------------------------------------------------------------------------------- the doors and the sweeps


def test_attackd_on_a_3d_sample_and_batch():
    network, (images, labels) = unet3d().eval(), volume_batch()
    affine = torch.diag(torch.tensor([0.625, 0.625, 2.5, 1.0], dtype=torch.float64))
    image = MetaTensor(images[0], affine=affine, meta={"filename_or_obj": "case_0.nii.gz"})
    sample = {"image": image, "label": MetaTensor(labels[0].float(), affine=affine)}
    attack = attacks.FGSM(EPS)
    out = Attackd(keys="image", label_key="label", attack=attack, network=network, record_key="how")(sample)
    adv = out["image"]
    assert isinstance(adv, MetaTensor) and adv.shape == image.shape and adv.dtype == image.dtype
    assert torch.equal(adv.affine, affine) and adv.meta["filename_or_obj"] == "case_0.nii.gz"
    expected = attack(network, images[:1], labels[:1])[0]
    assert torch.equal(adv.as_tensor(), expected)
    assert (adv.as_tensor() - images[0]).abs().max() <= EPS * LEVEL + 1e-6
    assert out["how"]["attack"] == "FGSM" and out["how"]["settings"]["eps"] == EPS
    assert torch.equal(out["label"], sample["label"])  # the label is not attacked
    # a collated batch at once: the same images as the attack on the batch, one record per image
    batched = Attackd(keys="image", attack=attacks.SignSelectionFGSM(EPS), network=network, record_key="how",
                      batched=True)({"image": images, "label": labels})  # fmt: skip
    adv_b, records = attacks.SignSelectionFGSM(EPS).with_record(network, images, labels)
    assert torch.equal(batched["image"], adv_b)
    assert [r["record"]["signs"] for r in batched["how"]] == [r["signs"] for r in records]
    # gradient perturbation's door on the same sample: the perturbation of GP itself, toward the label
    gp = attacks.GradientPerturbation(gamma=0.02, num_steps=4, clip_range=(0.0, 1.0))
    out = GradientPerturbationd("image", "label", network=network, perturbation=gp, output_keys="gp")(sample)
    result = gp.perturb(network, images[:1], labels[:1])
    assert isinstance(out["gp"], MetaTensor) and torch.equal(out["gp"].affine, affine)
    assert torch.equal(out["gp"].as_tensor(), result.images[0]) and int(out["gp_gp_iterations"]) == result.iterations
    assert torch.equal(out["image"], image)


def test_shared_sweep_in_3d_equals_separate_runs():
    network, (images, labels) = unet3d().eval(), volume_batch()
    budgets = [1.0, 2.0, 4.0, 6.0]
    factories = [
        functools.partial(attacks.IterativeFGSM, target="inverse"),
        functools.partial(attacks.PGD, alpha=1.0, num_steps=6, random_start=False),
        functools.partial(attacks.SegPGD, alpha=1.0, num_steps=6, random_start=False),
        functools.partial(attacks.PGD, alpha=1.0, num_steps=3, random_start=True, seed=0),  # no sharing: one run each
    ]
    for factory in factories:
        shared = attacks.shared_sweep(factory, budgets, network, images, labels)
        assert list(shared) == budgets
        for eps in budgets:
            alone = factory(eps)(network, images, labels)
            assert torch.equal(shared[eps], alone), (factory, eps)
            assert (shared[eps] - images).abs().max() <= eps * LEVEL + 1e-6
    assert attacks.shares_trajectory(factories[0](4.0)) and not attacks.shares_trajectory(factories[3](4.0))


def test_robustness_sweep_on_a_3d_dataset(tmp_path: Path):
    network = unet3d().eval()
    images, labels = volume_batch(seed=1, batch=4)
    items = [{"image": images[i], "label": labels[i].float()} for i in range(4)]
    loader = DataLoader(Dataset(items), batch_size=2, shuffle=False)
    factory = functools.partial(attacks.IterativeFGSM, alpha=2.0, num_steps=3)
    sweep = RobustnessSweep(network, loader, factory, [2.0, 8.0], num_classes=CLASSES, output_dir=tmp_path,
                            name="sweep3d", label="unet3d")  # fmt: skip
    summary = sweep.run()
    stored = json.loads((tmp_path / "sweep3d.json").read_text())
    assert stored["complete"] and stored["num_images"] == 4 and (tmp_path / "sweep3d.png").stat().st_size > 1000
    assert [r["epsilon"] for r in stored["results"]] == [2.0, 8.0]
    assert [a["name"] for a in stored["attacks"]] == ["IterativeFGSM", "IterativeFGSM"]
    for result, written in zip(summary["results"], stored["results"]):
        eps = result["epsilon"]
        adv = torch.cat([factory(eps)(network, images[i : i + 2], labels[i : i + 2]) for i in (0, 2)])
        pred = eval_logits(network, adv).argmax(1, keepdim=True)
        assert written["mean_dice"] == pytest.approx(float(naive_dice(pred, labels, CLASSES).mean()), abs=1e-6)
        assert written["mean_jaccard"] == pytest.approx(float(naive_jaccard(pred, labels, CLASSES).mean()), abs=1e-6)
        assert result["mean_dice"] == pytest.approx(written["mean_dice"], abs=1e-9)
    clean = naive_dice(eval_logits(network, images).argmax(1, keepdim=True), labels, CLASSES).mean()
    assert stored["results"][-1]["mean_dice"] < float(clean)  # the larger budget hurts


# ------------------------------------------------------------------------------------------------------ ProtoSeg


def block_mean(x: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Area downsampling by whole blocks: the mean over each ``factors`` block of ``(B, C, *spatial)``."""
    b, c, *spatial = x.shape
    shape = [b, c]
    for s, f in zip(spatial, factors):
        shape += [s // f, f]
    return x.reshape(shape).mean(dim=tuple(range(3, 3 + 2 * len(spatial), 2)))


def naive_protoseg(features: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes ``(B, K, C)`` as weighted means over the voxels (eq. 6) and the map ``softmax_k(-||f - c_k||^2)``
    ``(B, K, *spatial)`` from the explicit differences (eq. 5), for weights at the features' resolution; a class
    without weight has probability 0."""
    batch = features.shape[0]
    f, w = features.flatten(2), weights.flatten(2)
    protos = torch.stack(
        [torch.stack([(w[b, k] * f[b]).sum(-1) / w[b, k].sum().clamp_min(1e-300) for k in range(w.shape[1])])
         for b in range(batch)]
    )  # fmt: skip
    dist = ((f[:, None] - protos[..., None]) ** 2).sum(2)  # (B, K, N)
    dist = torch.where(w.sum(-1, keepdim=True) > 0, dist, torch.inf)
    return protos, torch.softmax(-dist, dim=1).reshape(batch, -1, *features.shape[2:])


def naive_sa(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The SA score: Dice of the argmax of ``prob`` (resampled trilinearly to the labels' size) per foreground class,
    1 when a class is absent from both."""
    if prob.shape[2:] != labels.shape[2:]:
        prob = F.interpolate(prob, size=labels.shape[2:], mode="trilinear", align_corners=False)
    return naive_dice(prob.argmax(1, keepdim=True), labels, prob.shape[1], empty=1.0)


def protoseg_case(seed: int = 0):
    """Features (B, 3, 6, 5, 4) that carry the labels (B, 1, 12, 10, 8) at half resolution, plus noise; a binary
    initial mask at full resolution that is the labels shifted by one voxel."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(2, 1, 12, 10, 8, dtype=torch.long)
    labels[0, 0, 2:9, 3:8, 1:6] = 1
    labels[1, 0, 5:12, 0:6, 3:8] = 1
    coarse = block_mean(labels.double(), (2, 2, 2))
    features = torch.cat([2 * coarse, -coarse, coarse], 1) + 0.6 * torch.randn(2, 3, 6, 5, 4, generator=gen,
                                                                             dtype=torch.float64)  # fmt: skip
    mask = torch.roll(labels, 1, dims=2).double()
    return features, mask, labels


def test_protoseg_prototypes_and_map_in_3d_equal_naive():
    features, mask, _ = protoseg_case()
    weights = block_mean(torch.cat([1 - mask, mask], 1), (2, 2, 2))  # the full-resolution mask at (6, 5, 4)
    protos, prob = naive_protoseg(features, weights)
    got_protos, sums = compute_prototypes(features, mask)
    torch.testing.assert_close(got_protos, protos)
    torch.testing.assert_close(sums, weights.flatten(2).sum(-1))
    torch.testing.assert_close(protoseg(features, mask), prob)
    sam = segmentation_ability_map(features, mask)
    assert sam.shape == (2, 1, 6, 5, 4) and torch.equal(sam, prob.argmax(1, keepdim=True))
    # per unit: each channel segmented on its own
    units = protoseg(features, mask, per_unit=True)
    assert units.shape == (2, 3, 2, 6, 5, 4)
    for c in range(3):
        torch.testing.assert_close(units[:, c], naive_protoseg(features[:, c : c + 1], weights)[1])
    # three classes, a one-hot mask at the features' resolution
    gen = torch.Generator().manual_seed(3)
    onehot = F.one_hot(torch.randint(0, 3, (2, 6, 5, 4), generator=gen), 3).movedim(-1, 1).double()
    torch.testing.assert_close(protoseg(features, onehot), naive_protoseg(features, onehot)[1])
    # a tissue mask (prototypes from tissue voxels only, background outside) and a map resampled to the labels' size
    tissue = torch.ones(2, 1, 12, 10, 8, dtype=torch.float64)
    tissue[:, :, :, :, :2] = 0.0
    tissue_coarse = block_mean(tissue, (2, 2, 2))
    blended = tissue_coarse * naive_protoseg(features, weights * tissue_coarse)[1]
    blended[:, :1] += 1 - tissue_coarse
    expected = F.interpolate(blended, size=(12, 10, 8), mode="trilinear", align_corners=False)
    torch.testing.assert_close(protoseg(features, mask, tissue, spatial_size=(12, 10, 8)), expected)


@settings(max_examples=15, deadline=None)
@given(
    size=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    factors=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    channels=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_protoseg_map_on_any_volume_equals_naive(size, factors, channels, seed):
    """Features of any small 3D size, a binary mask at a whole multiple of their resolution per axis (area averaged
    to the features), random or empty: the map equals the naive one."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(2, channels, *size, generator=gen, dtype=torch.float64)
    mask = (torch.rand(2, 1, *(s * f for s, f in zip(size, factors)), generator=gen) > 0.5).double()
    mask[1] = 0.0  # an empty object: all background
    weights = block_mean(torch.cat([1 - mask, mask], 1), factors)
    torch.testing.assert_close(protoseg(features, mask), naive_protoseg(features, weights)[1])
    assert bool((protoseg(features, mask)[1, 0] == 1).all())


def test_protoseg_scores_in_3d_equal_naive():
    features, mask, labels = protoseg_case()
    weights = block_mean(torch.cat([1 - mask, mask], 1), (2, 2, 2))
    prob = naive_protoseg(features, weights)[1]
    expected = naive_sa(prob, labels)
    assert 0.3 < float(expected.min()) < 1.0  # a score that tells right from wrong
    torch.testing.assert_close(compute_sa_score(features, mask, labels).double(), expected)
    per_unit = torch.stack([naive_sa(naive_protoseg(features[:, c : c + 1], weights)[1], labels) for c in range(3)], 1)
    torch.testing.assert_close(compute_sa_score(features, mask, labels, per_unit=True).double(), per_unit)
    # layers at two resolutions, one of them the labels' own
    fine = F.interpolate(features, size=(12, 10, 8), mode="nearest")
    layers = compute_layer_sa_scores([features, fine], mask, labels)
    fine_expected = naive_sa(naive_protoseg(fine, torch.cat([1 - mask, mask], 1))[1], labels)
    torch.testing.assert_close(layers.double(), torch.stack([expected, fine_expected], 1))
    metric = SAScoreMetric(reduction="none")
    metric(y_pred={"coarse": features, "fine": fine}, y=labels, mask=mask)
    torch.testing.assert_close(metric.aggregate().double(), torch.stack([expected, fine_expected], 1))


def test_mean_sa_score_in_3d_equals_naive():
    features, _, labels = protoseg_case()
    fine = F.interpolate(features, size=(12, 10, 8), mode="nearest")
    pred = torch.cat([-labels.double(), labels.double()], 1)  # logits whose argmax is the labels
    reference = torch.cat([1 - labels.double(), labels.double()], 1)
    unit_scores = []
    for layer in (features, fine):
        weights = block_mean(reference, (2, 2, 2)) if layer.shape[2] == 6 else reference
        for c in range(layer.shape[1]):
            unit_scores.append(naive_sa(naive_protoseg(layer[:, c : c + 1], weights)[1], labels)[:, 0])
    expected = torch.stack(unit_scores, 1).mean(1)
    torch.testing.assert_close(mean_sa_score([features, fine], pred).double(), expected)
    metric = MeanSAScoreMetric(reduction="none")
    metric(y_pred={"a": features, "b": fine}, y=pred)
    torch.testing.assert_close(metric.aggregate()[:, 0].double(), expected)


def test_protoseg_handlers_on_a_3d_evaluator(tmp_path: Path):
    torch.manual_seed(0)
    network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(2, 2, 2, 2, 2, 2)).eval()
    images, labels = volume_batch(seed=2, batch=3, spatial=(32, 32, 16), classes=2)  # 2 x 2 x 1 at the bottom
    items = [{"image": images[i], "label": labels[i].float()} for i in range(3)]
    last = BASIC_UNET_LAYERS[-2:]
    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(Dataset(items), batch_size=2, shuffle=False),
        network=network,
        postprocessing=Compose([Activationsd(keys="pred", softmax=True)]),
        val_handlers=[
            FeatureRecorderHandler(network, last),
            ProtoSegSaver(tmp_path, unit_layer=-1, title="3D"),
            SAMPlotHandler(tmp_path / "sams.png", layers=[0, 1], num_images=2),
        ],
        key_val_metric={"sa": SAScoreHandler()},
        additional_metrics={
            "mu": MeanSAScoreHandler(),
            "sa_units": SAScoreHandler(-1, per_unit=True),
            "output_dice": OutputDiceHandler(),
        },
    )
    evaluator.run()
    summary = json.loads((tmp_path / "layers.json").read_text())
    assert summary["num_images"] == 3 and summary["layers"][-1]["feature_shape"] == [2, 32, 32, 16]
    for name in ("layers.png", "units.png", "sams.png"):
        assert (tmp_path / name).stat().st_size > 1000
    details = evaluator.state.metric_details
    recorded = {}
    network.get_submodule(last[-1]).register_forward_hook(lambda m, i, o: recorded.__setitem__("last", o))
    network.get_submodule(last[0]).register_forward_hook(lambda m, i, o: recorded.__setitem__("first", o))
    with torch.no_grad():  # the evaluator left the network in eval mode
        logits = network(images)
    reference = torch.cat([logits.argmax(1, keepdim=True) == c for c in (0, 1)], 1).double()
    truth = labels
    sa = torch.stack([naive_sa(naive_protoseg(recorded[k].double(), reference)[1], truth)[:, 0]
                      for k in ("first", "last")], 1)  # fmt: skip
    torch.testing.assert_close(details["sa"][..., 0].double(), sa, atol=1e-6, rtol=0)
    pred_labels = logits.argmax(1, keepdim=True)
    units = [naive_sa(naive_protoseg(recorded[k][:, c : c + 1].double(), reference)[1], pred_labels)[:, 0]
             for k in ("first", "last") for c in range(recorded[k].shape[1])]  # fmt: skip
    torch.testing.assert_close(details["mu"][:, 0].double(), torch.stack(units, 1).mean(1), atol=1e-6, rtol=0)
    last_units = [naive_sa(naive_protoseg(recorded["last"][:, c : c + 1].double(), reference)[1], truth)[:, 0]
                  for c in range(recorded["last"].shape[1])]  # fmt: skip
    torch.testing.assert_close(details["sa_units"][..., 0].double(), torch.stack(last_units, 1), atol=1e-6, rtol=0)


def test_variance_of_gradients_in_3d_equals_analytic():
    """A 1x1x1 convolution ``logit_k = w_k x + b_k``: the input gradient of the summed target logits is ``w_{y_i}``
    at voxel ``i``, so VoG is the mean over voxels of the standard deviation of ``w^t_{y_i}`` over checkpoints."""
    network = nn.Conv3d(1, 2, 1)
    weights = [torch.tensor([0.5, -1.0]), torch.tensor([1.5, 0.0]), torch.tensor([-0.5, 2.0])]
    states = [{"weight": w.view(2, 1, 1, 1, 1), "bias": torch.zeros(2)} for w in weights]
    _, labels = volume_batch(classes=2)
    images = torch.rand(BATCH, 1, *SPATIAL)
    stds = torch.stack(weights).std(0, unbiased=False)  # per class
    expected = stds[labels[:, 0]].flatten(1).mean(1)
    torch.testing.assert_close(VarianceOfGradients(network, states)(images, labels), expected)


def test_protoseg_loss_in_3d_equals_naive():
    torch.manual_seed(0)
    network = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(2, 2, 2, 2, 2, 2))
    images, labels = volume_batch(seed=4, spatial=(32, 32, 16), classes=2)
    layers = ["conv_0.conv_1", "down_2.convs.conv_1", "upcat_1.convs.conv_1"]
    loss = ProtoSegLoss(network, layers, lambda_protoseg=0.5, initial_mask="label")
    recorded = {}
    for name in layers:
        network.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: recorded.__setitem__(n, o))
    logits = network(images)
    value = loss(logits, labels)
    onehot = torch.cat([labels == 0, labels == 1], 1).double()
    dice_losses = []
    for name in layers:
        f = recorded[name].double()
        factors = tuple(s // t for s, t in zip(labels.shape[2:], f.shape[2:]))
        prob = naive_protoseg(f, block_mean(onehot, factors))[1]
        prob = F.interpolate(prob, size=labels.shape[2:], mode="trilinear", align_corners=False)[:, 1:]
        truth = onehot[:, 1:]
        dims = tuple(range(2, prob.ndim))
        dice = (2 * (prob * truth).sum(dims) + 1e-5) / (prob.sum(dims) + truth.sum(dims) + 1e-5)
        dice_losses.append((1 - dice).mean())
    expected = naive_ce(logits.detach(), labels).mean() + 0.5 * torch.stack(dice_losses).mean()
    torch.testing.assert_close(value.double(), expected, atol=1e-5, rtol=1e-5)
    value.backward()
    assert all(p.grad is not None for p in network.parameters())


# ----------------------------------------------------------------------------------------------------------- NLCE


def naive_nonlocal(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """Eq. (1)-(2) of the NLCE paper with the explicit ``N x N`` matrix ``exp(theta_i . phi_j)`` normalised over
    ``j``, then ``W_z y + x`` with batch norm in eval mode, voxel by voxel as 1x1x1 convolutions."""
    xf = x.flatten(2).double()

    def conv(m: nn.Module, v: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("oc,bcn->bon", m.weight.double().flatten(1), v)
        return out if m.bias is None else out + m.bias.double()[None, :, None]

    theta, phi, g = conv(block.theta, xf), conv(block.phi, xf), conv(block.g, xf)
    affinity = torch.einsum("bci,bcj->bij", theta, phi)  # (B, N, N)
    weights = torch.exp(affinity - affinity.amax(-1, keepdim=True))
    y = torch.einsum("bij,bcj->bci", weights / weights.sum(-1, keepdim=True), g)
    bn = block.w_z[1]
    wz = conv(block.w_z[0], y)
    wz = (wz - bn.running_mean.double()[:, None]) / torch.sqrt(bn.running_var.double()[:, None] + bn.eps)
    wz = wz * bn.weight.double()[:, None] + bn.bias.double()[:, None]
    return (wz + xf).reshape(x.shape)


def test_nonlocal_in_3d_equals_explicit_softmax():
    torch.manual_seed(0)
    block = NonLocalBlock(3, 6, inter_channels=4).eval()
    with torch.no_grad():  # non-trivial batch norm statistics and affine parameters
        bn = block.w_z[1]
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 6, 5, 4, 3)  # a non-cubic volume: the voxels' order is checked
    torch.testing.assert_close(block(x).double(), naive_nonlocal(block, x), atol=1e-5, rtol=1e-5)
    # the attention reaches across the volume: moving one corner voxel changes the output at the opposite one
    moved = x.clone()
    moved[..., 0, 0, 0] += 3.0
    assert not torch.allclose(block(moved)[..., -1, -1, -1], block(x)[..., -1, -1, -1])


def test_nlce_block_in_3d_shape_and_gradients():
    torch.manual_seed(0)
    net = NLCE(3, 6, num_codes=4).train()
    x = torch.randn(2, 6, 5, 4, 3, requires_grad=True)
    out = net(x)
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in net.parameters())
    net.eval()
    with torch.no_grad():  # eval mode: the non-local output scaled per channel by sigmoid(W_gamma e)
        f_z = net.non_local(x)
        gamma = torch.sigmoid(net.fc(net.context(f_z)))
        torch.testing.assert_close(net(x), f_z * gamma[:, :, None, None, None])


def test_nlce_unet_in_3d():
    torch.manual_seed(0)
    net = NLCEUNet(3, 1, CLASSES, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, num_codes=4)
    nlce = [m for m in net.modules() if isinstance(m, NLCE)]
    assert len(nlce) == 1 and nlce[0].spatial_dims == 3
    shapes = []
    nlce[0].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    images, labels = volume_batch()
    out = net.train()(images)
    assert isinstance(out, torch.Tensor) and out.shape == (BATCH, CLASSES, *SPATIAL)
    assert shapes == [(BATCH, 16, 4, 4, 3)]  # the NLCE runs on the bottom volume
    F.cross_entropy(out, labels[:, 0]).backward()
    assert all(p.grad is not None for p in nlce[0].parameters())
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in net.parameters() if p.ndim > 1)
    net.eval()
    with torch.no_grad():
        logits = net(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (BATCH, CLASSES, *SPATIAL)
    # an attack runs through it in 3D and leaves it as it was
    state = {k: v.clone() for k, v in net.state_dict().items()}
    adv = attacks.FGSM(EPS)(net, images, labels)
    assert (naive_ce(eval_logits(net, adv), labels) > naive_ce(logits, labels)).all()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_naive_references_on_a_hand_made_case():
    """The naive references agree with the plain definitions on a hand-made case."""
    pred = torch.tensor([[[[[0, 1, 1, 2]]]]])
    truth = torch.tensor([[[[[0, 1, 2, 2]]]]])
    torch.testing.assert_close(naive_dice(pred, truth, 3), torch.tensor([[2 / 3, 2 / 3]], dtype=torch.float64))
    torch.testing.assert_close(naive_jaccard(pred, truth, 3), torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    logits = torch.zeros(1, 3, 1, 1, 4)
    torch.testing.assert_close(naive_ce(logits, truth), torch.tensor([torch.log(torch.tensor(3.0)).item()],
                                                                     dtype=torch.float64))  # fmt: skip
    assert block_mean(torch.arange(8.0).reshape(1, 1, 2, 2, 2), (2, 2, 2)).item() == 3.5
