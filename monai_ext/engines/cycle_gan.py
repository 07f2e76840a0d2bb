"""
Cycle-GAN training (Zhu, Park, Isola and Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017, https://arxiv.org/abs/1703.10593) as a MONAI trainer.

MONAI's ``GanTrainer`` and ``AdversarialTrainer`` train one generator against one discriminator; Cycle-GAN trains two
generators (A -> B and B -> A) against two discriminators (one per domain) with adversarial, cycle-consistency and
identity losses. :class:`CycleGANTrainer` is that loop on MONAI's ``Trainer`` (ignite engine, ``prepare_batch``,
``IterationEvents``, metrics, handlers, decollation), so ``CheckpointSaver``, ``StatsHandler``, ``ValidationHandler``
and ``LrScheduleHandler`` attach to it as to ``SupervisedTrainer``. :class:`ImagePool` is the history of generated
images its discriminators see, and :func:`linear_decay` its learning-rate schedule.
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
from monai_ext.losses.cycle_gan import LeastSquaresDiscriminatorLoss, LeastSquaresGeneratorLoss
from monai_ext.utils.checks import check_non_negative, check_non_negative_int, check_positive_int

__all__ = ["CYCLE_GAN_LOSS_TERMS", "CycleGANTrainer", "ImagePool", "linear_decay"]

#: the loss terms a Cycle-GAN iteration puts in ``engine.state.output`` (scalars): ``loss`` the generators' total,
#: ``adv_loss`` their adversarial loss, ``cycle_loss`` and ``identity_loss`` their L1 terms (unweighted, both
#: directions summed), ``d_loss`` the discriminators' loss, ``d_real`` / ``d_fake`` their mean scores of real and
#: generated images.
CYCLE_GAN_LOSS_TERMS: tuple[str, ...] = (
    "loss",
    "adv_loss",
    "cycle_loss",
    "identity_loss",
    "d_loss",
    "d_real",
    "d_fake",
)


def _scores(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A discriminator's scores: its output, or the last of the outputs MONAI's ``PatchDiscriminator`` returns."""
    return output[-1] if isinstance(output, (list, tuple)) else output


class ImagePool:
    """
    A history of generated images (Shrivastava et al. 2017), as Cycle-GAN feeds its discriminators: until the pool
    holds ``size`` images every image passes and is stored; then each image is, with probability 1/2, swapped for a
    stored one (which is returned, the new one stored in its place), else returned as it is. ``size = 0`` passes every
    batch unchanged. Randomness from torch's global generator; the pool lives on the images' device, and is not part
    of a checkpoint (a resumed run starts with an empty pool).

    Args:
        size: images kept (50 in Cycle-GAN).

    Shapes:
        ``(B, C, *spatial)`` in and out.
    """

    def __init__(self, size: int = 50) -> None:
        self.size = check_non_negative_int("size", size)
        self.images: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                i = int(torch.randint(len(self.images), ()))
                out.append(self.images[i])
                self.images[i] = image
            else:
                out.append(image)
        return torch.stack(out)


def linear_decay(epochs: int, decay_epochs: int) -> Callable[[int], float]:
    """
    Cycle-GAN's learning-rate factor by epoch, an ``lr_lambda`` of ``torch.optim.lr_scheduler.LambdaLR``: 1 for the
    first ``epochs - decay_epochs`` epochs, then falling linearly, ``1 - (e + 1 - (epochs - decay_epochs)) /
    (decay_epochs + 1)`` at (0-based) epoch ``e``, to ``1 / (decay_epochs + 1)`` in the last, and 0 after it (Zhu et
    al.: 100 epochs at the rate, 100 decaying). A closure, not an object, so that ``LambdaLR`` keeps no state of it in
    a checkpoint: a run resumed with more ``epochs`` decays over its new length.

    Args:
        epochs: epochs of the run.
        decay_epochs: the last epochs, in which the rate decays; at most ``epochs``.

    Returns:
        ``factor(epoch) -> float``.
    """
    epochs = check_positive_int("epochs", epochs)
    decay_epochs = check_non_negative_int("decay_epochs", decay_epochs)
    if decay_epochs > epochs:
        raise ValueError(f"decay_epochs must be at most epochs ({epochs}), got {decay_epochs}.")
    constant = epochs - decay_epochs

    def factor(epoch: int) -> float:
        return max(0.0, 1.0 - max(0, epoch + 1 - constant) / (decay_epochs + 1))

    return factor


