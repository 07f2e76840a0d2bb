"""
The ProtoSeg noise study (He et al., MedIA 2023, section 4.8, Fig. 16): the SA score of every layer with
uniform noise added to the input, at several noise levels, minus the SA score on the clean input.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torch.utils.data import DataLoader

from monai_ext.handlers.prepare_batch import AdversarialPrepareBatch
from monai_ext.handlers.protoseg_layers import ProtoSegLayerHandler
from monai_ext.visualize.protoseg import plot_noise_study

__all__ = ["ProtoSegNoiseStudy", "UniformNoise"]

logger = logging.getLogger(__name__)


class UniformNoise:
    """
    Add noise drawn uniformly from ``[-level, level]`` to every pixel/voxel and channel of a batch of images, with
    no clipping (the images' unit is the network's input unit, [0, 1] in the bundles). A perturbation with the
    attack signature ``(network, images, labels) -> images``, so that
    :py:class:`~monai_ext.handlers.AdversarialPrepareBatch` applies it in an engine. The noise is drawn on the CPU
    from a generator seeded once, so a run is reproducible on any device.

    Args:
        level: the largest absolute noise value, ``>= 0``.
        seed: the generator's seed.
    """

    def __init__(self, level: float, seed: int = 0) -> None:
        if not level >= 0.0:
            raise ValueError(f"level must be >= 0, got {level}.")
        self.level = float(level)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.rand(images.shape, generator=self.generator, dtype=torch.float32)
        return images + ((2.0 * noise - 1.0) * self.level).to(device=images.device, dtype=images.dtype)


class ProtoSegNoiseStudy:
    """
    Evaluate the SA score of every layer (and of the input, ``S_x``) on a dataset with clean inputs and with
    :py:class:`UniformNoise` at each level, with MONAI's :py:class:`~monai.engines.SupervisedEvaluator` and
    :py:class:`ProtoSegLayerHandler`. The prototypes come from the network's output on the noisy input and the SAMs
    are scored against the ground truth, so ``SA(noisy) - SA(clean)`` per layer (Fig. 16) shows where noise hurts.

    Args:
        network: the segmentation network.
        dataloader: batches of ``{"image", "label"}`` (class-index labels, images in the network's input unit).
        levels: the noise levels, each ``> 0`` (the paper: 0.1 to 1).
        layers: module names to analyse; ``None``: the 18 convolutions of MONAI's ``BasicUNet``.
        device: where the network and the batches run.
        inferer: the evaluator's inferer; ``SimpleInferer`` by default.
        output_dir: if given, :py:meth:`run` writes ``noise.json``, ``noise.csv`` and ``noise.png`` there.
        seed: the noise seed (the same for every level).
        title: a title for the figure.
    """

    def __init__(
        self,
        network: nn.Module,
        dataloader: DataLoader,
        levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        layers: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        inferer: Inferer | None = None,
        output_dir: str | PathLike | None = None,
        seed: int = 0,
        title: str | None = None,
    ) -> None:
        levels = [float(v) for v in levels]
        bad = [v for v in levels if not v > 0.0]
        if not levels or bad:
            raise ValueError(f"levels must list noise levels > 0, got {levels}.")
        self.network = network
        self.dataloader = dataloader
        self.levels = levels
        self.layers = layers
        self.device = torch.device(device)
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.seed = seed
        self.title = title

    def _evaluate(self, level: float) -> dict[str, Any]:
        handler = ProtoSegLayerHandler(
            self.network, None, self.layers, include_input=True, unit_layer=None, num_sam_images=0
        )
        kwargs: dict[str, Any] = {}
        if level > 0:
            kwargs["prepare_batch"] = AdversarialPrepareBatch(UniformNoise(level, self.seed), self.network)
        evaluator = SupervisedEvaluator(
            device=self.device,
            val_data_loader=self.dataloader,
            network=self.network,
            inferer=self.inferer,
            val_handlers=[handler],
            **kwargs,
        )
        try:
            evaluator.run()
        finally:
            handler.recorder.remove()
        summary = handler.summary()
        logger.info("noise %g: output Dice %.4f", level, summary["output_dice"]["mean"])
        return summary

    def run(self) -> dict[str, Any]:
        """
        Run the study.

        Returns:
            ``{"levels", "layer_labels", "layer_names", "clean": [mean SA per layer], "noisy": [[...] per level],
            "difference": [[noisy - clean] per level], "output_dice": {"clean", "noisy": [...]}}``, also written to
            ``output_dir`` when set.
        """
        clean = self._evaluate(0.0)
        noisy = [self._evaluate(level) for level in self.levels]
        clean_sa = [row["mean"] for row in clean["layers"]]
        noisy_sa = [[row["mean"] for row in s["layers"]] for s in noisy]
        result = {
            "levels": self.levels,
            "noise": "uniform in [-level, level] added to the input, no clipping",
            "num_images": clean["num_images"],
            "layer_labels": [row["label"] for row in clean["layers"]],
            "layer_names": [row["name"] for row in clean["layers"]],
            "clean": clean_sa,
            "noisy": noisy_sa,
            "difference": [[n - c for n, c in zip(row, clean_sa)] for row in noisy_sa],
            "output_dice": {"clean": clean["output_dice"]["mean"], "noisy": [s["output_dice"]["mean"] for s in noisy]},
        }
        if self.output_dir is not None:
            self.write(result)
        return result

    def write(self, result: dict[str, Any]) -> None:
        """Write ``noise.json``, ``noise.csv`` (per level: output Dice, SA difference per layer) and ``noise.png``."""
        if self.output_dir is None:
            raise ValueError("ProtoSegNoiseStudy.write needs an output_dir.")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "noise.json", "w") as f:
            json.dump(result, f, indent=1)
        with open(self.output_dir / "noise.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["level", "output_dice", *(f"sa_diff_{label}" for label in result["layer_labels"])])
            writer.writerow([0.0, f"{result['output_dice']['clean']:.6f}", *(["0"] * len(result["layer_labels"]))])
            for level, dice, diff in zip(result["levels"], result["output_dice"]["noisy"], result["difference"]):
                writer.writerow([level, f"{dice:.6f}", *(f"{d:.6f}" for d in diff)])
        title = self.title or "ProtoSeg"
        plot_noise_study(
            result["levels"],
            result["layer_labels"],
            result["difference"],
            self.output_dir / "noise.png",
            title=f"{title}: SA under input noise",
        )
        logger.info("wrote the noise study to %s", self.output_dir)
