"""Robustness sweep: a network's Dice and Jaccard on a dataset under an attack at each of several budgets, on the
sweep engine :py:class:`~monai_ext.engines.LevelSweep`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import MeanDice, MeanIoUHandler, from_engine
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Activationsd, AsDiscreted, Compose
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.attacks import SharedTrajectories
from monai_ext.engines.sweep import LevelSweep
from monai_ext.utils.checks import check_positive_int
from monai_ext.utils.files import json_safe
from monai_ext.visualize import plot_robustness_curves

__all__ = ["RobustnessSweep"]

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

    Metrics are computed at the network's input resolution (the resolution the attack works at).

    Args:
        network: the segmentation network, returning logits ``(B, num_classes, *spatial)`` in eval mode.
        dataloader: batches of ``{"image": (B, C, *spatial), "label": (B, 1, *spatial)}`` with class-index labels
            and images in the attack's data range.
        attack: a factory ``attack(eps) -> callable(network, images, labels) -> images`` (for example
            ``functools.partial(monai_ext.attacks.IterativeFGSM, target="inverse")``).
        epsilons: the budgets, in the attack's unit (intensity levels by default), each ``>= 0``.
        num_classes: number of classes, background included.
        device: where the network and the batches run.
        inferer: the evaluator's inferer; ``SimpleInferer`` by default.
        output_dir: if given, :py:meth:`run` writes ``<name>.json`` there after each budget (a rerun with the same
            settings computes only the budgets it lacks, see :py:class:`~monai_ext.engines.LevelSweep`) and the
            curve ``<name>.png`` at the end.
        name: file name stem of the outputs.
        label: the curve's legend label in the plot.
        overwrite: replace a ``<name>.json`` of a sweep with other settings (another network, data or attack)
            instead of refusing.
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
    ) -> None:
        if check_positive_int("num_classes", num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        metric_args = {"include_background": False, "output_transform": from_engine(["pred", "label"])}
        post = [Activationsd(keys="pred", softmax=True)]
        post += [AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=num_classes)]
        evaluator = SupervisedEvaluator(
            device=torch.device(device),
            val_data_loader=dataloader,
            network=network,
            inferer=SimpleInferer() if inferer is None else inferer,
            postprocessing=Compose(post),
            key_val_metric={"mean_dice": MeanDice(**metric_args)},
            additional_metrics={"mean_jaccard": MeanIoUHandler(**metric_args)},
        )
        epsilons = LevelSweep.check_levels(epsilons, "epsilon")
        self.attack, self.epsilons, self.num_images = attack, epsilons, len(dataloader.dataset)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.name, self.label = name, label
        results_file = None if self.output_dir is None else self.output_dir / f"{name}.json"
        header = {"label": label, "attacks": self._attacks(), "num_images": self.num_images}
        shared = SharedTrajectories(attack, epsilons)
        self.sweep = LevelSweep(evaluator, shared, epsilons, level_name="epsilon", results_file=results_file,
                                header=header, overwrite=overwrite)  # fmt: skip

    def _attacks(self) -> list[dict[str, Any]]:
        """The name and settings of the attack at each budget above 0."""
        return [_describe(self.attack(eps)) for eps in self.epsilons if eps > 0]

    def run(self) -> dict[str, Any]:
        """
        Run the sweep.

        Returns:
            ``{"label", "attacks", "num_images", "results": [{"epsilon", "mean_dice", "mean_jaccard", "seconds"}]}``
            (``attacks``: the name and settings of the attack at each budget above 0); with ``output_dir``, also
            in ``output_dir/<name>.json`` (with the sweep's settings), and the curve in ``output_dir/<name>.png``.
        """
        summary = {"label": self.label, "attacks": self._attacks(), "num_images": self.num_images}
        summary["results"] = self.sweep.run()
        if self.output_dir is not None:
            plot_robustness_curves([summary], self.output_dir / f"{self.name}.png")
            logger.info("wrote %s and %s", self.output_dir / f"{self.name}.json", self.output_dir / f"{self.name}.png")
        return summary