class CycleGANTrainer(Trainer):
    """
    Trains two generators, ``G_AB = network`` (domain A -> B) and ``G_BA = generator_ba``, and two PatchGAN
    discriminators, ``D_A`` (judges images of A) and ``D_B`` (of B), as Zhu et al. 2017. Each iteration, on a batch of
    ``a`` (the batch's images) and ``b`` (its labels: images of domain B):

    1. ``fake_b = G_AB(a)``, ``rec_a = G_BA(fake_b)``, ``fake_a = G_BA(b)``, ``rec_b = G_AB(fake_a)`` (``inferer``).
    2. Generator step, the discriminators' parameters frozen:
       ``loss = adv_loss + lambda_cycle * cycle_loss + lambda_identity * lambda_cycle * identity_loss`` with
       ``adv_loss = g_adversarial_loss_function(D_B(fake_b)) + g_adversarial_loss_function(D_A(fake_a))``,
       ``cycle_loss = cycle_loss_function(rec_a, a) + cycle_loss_function(rec_b, b)`` and
       ``identity_loss = cycle_loss_function(G_AB(b), b) + cycle_loss_function(G_BA(a), a)`` (left out, and
       ``G_AB(b)``, ``G_BA(a)`` not run, when ``lambda_identity = 0``); ``optimizer`` steps both generators.
    3. Discriminator step on the generated images (detached) after the image pools:
       ``d_loss = d_loss_function(D_A(a), D_A(pool_a(fake_a))) + d_loss_function(D_B(b), D_B(pool_b(fake_b)))``;
       ``d_optimizer`` steps both discriminators.

    The defaults are Zhu et al.'s: least-squares adversarial losses (the discriminator's halved), L1 cycle and
    identity losses, ``lambda_cycle = 10``, ``lambda_identity = 0.5`` (so the identity term weighs 5), pools of 50
    images. Each discriminator runs separately on real and generated images (as theirs: batch statistics, if any, are
    not mixed). The cycle loss needs no pairing of ``a`` and ``b``: given paired batches it uses them as two unpaired
    samples.

    ``engine.state.output`` holds ``image`` (``a``), ``label`` (``b``), ``pred`` (``fake_b``, the translation) and the
    loss terms of :data:`CYCLE_GAN_LOSS_TERMS`; log them with
    ``StatsHandler(output_transform=lambda out: loss_terms(out, CYCLE_GAN_LOSS_TERMS))``. Events:
    ``IterationEvents.FORWARD_COMPLETED`` after the four translations, ``LOSS_COMPLETED`` and ``BACKWARD_COMPLETED``
    for the generators' loss, ``AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED`` /
    ``DISCRIMINATOR_BACKWARD_COMPLETED`` / ``DISCRIMINATOR_MODEL_COMPLETED`` around the discriminators' step, and
    ``IterationEvents.MODEL_COMPLETED`` last.

    Args:
        device: where the networks and batches run.
        max_epochs: number of epochs.
        train_data_loader: batches of ``{"image": (B, C, *spatial), "label": (B, C, *spatial)}``, images of the two
            domains (``prepare_batch`` picks them).
        network: the generator A -> B, ``(B, C, *spatial) -> (B, C, *spatial)``.
        generator_ba: the generator B -> A.
        discriminator_a: scores of domain-A images, a tensor or a list whose last element is the scores (MONAI's
            ``PatchDiscriminator``).
        discriminator_b: scores of domain-B images, likewise.
        optimizer: over the parameters of both generators (only).
        d_optimizer: over the parameters of both discriminators (only).
        lambda_cycle: weight of the cycle loss, ``>= 0``.
        lambda_identity: weight of the identity loss relative to ``lambda_cycle``, ``>= 0``.
        d_loss_function: ``(real_scores, fake_scores) -> loss``;
            :class:`~monai_ext.losses.LeastSquaresDiscriminatorLoss` by default.
        g_adversarial_loss_function: ``fake_scores -> loss``; :class:`~monai_ext.losses.LeastSquaresGeneratorLoss`
            by default.
        cycle_loss_function: ``(input, target) -> loss`` of the cycle and identity terms; ``torch.nn.L1Loss`` by
            default.
        pool_size: images in each :class:`ImagePool` (0: none).
        epoch_length: iterations per epoch, ``len(train_data_loader)`` by default.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: MONAI's ``prepare_batch`` (``(a, b)`` from a batch).
        iteration_update: replaces :py:meth:`_iteration` when given.
        inferer: how a generator is run on images, ``SimpleInferer`` by default.
        postprocessing: transforms applied to the output after each iteration.
        key_train_metric: the key ignite metric, computed every iteration and averaged per epoch.
        additional_metrics: more ignite metrics.
        metric_cmp_fn: how a key metric value is compared with the best one.
        train_handlers: handlers to attach (``CheckpointSaver``, ``StatsHandler``, ``ValidationHandler``, ...).
        amp: automatic mixed precision (``torch.autocast`` on the device's type, one gradient scaler per optimizer).
        event_names: more events to register.
        event_to_attr: event-to-state-attribute map, as in ignite.
        decollate: decollate the output into per-sample dicts after each iteration.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        to_kwargs: more arguments of ``prepare_batch``'s ``to()``.
        amp_kwargs: more arguments of ``torch.autocast``.

    Raises:
        ValueError: a negative or non-finite weight, or an optimizer holding parameters of the other pair of networks.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        generator_ba: nn.Module,
        discriminator_a: nn.Module,
        discriminator_b: nn.Module,
        optimizer: Optimizer,
        d_optimizer: Optimizer,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        d_loss_function: Callable | None = None,
        g_adversarial_loss_function: Callable | None = None,
        cycle_loss_function: Callable | None = None,
        pool_size: int = 50,
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
        generators = nn.ModuleList([network, generator_ba])
        discriminators = nn.ModuleList([discriminator_a, discriminator_b])
        check_optimizer("optimizer", optimizer, generators, discriminators)
        check_optimizer("d_optimizer", d_optimizer, discriminators, generators)
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
        self.generator_ba = generator_ba
        self.discriminator_a = discriminator_a
        self.discriminator_b = discriminator_b
        self.discriminators = discriminators
        self.optimizer = optimizer
        self.d_optimizer = d_optimizer
        self.lambda_cycle = check_non_negative("lambda_cycle", lambda_cycle)
        self.lambda_identity = check_non_negative("lambda_identity", lambda_identity)
        self.d_loss_function = LeastSquaresDiscriminatorLoss() if d_loss_function is None else d_loss_function
        self.g_adversarial_loss_function = (
            LeastSquaresGeneratorLoss() if g_adversarial_loss_function is None else g_adversarial_loss_function
        )
        self.cycle_loss_function = nn.L1Loss() if cycle_loss_function is None else cycle_loss_function
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optim_set_to_none = optim_set_to_none
        device_type = torch.device(device).type
        self.g_scaler = torch.amp.GradScaler(device_type, enabled=amp)
        self.d_scaler = torch.amp.GradScaler(device_type, enabled=amp)

    def _iteration(self, engine: CycleGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """
        One generator step, then one discriminator step, on a batch; see the class docstring.

        Returns:
            ``engine.state.output``: ``image``, ``label``, ``pred`` (``G_AB(image)``) and the loss terms of
            :data:`CYCLE_GAN_LOSS_TERMS`.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        real_a, real_b = batch[0], batch[1]
        engine.state.output = {Keys.IMAGE: real_a, Keys.LABEL: real_b}
        autocast = {"device_type": torch.device(engine.state.device).type, "enabled": engine.amp, **engine.amp_kwargs}
        g_ab, g_ba, d_a, d_b = engine.network, engine.generator_ba, engine.discriminator_a, engine.discriminator_b
        for net in (g_ab, g_ba, d_a, d_b):
            net.train()

        with torch.autocast(**autocast):
            fake_b = engine.inferer(real_a, g_ab)
            rec_a = engine.inferer(fake_b, g_ba)
            fake_a = engine.inferer(real_b, g_ba)
            rec_b = engine.inferer(fake_a, g_ab)
        engine.state.output[Keys.PRED] = fake_b
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        g_adv, d_adv, l1 = engine.g_adversarial_loss_function, engine.d_loss_function, engine.cycle_loss_function
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(**autocast), frozen(engine.discriminators):
            adv_loss = g_adv(_scores(d_b(fake_b)).float()) + g_adv(_scores(d_a(fake_a)).float())
            cycle_loss = l1(rec_a.float(), real_a) + l1(rec_b.float(), real_b)
            loss = adv_loss + engine.lambda_cycle * cycle_loss
            identity_loss = torch.zeros((), device=loss.device)
            if engine.lambda_identity > 0:
                idt_b, idt_a = engine.inferer(real_b, g_ab), engine.inferer(real_a, g_ba)
                identity_loss = l1(idt_b.float(), real_b) + l1(idt_a.float(), real_a)
                loss = loss + engine.lambda_identity * engine.lambda_cycle * identity_loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.g_scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.g_scaler.step(engine.optimizer)
        engine.g_scaler.update()

        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(**autocast):
            real_scores = (_scores(d_a(real_a)).float(), _scores(d_b(real_b)).float())
            pooled_a, pooled_b = engine.pool_a(fake_a.detach()), engine.pool_b(fake_b.detach())
            fake_scores = (_scores(d_a(pooled_a)).float(), _scores(d_b(pooled_b)).float())
            d_loss = d_adv(real_scores[0], fake_scores[0]) + d_adv(real_scores[1], fake_scores[1])
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
        engine.d_scaler.scale(d_loss).backward()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
        engine.d_scaler.step(engine.d_optimizer)
        engine.d_scaler.update()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_MODEL_COMPLETED)

        engine.state.output.update(
            {
                Keys.LOSS: loss.detach(),
                "adv_loss": adv_loss.detach(),
                "cycle_loss": cycle_loss.detach(),
                "identity_loss": identity_loss.detach(),
                "d_loss": d_loss.detach(),
                "d_real": torch.stack([s.detach().mean() for s in real_scores]).mean(),
                "d_fake": torch.stack([s.detach().mean() for s in fake_scores]).mean(),
            }
        )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
