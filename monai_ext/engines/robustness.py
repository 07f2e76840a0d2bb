"""Robustness sweep: a network's Dice and Jaccard (and, on request, its Hausdorff distance in the images' physical
units, and every image's scores) on a dataset under an attack at each of several budgets, on the sweep engine
:py:class:`~monai_ext.engines.LevelSweep`; in one process, or over the ranks of a process group (``torchrun``), each on
its part of the images."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, MeanIoUHandler, from_engine
from monai.inferers import Inferer, SimpleInferer
from monai.metrics.utils import do_metric_reduction
from monai.transforms import Activationsd, AsDiscreted, Compose
from monai.utils import MetricReduction, convert_to_tensor
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.attacks import SharedTrajectories
from monai_ext.engines.sweep import LevelSweep, engine_metrics
from monai_ext.handlers.hausdorff import PhysicalHausdorffDistance
from monai_ext.metrics import per_image_distances, per_image_scores
from monai_ext.utils.checks import check_number, check_positive_int
from monai_ext.utils.distributed import get_rank, get_world_size
from monai_ext.utils.files import json_safe
from monai_ext.visualize import plot_robustness_curves

__all__ = ["RobustnessSweep", "gather_metric_details", "hausdorff_key", "robustness_summary"]

logger = logging.getLogger(__name__)


def _describe(attack: Callable) -> dict[str, Any]:
    """The name and settings of an attack, with values JSON can hold (others as their ``repr``)."""
    settings = attack.settings() if hasattr(attack, "settings") else {}
    plain = (str, int, float, bool, type(None))

    def jsonable(value: Any) -> Any:
        if isinstance(value, plain):
            return value
        try:  # lists, and nested settings such as an ensemble's attacks
            return json_safe(value)
        except TypeError:
            return repr(value)

    return {"name": type(attack).__name__, **{k: jsonable(v) for k, v in settings.items()}}


def hausdorff_key(percentile: float) -> str:
    """The name of the Hausdorff distance metric at ``percentile`` in a sweep's evaluator and results: ``"hd95"``."""
    return f"hd{percentile:g}"


