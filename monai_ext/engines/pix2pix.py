"""
Paired image-to-image training in the manner of pix2pix (Isola, Zhu, Zhou and Efros, "Image-to-Image Translation with
Conditional Adversarial Networks", CVPR 2017, https://arxiv.org/abs/1611.07004) as a MONAI trainer: one generator, a
conditional PatchGAN discriminator that judges an (input, output) pair, and an L1 loss to the paired target.

MONAI's ``GanTrainer`` gives its discriminator the generated image alone and its generator no reconstruction loss;
the project's ``AdversarialSegmentationTrainer`` conditions its discriminator on the image but judges segmentation
maps (softmax against one-hot labels). :class:`Pix2PixTrainer` judges images, on MONAI's ``Trainer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, EventEnum
from ignite.metrics import Metric
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Transform
from monai.utils import AdversarialIterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_ext.engines.adversarial_segmentation import check_optimizer, frozen
from monai_ext.engines.cycle_gan import _scores
from monai_ext.losses.cycle_gan import LeastSquaresDiscriminatorLoss, LeastSquaresGeneratorLoss
from monai_ext.utils.checks import check_non_negative

__all__ = ["PIX2PIX_LOSS_TERMS", "Pix2PixTrainer"]

#: the loss terms a pix2pix iteration puts in ``engine.state.output`` (scalars): ``loss`` the generator's total,
#: ``adv_loss`` its adversarial loss, ``l1_loss`` its L1 loss to the target (unweighted), ``d_loss`` the
#: discriminator's loss, ``d_real`` / ``d_fake`` its mean scores of real and generated pairs.
PIX2PIX_LOSS_TERMS: tuple[str, ...] = ("loss", "adv_loss", "l1_loss", "d_loss", "d_real", "d_fake")


class Pix2PixTrainer(Trainer):
    """
    Trains a generator ``G = network`` (``a -> b``) on paired batches with a conditional discriminator ``D`` that
    scores the channel concatenation of an input and an output. Each iteration, as Isola et al.'s:

    1. ``fake_b = G(a)`` (``inferer``).
    2. Discriminator step: ``d_loss = d_loss_function(D(cat(a, b)), D(cat(a, fake_b.detach())))``; ``d_optimizer``
       steps ``D``.
    3. Generator step, ``D``'s parameters frozen: ``loss = g_adversarial_loss_function(D(cat(a, fake_b))) +
       lambda_l1 * l1_loss_function(fake_b, b)``; ``optimizer`` steps ``G``.

    The defaults: ``lambda_l1 = 100`` (Isola et al.'s) and the least-squares adversarial losses of
    :mod:`monai_ext.losses.cycle_gan` (pix2pix's ``lsgan`` option; its default is the vanilla GAN loss): pass
    ``d_loss_function`` / ``g_adversarial_loss_function`` for others.

    ``engine.state.output`` holds ``image`` (``a``), ``label`` (``b``), ``pred`` (``fake_b``) and the loss terms of
    :data:`PIX2PIX_LOSS_TERMS`; log them with ``StatsHandler(output_transform=lambda out: loss_terms(out,
    PIX2PIX_LOSS_TERMS))``. Events: ``IterationEvents.FORWARD_COMPLETED`` after ``G``'s forward,
    ``AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED`` / ``DISCRIMINATOR_BACKWARD_COMPLETED`` /
    ``DISCRIMINATOR_MODEL_COMPLETED`` around ``D``'s step, then ``IterationEvents.LOSS_COMPLETED``,
    ``BACKWARD_COMPLETED`` and ``MODEL_COMPLETED`` for ``G``'s.

    Args:
        device: where the networks and batches run.
        max_epochs: number of epochs.
        train_data_loader: batches of ``{"image": (B, C, *spatial), "label": (B, C, *spatial)}``, paired images.
        network: the generator, ``(B, C, *spatial) -> (B, C, *spatial)``.
        discriminator: scores of ``(B, 2 C, *spatial)`` pairs, a tensor or a list whose last element is the scores
            (MONAI's ``PatchDiscriminator`` with ``in_channels = 2 C``).
        optimizer: over the generator's parameters (only).
        d_optimizer: over the discriminator's parameters (only).
        lambda_l1: weight of the L1 loss, ``>= 0``.
        d_loss_function: ``(real_scores, fake_scores) -> loss``;
            :class:`~monai_ext.losses.LeastSquaresDiscriminatorLoss` by default.
        g_adversarial_loss_function: ``fake_scores -> loss``; :class:`~monai_ext.losses.LeastSquaresGeneratorLoss`
            by default.
        l1_loss_function: ``(input, target) -> loss``; ``torch.nn.L1Loss`` by default.
        epoch_length: iterations per epoch, ``len(train_data_loader)`` by default.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: MONAI's ``prepare_batch`` (``(a, b)`` from a batch).
        iteration_update: replaces :py:meth:`_iteration` when given.
        inferer: how ``G`` is run on images, ``SimpleInferer`` by default.
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
        ValueError: a negative or non-finite ``lambda_l1``, or an optimizer holding the other network's parameters.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        discriminator: nn.Module,
        optimizer: Optimizer,
        d_optimizer: Optimizer,
        lambda_l1: float = 100.0,
        d_loss_function: Callable | None = None,
        g_adversarial_loss_function: Callable | None = None,
        l1_loss_function: Callable | None = None,
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
        check_optimizer("optimizer", optimizer, network, discriminator)
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
        self.discriminator = discriminator
        self.optimizer = optimizer
        self.d_optimizer = d_optimizer
        self.lambda_l1 = check_non_negative("lambda_l1", lambda_l1)
        self.d_loss_function = LeastSquaresDiscriminatorLoss() if d_loss_function is None else d_loss_function
        self.g_adversarial_loss_function = (
            LeastSquaresGeneratorLoss() if g_adversarial_loss_function is None else g_adversarial_loss_function
        )
        self.l1_loss_function = nn.L1Loss() if l1_loss_function is None else l1_loss_function
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optim_set_to_none = optim_set_to_none
        device_type = torch.device(device).type
        self.g_scaler = torch.amp.GradScaler(device_type, enabled=amp)
        self.d_scaler = torch.amp.GradScaler(device_type, enabled=amp)

    def _iteration(self, engine: Pix2PixTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """
        One discriminator step, then one generator step, on a batch; see the class docstring.

        Returns:
            ``engine.state.output``: ``image``, ``label``, ``pred`` (``G(image)``) and the loss terms of
            :data:`PIX2PIX_LOSS_TERMS`.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        real_a, real_b = batch[0], batch[1]
        engine.state.output = {Keys.IMAGE: real_a, Keys.LABEL: real_b}
        autocast = {"device_type": torch.device(engine.state.device).type, "enabled": engine.amp, **engine.amp_kwargs}
        gen, disc = engine.network, engine.discriminator
        gen.train()
        disc.train()

        with torch.autocast(**autocast):
            fake_b = engine.inferer(real_a, gen)
        engine.state.output[Keys.PRED] = fake_b
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(**autocast):
            d_real = _scores(disc(torch.cat([real_a, real_b], dim=1))).float()
            d_fake = _scores(disc(torch.cat([real_a, fake_b.detach()], dim=1))).float()
            d_loss = engine.d_loss_function(d_real, d_fake)
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
        engine.d_scaler.scale(d_loss).backward()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
        engine.d_scaler.step(engine.d_optimizer)
        engine.d_scaler.update()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_MODEL_COMPLETED)

        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(**autocast), frozen(disc):
            adv_loss = engine.g_adversarial_loss_function(_scores(disc(torch.cat([real_a, fake_b], dim=1))).float())
            l1_loss = engine.l1_loss_function(fake_b.float(), real_b)
            loss = adv_loss + engine.lambda_l1 * l1_loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.g_scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.g_scaler.step(engine.optimizer)
        engine.g_scaler.update()

        engine.state.output.update(
            {
                Keys.LOSS: loss.detach(),
                "adv_loss": adv_loss.detach(),
                "l1_loss": l1_loss.detach(),
                "d_loss": d_loss.detach(),
                "d_real": d_real.detach().mean(),
                "d_fake": d_fake.detach().mean(),
            }
        )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
