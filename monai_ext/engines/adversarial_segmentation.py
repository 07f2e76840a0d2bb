"""
Adversarial segmentation training with a conditional discriminator (SAGAN segmentation), as a MONAI trainer.

MONAI's ``AdversarialTrainer`` feeds its discriminator the generator's output alone; segmentation needs a
conditional discriminator that judges a segmentation map together with its image, and a generator trained on a
segmentation loss plus a weighted adversarial term. :class:`AdversarialSegmentationTrainer` is that loop on MONAI's
``Trainer`` (ignite engine, ``prepare_batch``, ``IterationEvents``, metrics, handlers, decollation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from ignite.engine import Engine, EventEnum
from ignite.metrics import Metric
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.networks.utils import one_hot
from monai.transforms import Transform
from monai.utils import AdversarialIterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_ext.losses.gan import HingeDiscriminatorLoss, HingeGeneratorLoss

__all__ = ["LOSS_TERMS", "AdversarialSegmentationTrainer", "check_optimizer", "frozen", "loss_terms"]

#: the loss terms an iteration puts in ``engine.state.output`` (scalars; the last three only with a discriminator):
#: ``loss`` the generator's total, ``seg_loss`` its segmentation loss, ``adv_loss`` its adversarial loss (unweighted),
#: ``d_loss`` the discriminator's loss, ``d_real`` / ``d_fake`` its mean scores of real and generated pairs.
LOSS_TERMS: tuple[str, ...] = ("loss", "seg_loss", "adv_loss", "d_loss", "d_real", "d_fake")


def loss_terms(
    output: Mapping[str, Any] | Sequence[Mapping[str, Any]], keys: Sequence[str] = LOSS_TERMS
) -> dict[str, float]:
    """
    The loss terms (:data:`LOSS_TERMS`) of an iteration's output, as floats: the ``output_transform`` of
    ``StatsHandler`` / ``TensorBoardStatsHandler`` to log all of them every iteration.

    Args:
        output: ``engine.state.output``, a dict or, after decollation, a list of per-sample dicts.
        keys: the terms to take, those present; another trainer's, such as
            :data:`~monai_ext.engines.cycle_gan.CYCLE_GAN_LOSS_TERMS`.
    """
    first = output[0] if isinstance(output, Sequence) else output
    return {key: float(first[key]) for key in keys if key in first}


def check_optimizer(name: str, optimizer: Optimizer, own: nn.Module, other: nn.Module | None) -> None:
    """``optimizer`` must hold no parameter of ``other`` (each network of an adversarial trainer is updated by its own
    optimizer only)."""
    if other is None:
        return
    foreign = {id(p) for p in other.parameters()} - {id(p) for p in own.parameters()}
    held = sum(id(p) in foreign for group in optimizer.param_groups for p in group["params"])
    if held:
        raise ValueError(f"{name} holds {held} parameters of the other network; give each network its own optimizer.")


@contextmanager
def frozen(network: nn.Module) -> Iterator[None]:
    """Parameters of ``network`` do not require grad inside the block (the flags are restored afterwards)."""
    flags = [(p, p.requires_grad) for p in network.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class AdversarialSegmentationTrainer(Trainer):
    """
    Trains a segmentation network (the generator ``G``) with a conditional discriminator ``D``. Each iteration:

    1. ``G`` predicts logits for the images (``inferer``); ``p = softmax(logits)``.
    2. ``D`` step: ``d_loss = d_loss_function(D(image, one_hot(label)), D(image, p.detach()))`` (hinge by default:
       real pairs pushed above +1, generated pairs below -1); ``d_optimizer`` steps ``D``.
    3. ``G`` step: ``loss = loss_function(logits, label) + adversarial_weight * adv_loss`` with
       ``adv_loss = g_adversarial_loss_function(D(image, p))`` (``-mean D`` by default), back-propagated through
       the updated ``D`` into ``G`` with ``D``'s parameters frozen, so ``D`` gets no gradient from it;
       ``optimizer`` steps ``G``.

    Two optimizers with their own learning rates (SAGAN's two time-scale update rule: ``D`` faster than ``G``).
    ``D`` runs once per step on real and generated pairs together (it has no batch statistics). With
    ``adversarial_weight = 0`` the discriminator is neither run nor updated (and may be None): the loop is plain
    supervised training of ``G``, the "generator without discriminator" baseline.

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (the logits) and the loss terms of
    :data:`LOSS_TERMS`; log them with ``StatsHandler(output_transform=monai_ext.engines.loss_terms)``. Metrics,
    postprocessing, decollation and handlers (``CheckpointSaver``, ``ValidationHandler``, ``TensorBoardStatsHandler``,
    ...) attach as to MONAI's ``SupervisedTrainer``. Events: ``IterationEvents.FORWARD_COMPLETED`` after ``G``'s
    forward, ``AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED`` / ``DISCRIMINATOR_BACKWARD_COMPLETED`` /
    ``DISCRIMINATOR_MODEL_COMPLETED`` around ``D``'s step, then ``IterationEvents.LOSS_COMPLETED``,
    ``BACKWARD_COMPLETED`` and ``MODEL_COMPLETED`` for ``G``'s.

    Args:
        device: where the networks and batches run.
        max_epochs: number of epochs.
        train_data_loader: batches of ``{"image": (B, C, *spatial), "label": (B, 1, *spatial)}`` with class indices.
        network: the generator, returning logits ``(B, num_classes, *spatial)``.
        optimizer: the generator's optimizer (over the generator's parameters only).
        loss_function: segmentation loss ``(logits, label) -> loss``, such as
            ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        discriminator: conditional discriminator ``(image, segmentation) -> scores``; None only with
            ``adversarial_weight = 0``.
        d_optimizer: the discriminator's optimizer (over its parameters only).
        adversarial_weight: weight of the adversarial term in the generator's loss, ``>= 0``.
        d_loss_function: ``(real_scores, fake_scores) -> loss``; :class:`~monai_ext.losses.HingeDiscriminatorLoss`
            by default.
        g_adversarial_loss_function: ``fake_scores -> loss``; :class:`~monai_ext.losses.HingeGeneratorLoss` by default.
        epoch_length: iterations per epoch, ``len(train_data_loader)`` by default.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: MONAI's ``prepare_batch`` (``(image, label)`` from a batch).
        iteration_update: replaces :py:meth:`_iteration` when given.
        inferer: how ``G`` is run on the images, ``SimpleInferer`` by default.
        postprocessing: transforms applied to the output after each iteration.
        key_train_metric: the key ignite metric, computed every iteration and averaged per epoch.
        additional_metrics: more ignite metrics.
        metric_cmp_fn: how a key metric value is compared with the best one.
        train_handlers: handlers to attach (``CheckpointSaver``, ``StatsHandler``, ``ValidationHandler``, ...).
        amp: automatic mixed precision (``torch.autocast`` on the device's type, one gradient scaler per network).
        event_names: more events to register.
        event_to_attr: event-to-state-attribute map, as in ignite.
        decollate: decollate the output into per-sample dicts after each iteration.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        to_kwargs: more arguments of ``prepare_batch``'s ``to()``.
        amp_kwargs: more arguments of ``torch.autocast``.

    Raises:
        ValueError: a negative or non-finite ``adversarial_weight``, a missing discriminator or optimizer with a
            positive weight, or an optimizer holding the other network's parameters.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        discriminator: nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        adversarial_weight: float = 0.01,
        d_loss_function: Callable | None = None,
        g_adversarial_loss_function: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        adversarial_weight = float(adversarial_weight)
        if not math.isfinite(adversarial_weight) or adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be a finite number >= 0, got {adversarial_weight}.")
        if adversarial_weight > 0 and (discriminator is None or d_optimizer is None):
            raise ValueError(
                f"adversarial_weight={adversarial_weight} needs a discriminator and a d_optimizer; "
                "use adversarial_weight=0 to train the segmentation network alone."
            )
        check_optimizer("optimizer", optimizer, network, discriminator)
        if discriminator is not None and d_optimizer is not None:
            check_optimizer("d_optimizer", d_optimizer, discriminator, network)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=[*(event_names or []), AdversarialIterationEvents],
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.network = network
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.adversarial_weight = adversarial_weight
        self.d_loss_function = HingeDiscriminatorLoss() if d_loss_function is None else d_loss_function
        self.g_adversarial_loss_function = (
            HingeGeneratorLoss() if g_adversarial_loss_function is None else g_adversarial_loss_function
        )
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optim_set_to_none = optim_set_to_none
        device_type = torch.device(device).type
        self.g_scaler = torch.amp.GradScaler(device_type, enabled=amp)
        self.d_scaler = torch.amp.GradScaler(device_type, enabled=amp)

    @staticmethod
    def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
        num_classes = logits.shape[1]
        if labels.shape != (logits.shape[0], 1, *logits.shape[2:]):
            raise ValueError(
                f"labels must be class indices of shape (B, 1, *spatial) = {(logits.shape[0], 1, *logits.shape[2:])} "
                f"to match the logits {tuple(logits.shape)}, got shape {tuple(labels.shape)}."
            )
        low, high = float(labels.min()), float(labels.max())
        if low < 0 or high > num_classes - 1:
            raise ValueError(
                f"labels must be class indices in [0, {num_classes - 1}] for {num_classes} logits channels, "
                f"got values in [{low:g}, {high:g}]."
            )

    def _iteration(self, engine: AdversarialSegmentationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """
        One discriminator step, then one generator step, on a batch; see the class docstring.

        Returns:
            ``engine.state.output``: ``image``, ``label``, ``pred`` (logits) and the loss terms of :data:`LOSS_TERMS`.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            inputs, targets = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            inputs, targets, args, kwargs = batch
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        autocast = {"device_type": torch.device(engine.state.device).type, "enabled": engine.amp, **engine.amp_kwargs}
        use_discriminator = engine.adversarial_weight > 0

        engine.network.train()
        with torch.autocast(**autocast):
            logits = engine.inferer(inputs, engine.network, *args, **kwargs)
        engine.state.output[Keys.PRED] = logits
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine._check_labels(logits, targets)

        terms: dict[str, torch.Tensor] = {}
        if use_discriminator:
            disc = engine.discriminator
            disc.train()
            real = one_hot(targets, num_classes=logits.shape[1], dtype=torch.float32)
            fake = torch.softmax(logits.float(), dim=1)
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with torch.autocast(**autocast):
                scores = disc(torch.cat([inputs, inputs]), torch.cat([real, fake.detach()]))
                d_real, d_fake = scores.float().split(inputs.shape[0])
                d_loss = engine.d_loss_function(d_real, d_fake)
            engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
            engine.d_scaler.scale(d_loss).backward()
            engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
            engine.d_scaler.step(engine.d_optimizer)
            engine.d_scaler.update()
            engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_MODEL_COMPLETED)
            terms.update(d_loss=d_loss.detach(), d_real=d_real.detach().mean(), d_fake=d_fake.detach().mean())

        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(**autocast):
            seg_loss = engine.loss_function(logits, targets).mean()
            loss = seg_loss
            if use_discriminator:
                # D's parameters get no gradient from G's loss; under DDP its frozen pass skips the wrapper's sync
                frozen_disc = getattr(disc, "module", disc) if isinstance(disc, DistributedDataParallel) else disc
                with frozen(frozen_disc):
                    adv_loss = engine.g_adversarial_loss_function(frozen_disc(inputs, fake).float())
                loss = seg_loss + engine.adversarial_weight * adv_loss
                terms["adv_loss"] = adv_loss.detach()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.g_scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.g_scaler.step(engine.optimizer)
        engine.g_scaler.update()

        engine.state.output.update({Keys.LOSS: loss.detach(), "seg_loss": seg_loss.detach(), **terms})
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