def gather_metric_details(evaluator: Engine, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """
    The per-image details of the evaluator's metrics ``names`` (``evaluator.state.metric_details``, ``(N, C)``: per
    image and class) on the CPU, in the order of its dataset. Under a process group of several ranks, every rank
    evaluated its part of the images (its data loader's sampler: MONAI's ``DistributedSampler`` with
    ``even_divisible=False``), and every rank gets the details of all the images, gathered
    (``torch.distributed.all_gather_object``) and put back in the dataset's order.

    Raises:
        ValueError: the ranks' samplers do not split the dataset (an image on two ranks, or on none).
    """
    local = {name: convert_to_tensor(evaluator.state.metric_details[name], track_meta=False).cpu() for name in names}
    if get_world_size() == 1:
        return local
    parts: list[Any] = [None] * get_world_size()
    dist.all_gather_object(parts, (list(evaluator.data_loader.sampler), local))
    indices = torch.tensor([index for part, _ in parts for index in part], dtype=torch.long)
    if sorted(indices.tolist()) != list(range(len(evaluator.data_loader.dataset))):
        raise ValueError(
            "the ranks' data loaders must split the dataset, each image on one rank: a DistributedSampler with "
            "even_divisible=False (monai.data), not one that pads the last ranks with repeated images."
        )
    order = indices.argsort()
    return {name: torch.cat([details[name] for _, details in parts])[order] for name in names}


def robustness_summary(evaluator: Engine, per_image: bool = False, hausdorff: str | None = None) -> dict[str, Any]:
    """
    A budget's results in a :py:class:`RobustnessSweep` (the ``summary`` of its
    :py:class:`~monai_ext.engines.LevelSweep`), over the images of every rank (:py:func:`gather_metric_details`):
    ``mean_dice`` and ``mean_jaccard`` as MONAI's handlers compute them (background excluded; an image without a
    foreground class left out), and:

    - with ``hausdorff`` (the name of the evaluator's Hausdorff metric, say ``"hd95"``), per image the mean over the
      classes of its label (:py:func:`~monai_ext.metrics.per_image_distances`) and over the images
      ``"mean_hd95"`` (the images whose distance is finite), ``"hd95_empty"`` (the images whose prediction misses a
      class of their label: an infinite distance, counted here and left out of the mean) and ``"hd95_images"`` (the
      images in the mean; the others have no foreground class in their label, as for Dice);
    - with ``per_image``, under ``"per_image"``, each image's ``mean_dice`` and ``mean_jaccard`` (classes averaged,
      NaN for an image without a foreground class) and, with ``hausdorff``, its distance (NaN where undefined) and
      ``<hausdorff>_empty`` (whether its prediction misses a class of its label), in the data's order.
    """
    overlaps = ("mean_dice", "mean_jaccard")
    details = gather_metric_details(evaluator, [*overlaps, *([hausdorff] if hausdorff is not None else [])])
    # MONAI's reduction of a metric's buffer (it sets the NaN of its input to 0: a copy)
    result = {name: do_metric_reduction(details[name].clone(), MetricReduction.MEAN)[0].item() for name in overlaps}
    scores = {name: per_image_scores(details[name]) for name in overlaps} if per_image else {}
    if hausdorff is not None:
        values, empty = per_image_distances(details[hausdorff], ~torch.isnan(details["mean_dice"]))
        finite = values[torch.isfinite(values)]
        mean = float(finite.mean()) if finite.numel() else float("nan")
        result |= {
            f"mean_{hausdorff}": mean,
            f"{hausdorff}_empty": int(empty.sum()),
            f"{hausdorff}_images": finite.numel(),
        }
        scores |= {hausdorff: values, f"{hausdorff}_empty": empty} if per_image else {}
    if per_image:
        result["per_image"] = {name: value.tolist() for name, value in scores.items()}
    return result


class RobustnessSweep:
    """
    Evaluate a segmentation network on a dataset under an attack at every budget of a list (the robustness curve
    of the NLCEN paper, Fig. 4 and 7): a :py:class:`~monai_ext.engines.LevelSweep` of MONAI's
    :py:class:`~monai.engines.SupervisedEvaluator` over ``attack(eps)``, where ``MeanDice`` / ``MeanIoUHandler``
    (background excluded) score the argmax predictions on the attacked images against the true labels.
    ``eps = 0`` is the clean evaluation. The budgets share their work where the attack allows it
    (:py:class:`~monai_ext.attacks.SharedTrajectories`: the same results, fewer passes for an L-inf attack with a
    fixed step and no random start, such as the NLCEN paper's I-FGSM); list them in increasing order to share the
    most.

    Metrics are computed at the network's input resolution (the resolution the attack works at). With
    ``hausdorff_percentile``, the Hausdorff distance at that percentile is measured too, in the units of each label's
    affine (mm for NIfTI; :py:class:`~monai_ext.handlers.PhysicalHausdorffDistance`), and reported as its mean over
    the images where it is finite with a count of the images whose prediction is empty (:py:func:`robustness_summary`).

    Under a process group of several ranks (``torchrun``; MONAI's ``DistributedSampler(dataset, shuffle=False,
    even_divisible=False)`` in every rank's ``dataloader``), each rank evaluates and attacks its part of the images and
    every budget's results are those of all the images (:py:func:`robustness_summary`), the same as in one process
    wherever an image's attack does not depend on the images beside it. Rank 0 alone writes ``output_dir``; every rank
    resumes from rank 0's ``<name>.json``, so that all of them skip the same budgets.

    Args:
        network: the segmentation network, returning logits ``(B, num_classes, *spatial)`` in eval mode.
        dataloader: batches of ``{"image": (B, C, *spatial), "label": (B, 1, *spatial)}`` with class-index labels
            and images in the attack's data range.
        attack: a factory ``attack(eps) -> callable(network, images, labels) -> images`` (for example
            ``functools.partial(monai_ext.attacks.IterativeFGSM, target="inverse")``).
        epsilons: the budgets, in the attack's unit (intensity levels by default), each ``>= 0``.
        num_classes: number of classes, background included.
        device: where the network and the batches run.
        inferer: the inferer the network is evaluated and attacked through; ``SimpleInferer`` (the network on the
            whole batch) by default. A ``SlidingWindowInferer`` on whole volumes: the attack's gradient goes through
            the sliding window, window chunk by window chunk
            (:py:func:`~monai_ext.attacks.sliding_window.sliding_window_gradient`), and the results file records
            the inferer, so that a rerun with another one is refused.
        output_dir: if given, :py:meth:`run` writes ``<name>.json`` there after each budget (a rerun with the same
            settings computes only the budgets it lacks, see :py:class:`~monai_ext.engines.LevelSweep`) and the
            curve ``<name>.png`` at the end.
        name: file name stem of the outputs.
        label: the curve's legend label in the plot.
        overwrite: replace a ``<name>.json`` of a sweep with other settings (another network, data or attack)
            instead of refusing.
        level_name: what the levels are, the key of each level in the results: ``"epsilon"`` (an L-inf budget) by
            default, or another budget of the attack (``"q_max"`` for :py:class:`~monai_ext.attacks.VAFA`); 0 is the
            clean evaluation whatever the name.
        hausdorff_percentile: also measure the Hausdorff distance at this percentile (``95``: HD95), in ``(0, 100]``;
            ``None``: not measured.
        per_image: keep every image's scores in each budget's results (``"per_image"``, see
            :py:func:`robustness_summary`), in the results file too, so that a resumed sweep has them.
        summary: ``evaluator -> dict``, a budget's results, instead of the default (:py:func:`robustness_summary` with
            ``per_image`` and the Hausdorff metric, or under a process group of several ranks; MONAI's metrics as they
            are otherwise). Under several ranks, it must gather the ranks' results as :py:func:`robustness_summary`
            does.
    """

    def __init__(
        self,
        network: nn.Module,
        dataloader: DataLoader,
        attack: Callable[[float], Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]],
        epsilons: Sequence[float],
        num_classes: int,
        device: str | torch.device = "cpu",
        inferer: Inferer | None = None,
        output_dir: str | Path | None = None,
        name: str = "robustness",
        label: str = "network",
        overwrite: bool = False,
        level_name: str = "epsilon",
        hausdorff_percentile: float | None = None,
        per_image: bool = False,
        summary: Callable[[Engine], dict[str, Any]] | None = None,
    ) -> None:
        if check_positive_int("num_classes", num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        metric_args = {"include_background": False, "output_transform": from_engine(["pred", "label"])}
        additional = {"mean_jaccard": MeanIoUHandler(**metric_args)}
        hausdorff = None
        if hausdorff_percentile is not None:
            percentile = check_number("hausdorff_percentile", hausdorff_percentile, low=0.0, high=100.0)
            if percentile == 0:
                raise ValueError("hausdorff_percentile must be in (0, 100], got 0.")
            hausdorff = hausdorff_key(percentile)
            additional[hausdorff] = PhysicalHausdorffDistance(percentile=percentile, **metric_args)
        if summary is None and (per_image or hausdorff is not None or get_world_size() > 1):
            summary = functools.partial(robustness_summary, per_image=bool(per_image), hausdorff=hausdorff)
        post = [Activationsd(keys="pred", softmax=True)]
        post += [AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=num_classes)]
        evaluator = SupervisedEvaluator(
            device=torch.device(device),
            val_data_loader=dataloader,
            network=network,
            inferer=SimpleInferer() if inferer is None else inferer,
            postprocessing=Compose(post),
            key_val_metric={"mean_dice": MeanDice(**metric_args)},
            additional_metrics=additional,
        )
        epsilons = LevelSweep.check_levels(epsilons, level_name)
        self.attack, self.epsilons, self.num_images = attack, epsilons, len(dataloader.dataset)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.name, self.label, self.level_name = name, label, level_name
        results_file = None if self.output_dir is None else self.output_dir / f"{name}.json"
        header = {"label": label, "attacks": self._attacks(), "num_images": self.num_images}
        header |= {"level_name": level_name} if level_name != "epsilon" else {}  # the key of the levels (a report's)
        shared = SharedTrajectories(attack, [eps for eps in epsilons if eps > 0])  # 0 is the clean evaluation
        perturbation = shared if get_world_size() == 1 else _EveryRank(shared)
        self.sweep = LevelSweep(evaluator, perturbation, epsilons, summary=summary or engine_metrics,
                                level_name=level_name, results_file=results_file, header=header,
                                overwrite=overwrite)  # fmt: skip

    def _attacks(self) -> list[dict[str, Any]]:
        """The name and settings of the attack at each budget above 0."""
        return [_describe(self.attack(eps)) for eps in self.epsilons if eps > 0]

    def run(self) -> dict[str, Any]:
        """
        Run the sweep.

        Returns:
            ``{"label", "attacks", "num_images", "results": [{"epsilon", "mean_dice", "mean_jaccard", "seconds"}],
            "seconds"}`` (``attacks``: the name and settings of the attack at each budget above 0; each result's
            ``seconds``: the run time of its budget, as measured when it was computed, in this run or the one it
            resumes; ``"seconds"``: their sum, the sweep's run time; a ``level_name`` other than ``"epsilon"`` is
            the key of the levels, and is in the summary as ``"level_name"``); with ``output_dir``, also in
            ``output_dir/<name>.json`` (with the sweep's settings), and the curve in ``output_dir/<name>.png``
            (written by rank 0 of a process group).
        """
        summary = {"label": self.label, "attacks": self._attacks(), "num_images": self.num_images}
        summary |= {"level_name": self.level_name} if self.level_name != "epsilon" else {}
        summary["results"] = self.sweep.run()
        summary["seconds"] = round(sum(r.get("seconds") or 0.0 for r in summary["results"]), 2)
        if self.output_dir is not None and get_rank() == 0:
            plot_robustness_curves([summary], self.output_dir / f"{self.name}.png", xlabel=self.level_name)
            logger.info("wrote %s and %s", self.output_dir / f"{self.name}.json", self.output_dir / f"{self.name}.png")
        return summary


class _EveryRank:
    """
    A sweep's attack factory under a process group of several ranks: ``factory(eps)``, where an attack that counts the
    images each of its members won (a worst-case ensemble's ``win_counts()``, the ``"wins"`` of
    :py:class:`~monai_ext.engines.LevelSweep`'s results) counts those of every rank. The ranks read the counts at the
    same points of the sweep (before and after each budget they compute), where they are gathered.
    """

    def __init__(self, factory: Callable[[float], Any]) -> None:
        self.__wrapped__ = factory  # a sweep's settings describe the factory: the same as in one process

    def __call__(self, eps: float) -> Any:
        attack = self.__wrapped__(eps)
        return _WinsOfEveryRank(attack) if callable(getattr(attack, "win_counts", None)) else attack


class _WinsOfEveryRank:
    """``attack``, with ``win_counts()`` summed over the ranks (see :py:class:`_EveryRank`)."""

    def __init__(self, attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.attack = attack

    def __call__(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.attack(network, images, labels)

    def win_counts(self) -> dict[str, int]:
        counts: list[Any] = [None] * get_world_size()
        dist.all_gather_object(counts, dict(self.attack.win_counts()))
        return {name: sum(rank[name] for rank in counts) for name in counts[0]}
