"""
The mean SA score ``mu(x)`` (ProtoSeg paper, eq. 12) as an ignite handler: a per-image quality estimate of a
prediction without ground truth, written beside the predictions; with ground truth, the coverage table (Table 2)
and the correlation of ``mu`` (and of the VoG baseline) with the Dice (Fig. 10).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine
from torch import nn

from monai_ext.handlers.protoseg_hooks import (
    BASIC_UNET_LAYERS,
    INPUT_LAYER,
    FeatureRecorder,
    batch_items,
    item_name,
    shape_groups,
)
from monai_ext.metrics.protoseg import binarize_prediction, dice_from_probabilities, mean_sa_score
from monai_ext.metrics.protoseg_quality import coverage_table, score_correlation
from monai_ext.metrics.variance_of_gradients import VarianceOfGradients
from monai_ext.visualize.protoseg import plot_score_correlation

__all__ = ["ProtoSegQualityHandler"]

logger = logging.getLogger(__name__)


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else x


class ProtoSegQualityHandler:
    """
    Per-image mean SA score ``mu`` (eq. 12): the SA score of every unit of the hooked layers (by default the last two
    convolutions of MONAI's ``BasicUNet``) against the network's own binarised output, averaged; computed from the
    evaluator's forward pass. ``mu`` near 1 means the last features agree with the output: a confident
    prediction; a low ``mu`` flags an image for review.

    At the end of the epoch it writes ``output_dir/<filename>`` (default ``quality.csv``): one row per image with
    its file name and ``mu``, and, when a ``label_transform`` gives the ground truth, the output's Dice; with
    ``vog_checkpoints`` also the Variance of Gradients baseline (:py:class:`~monai_ext.metrics.VarianceOfGradients`).
    With ground truth it also writes ``coverage.csv`` (Table 2: the Dice of the images kept at each coverage,
    ranked by ``mu``, and by VoG), ``quality.json`` (the coverage tables and the correlations of ``mu`` and VoG
    with the Dice) and ``mu_dice.png`` / ``vog_dice.png`` (Fig. 10).

    Args:
        network: the evaluated network (hooked at construction).
        output_dir: where to write; ``None`` writes nothing (see :py:meth:`summary`).
        layers: the modules whose units are averaged; ``None``: the last two convolutions of ``BasicUNet``.
        output_transform: engine output -> ``pred`` (B, K, *spatial): logits, probabilities or one-hot.
        label_transform: engine output -> ground truth, to score ``mu`` against the Dice; ``None`` at inference.
        vog_checkpoints: two or more training checkpoints of the network for the VoG baseline; ``None``, an
            empty list or a single checkpoint (with a warning) skips it.
        coverages: the coverages of the coverage table.
        filename: the per-image CSV file name.
        title: a title for the figures.
    """

    def __init__(
        self,
        network: nn.Module,
        output_dir: str | PathLike | None = None,
        layers: Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] = from_engine("pred"),
        label_transform: Callable[[Any], Any] | None = None,
        vog_checkpoints: Sequence[str | PathLike] | None = None,
        coverages: Sequence[float] = (1.0, 0.9, 0.7, 0.5),
        filename: str = "quality.csv",
        title: str | None = None,
    ) -> None:
        self.layers = list(BASIC_UNET_LAYERS[-2:] if layers is None else layers)
        self.recorder = FeatureRecorder(network, [INPUT_LAYER, *self.layers])
        self.vog = None
        if vog_checkpoints and len(vog_checkpoints) >= 2:
            self.vog = VarianceOfGradients(network, vog_checkpoints)
        elif vog_checkpoints:
            logger.warning("VoG needs 2 or more checkpoints, got %s: skipping the VoG baseline.", list(vog_checkpoints))
        self.output_transform = output_transform
        self.label_transform = label_transform
        self.coverages = tuple(coverages)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.filename = filename
        self.title = title
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the scores of a previous run."""
        self.names: list[str] = []
        self.mu: list[float] = []
        self.dice: list[float] = []
        self.vog_scores: list[float] = []
        self.recorder.clear()

    def attach(self, engine: Engine) -> None:
        """Reset at the start of a run, score every iteration, write at the epoch's end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def __call__(self, engine: Engine) -> None:
        """Score the batch of the last iteration."""
        features = self.recorder.pop()
        preds = batch_items(self.output_transform(engine.state.output))
        labels = batch_items(self.label_transform(engine.state.output)) if self.label_transform else None
        images = features.pop(INPUT_LAYER)
        if len(preds) != images.shape[0]:
            raise ValueError(
                f"Batch of {images.shape[0]} network inputs but {len(preds)} predictions: the handler needs one "
                "forward pass per batch (no sliding window)."
            )
        for idx in shape_groups(preds, *([labels] if labels else [])):
            pred = _plain(torch.stack([preds[i] for i in idx]))
            self.mu += mean_sa_score([f[idx] for f in features.values()], pred).tolist()
            self.names += [item_name(preds[i], f"image_{len(self.names) + n}") for n, i in enumerate(idx)]
            if labels is not None:
                label = _plain(torch.stack([labels[i] for i in idx])).to(pred.device)
                self.dice += dice_from_probabilities(binarize_prediction(pred), label).mean(-1).tolist()
            if self.vog is not None:
                self.vog_scores += self.vog(images[idx], binarize_prediction(pred).argmax(1, keepdim=True)).tolist()

    def summary(self) -> dict[str, Any]:
        """``num_images`` and the mean of ``mu``; with ground truth also the output's mean Dice, ``coverage`` (per
        coverage: images kept, mean and std Dice, ``mu`` threshold) and ``correlation`` (Pearson, Spearman) of
        ``mu`` with the Dice, and the same for VoG (ranked by increasing VoG) when it is computed."""
        if not self.names:
            raise RuntimeError("No image scored yet: run the engine first.")
        out: dict[str, Any] = {"num_images": len(self.names), "mean_mu": float(np.mean(self.mu)), "layers": self.layers}
        if self.dice:
            out["mean_dice"] = float(np.mean(self.dice))
            out["mu"] = {
                "coverage": coverage_table(self.mu, self.dice, self.coverages),
                "correlation": score_correlation(self.mu, self.dice),
            }
            if self.vog_scores:
                out["vog"] = {
                    "coverage": coverage_table(self.vog_scores, self.dice, self.coverages, higher_is_better=False),
                    "correlation": score_correlation(self.vog_scores, self.dice),
                    "num_checkpoints": len(self.vog.state_dicts) if self.vog else 0,
                }
        return out

    def epoch_completed(self, engine: Engine) -> None:
        """Log the summary and write the files (when ``output_dir`` is set)."""
        summary = self.summary()
        message = f"mean SA score mu over {summary['num_images']} images: {summary['mean_mu']:.4f}"
        if "mu" in summary:
            corr = summary["mu"]["correlation"]
            message += f"; correlation with Dice: Pearson {corr['pearson_r']:.3f}, Spearman {corr['spearman_rho']:.3f}"
        logger.info(message)
        if self.output_dir is not None:
            self.write(summary)

    def write(self, summary: dict[str, Any]) -> None:
        """Write the per-image CSV and, with ground truth, the coverage table, correlations and scatter plots."""
        if self.output_dir is None:
            raise ValueError("ProtoSegQualityHandler.write needs an output_dir.")
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        columns = {"filename": self.names, "mu": self.mu}
        if self.dice:
            columns["dice"] = self.dice
        if self.vog_scores:
            columns["vog"] = self.vog_scores
        with open(out / self.filename, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(columns))
            for row in zip(*columns.values()):
                writer.writerow([row[0], *(f"{v:.6f}" for v in row[1:])])
        if "mu" in summary:
            with open(out / "quality.json", "w") as f:
                json.dump(summary, f, indent=1)
            with open(out / "coverage.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["ranked_by", "coverage", "num_images", "mean_dice", "std_dice", "threshold"])
                for key in ("mu", "vog"):
                    for row in summary.get(key, {}).get("coverage", []):
                        writer.writerow(
                            [
                                key,
                                row["coverage"],
                                row["num_images"],
                                f"{row['mean']:.6f}",
                                f"{row['std']:.6f}",
                                f"{row['threshold']:.6g}",
                            ]
                        )
            title = self.title or "ProtoSeg"
            plot_score_correlation(self.mu, self.dice, out / "mu_dice.png", title=f"{title}: mu vs Dice")
            if self.vog_scores:
                plot_score_correlation(
                    self.vog_scores, self.dice, out / "vog_dice.png", xlabel="VoG", title=f"{title}: VoG vs Dice"
                )
        logger.info("wrote the per-image mean SA scores to %s", out / self.filename)
