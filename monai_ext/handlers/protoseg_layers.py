"""
ProtoSeg layer and unit analysis as an ignite handler: the SA score of every hooked layer of a network, computed
in the same forward pass as inference (ProtoSeg paper, sections 4.4, 4.5 and 4.7: Fig. 5, 6, 7, Tables 1 and 3).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
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
from monai_ext.metrics.protoseg import (
    binarize_prediction,
    compute_layer_sa_scores,
    compute_sa_score,
    dice_from_probabilities,
    protoseg,
)
from monai_ext.visualize.protoseg import plot_layer_scores, plot_sams, plot_unit_scores

__all__ = ["ProtoSegLayerHandler", "mean_std"]

logger = logging.getLogger(__name__)

#: how many layers get SAM images by default (spread evenly from the first to the last).
_DEFAULT_NUM_SAM_LAYERS = 6


def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of ``values`` (population standard deviation)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


class ProtoSegLayerHandler:
    """
    Segmentation ability of the layers of a network, computed from the feature maps of the evaluator's own forward
    pass (forward hooks, :py:class:`~monai_ext.handlers.FeatureRecorder`): for every image, the SA score of each
    layer (Dice of the ProtoSeg SAM against the ground truth, prototypes from the binarised output, eq. 6-8), the
    SA score of each unit (channel) of one layer, the Dice of the output itself, and the SAM images of a few layers.

    With ``include_input`` the network's input intensities are scored too, as layer 0: the input separability
    ``S_x`` of section 4.7, whose gap to the output's Dice is ``d = Dice(output) - S_x`` (Table 3's ``m(d)``).

    Attach it to a :py:class:`~monai.engines.SupervisedEvaluator` (``val_handlers``). At the end of the epoch it
    writes to ``output_dir``:

    - ``layers.csv`` / ``layers.json``: mean and std of the SA score per layer (Fig. 5 as a table), the output's
      Dice, the last layer's SA (Table 1), the input separability (Table 3), the sorted unit scores (Fig. 7);
    - ``per_image.csv``: one row per image: file name, output Dice, the SA score of every layer;
    - ``layers.png`` (Fig. 5), ``units.png`` and ``units.csv`` (Fig. 7), ``sams.png`` (Fig. 6).

    Scores are computed at the resolution of the evaluator's ``pred`` and ``label`` after its postprocessing (the
    SAMs of coarse layers are upsampled there); ``pred`` must hold one channel per class (logits, probabilities
    or one-hot) and ``label`` class indices or one-hot. The handler runs in a single process.

    Args:
        network: the evaluated network (hooked at construction).
        output_dir: where to write the tables and figures; ``None`` writes nothing (see :py:meth:`summary`).
        layers: module names to analyse, in forward order; ``None``: the 18 convolutions of MONAI's ``BasicUNet``.
        include_input: also score the input intensities (layer 0, ``S_x``).
        unit_layer: the layer of the unit analysis, a name or an index into ``layers``; ``None`` skips it.
        sam_layers: layers (names or indices into ``layers``) of the SAM images; ``None``: 6 spread evenly.
        num_sam_images: SAM images are drawn for the first ``num_sam_images`` images (0: none).
        include_background: average the Dice over all classes, background included (default: foreground only).
        output_transform: engine output -> ``(pred, label)``, batched tensors or lists of items.
        title: a title for the figures (the dataset and the run, for example).
    """

    def __init__(
        self,
        network: nn.Module,
        output_dir: str | Path | None = None,
        layers: Sequence[str] | None = None,
        include_input: bool = True,
        unit_layer: str | int | None = -1,
        sam_layers: Sequence[str | int] | None = None,
        num_sam_images: int = 4,
        include_background: bool = False,
        output_transform: Callable[[Any], tuple[Any, Any]] = from_engine(["pred", "label"]),
        title: str | None = None,
    ) -> None:
        self.recorder = FeatureRecorder(network, [INPUT_LAYER, *(BASIC_UNET_LAYERS if layers is None else layers)])
        self.layers = [name for name in self.recorder.layers if name != INPUT_LAYER]
        self.include_input = include_input
        self.unit_layer = None if unit_layer is None else self._resolve(unit_layer)
        if sam_layers is None:
            count = min(_DEFAULT_NUM_SAM_LAYERS, len(self.layers))
            sam_layers = sorted({int(round(i)) for i in np.linspace(0, len(self.layers) - 1, count)})
        self.sam_layers = [self._resolve(layer) for layer in sam_layers]
        if num_sam_images < 0:
            raise ValueError(f"num_sam_images must be >= 0, got {num_sam_images}.")
        self.num_sam_images = num_sam_images
        self.include_background = include_background
        self.output_transform = output_transform
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.title = title
        self.reset()

    def _resolve(self, layer: str | int) -> str:
        """A layer name from a name or an index into ``layers``."""
        if isinstance(layer, int):
            if not -len(self.layers) <= layer < len(self.layers):
                raise ValueError(f"layer index {layer} is out of range for {len(self.layers)} layers.")
            return self.layers[layer]
        if layer not in self.layers:
            raise ValueError(f"{layer!r} is not one of the analysed layers {self.layers}.")
        return layer

    @property
    def scored_layers(self) -> list[str]:
        """The names of the scored layers, in table order: ``"input"`` first when ``include_input``."""
        return ([INPUT_LAYER] if self.include_input else []) + self.layers

    @property
    def layer_labels(self) -> list[str]:
        """Short labels of the scored layers: ``"in"`` for the input, ``"1"`` ... ``"L"`` for the layers."""
        return (["in"] if self.include_input else []) + [str(i + 1) for i in range(len(self.layers))]

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the scores of a previous run."""
        self.names: list[str] = []
        self.output_dice: list[float] = []
        self.layer_scores: list[list[float]] = []
        self.unit_scores: list[np.ndarray] = []
        self.sam_rows: list[dict[str, Any]] = []
        self.shapes: dict[str, list[int]] = {}
        self.recorder.clear()

    def attach(self, engine: Engine) -> None:
        """Reset at the start of a run, score every iteration, write the tables and figures at the epoch's end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def __call__(self, engine: Engine) -> None:
        """Score the batch of the last iteration from the features its forward pass recorded."""
        features = self.recorder.pop()
        preds, labels = (batch_items(x) for x in self.output_transform(engine.state.output))
        if len(preds) != len(labels) or len(preds) != features[INPUT_LAYER].shape[0]:
            raise ValueError(
                f"Batch of {features[INPUT_LAYER].shape[0]} network inputs but {len(preds)} predictions and "
                f"{len(labels)} labels: the handler needs one forward pass per batch (no sliding window)."
            )
        self.shapes = {name: list(features[name].shape[1:]) for name in self.scored_layers}
        for idx in shape_groups(preds, labels):
            self.score(
                {name: f[idx] for name, f in features.items()},
                torch.stack([preds[i] for i in idx]),
                torch.stack([labels[i] for i in idx]),
                [item_name(preds[i], f"image_{len(self.names) + n}") for n, i in enumerate(idx)],
            )

    @torch.no_grad()
    def score(
        self, features: dict[str, torch.Tensor], pred: torch.Tensor, label: torch.Tensor, names: list[str]
    ) -> None:
        """
        Score a batch and keep the results: the offline computation that the handler runs after each iteration.

        Args:
            features: layer name -> (B, C, *spatial) feature map, with the network's input under ``"input"``.
            pred: (B, K, *spatial) the network's output (logits, probabilities or one-hot).
            label: (B, 1 or K, *spatial) the ground truth.
            names: a name per image for the tables.
        """
        mask = binarize_prediction(pred.as_tensor() if hasattr(pred, "as_tensor") else pred)
        label = (label.as_tensor() if hasattr(label, "as_tensor") else label).to(mask.device)
        bg = self.include_background
        self.output_dice += dice_from_probabilities(mask, label, bg).mean(-1).tolist()
        scores = compute_layer_sa_scores(
            [features[name] for name in self.scored_layers], mask, label, include_background=bg
        )
        self.layer_scores += scores.mean(-1).tolist()
        self.names += names
        for i in range(mask.shape[0]):
            one = slice(i, i + 1)
            if self.unit_layer is not None:
                units = compute_sa_score(
                    features[self.unit_layer][one], mask[one], label[one], include_background=bg, per_unit=True
                )
                self.unit_scores.append(units.mean(-1)[0].cpu().numpy())
            if len(self.sam_rows) < self.num_sam_images:
                self.sam_rows.append(
                    self._sam_row({k: f[one] for k, f in features.items()}, mask[one], label[one], names[i])
                )

    def _sam_row(self, features: dict[str, torch.Tensor], mask: torch.Tensor, label: torch.Tensor, name: str) -> dict:
        """One row of the SAM figure (Fig. 6) for a batch of one image: class-index maps at the label's size."""
        sams = {}
        for layer in self.sam_layers:
            prob = protoseg(features[layer], mask, spatial_size=label.shape[2:])
            sams[str(self.layers.index(layer) + 1)] = prob.argmax(1)[0].cpu().numpy()
        return {
            "name": Path(name).name,
            "image": features[INPUT_LAYER][0].float().cpu().numpy(),
            "label": (label[0, 0] if label.shape[1] == 1 else label[0].argmax(0)).cpu().numpy(),
            "pred": mask[0].argmax(0).cpu().numpy(),
            "sams": sams,
        }

    def summary(self) -> dict[str, Any]:
        """
        The results so far: ``num_images``, ``output_dice`` (mean/std), ``layers`` (index, label, name, feature
        shape, mean/std SA per layer), ``last_layer`` (the last layer's SA: Table 1), ``separability`` (``S_x``,
        the output's Dice and ``m(d)``: Table 3, with ``include_input``), ``units`` (the unit layer's mean SA per
        unit and the units sorted by it: Fig. 7).
        """
        if not self.names:
            raise RuntimeError("No image scored yet: run the engine first.")
        scores = np.asarray(self.layer_scores, float)  # (N, L)
        dice = np.asarray(self.output_dice, float)
        layers = [
            {"index": idx, "label": lab, "name": name, "feature_shape": self.shapes.get(name), **mean_std(scores[:, j])}
            for j, (idx, lab, name) in enumerate(
                zip(
                    range(0 if self.include_input else 1, len(self.scored_layers) + 1),
                    self.layer_labels,
                    self.scored_layers,
                )
            )
        ]
        out: dict[str, Any] = {
            "num_images": len(self.names),
            "output_dice": mean_std(dice),
            "layers": layers,
            "last_layer": {"name": self.layers[-1], **mean_std(scores[:, -1])},
        }
        if self.include_input:
            out["separability"] = {
                "sx": mean_std(scores[:, 0]),
                "output_dice": mean_std(dice),
                "m_d": mean_std(dice - scores[:, 0]),
            }
        if self.unit_layer is not None and self.unit_scores:
            units = np.stack(self.unit_scores).mean(axis=0)
            order = np.argsort(-units, kind="stable")
            out["units"] = {
                "layer": self.unit_layer,
                "index": self.layers.index(self.unit_layer) + 1,
                "mean_per_unit": units.tolist(),
                "sorted_units": order.tolist(),
                "sorted_scores": units[order].tolist(),
            }
        return out

    def epoch_completed(self, engine: Engine) -> None:
        """Log the per-layer table and write the files (when ``output_dir`` is set)."""
        summary = self.summary()
        logger.info(
            "ProtoSeg over %d images: output Dice %.4f, SA score per layer %s",
            summary["num_images"],
            summary["output_dice"]["mean"],
            ", ".join(f"{row['label']}: {row['mean']:.3f}" for row in summary["layers"]),
        )
        if self.output_dir is not None:
            self.write(summary)

    def write(self, summary: dict[str, Any]) -> None:
        """Write the tables and figures of ``summary`` to ``output_dir``."""
        if self.output_dir is None:
            raise ValueError("ProtoSegLayerHandler.write needs an output_dir.")
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "layers.json", "w") as f:
            json.dump(summary, f, indent=1)
        with open(out / "layers.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "name", "feature_shape", "mean_sa", "std_sa", "num_images"])
            for row in summary["layers"]:
                shape = "x".join(map(str, row["feature_shape"] or []))
                writer.writerow(
                    [
                        row["index"],
                        row["label"],
                        row["name"],
                        shape,
                        f"{row['mean']:.6f}",
                        f"{row['std']:.6f}",
                        row["n"],
                    ]
                )
            dice = summary["output_dice"]
            writer.writerow(["", "output", "output", "", f"{dice['mean']:.6f}", f"{dice['std']:.6f}", dice["n"]])
        with open(out / "per_image.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "output_dice", *(f"sa_{label}" for label in self.layer_labels)])
            for name, dice_i, scores in zip(self.names, self.output_dice, self.layer_scores):
                writer.writerow([name, f"{dice_i:.6f}", *(f"{s:.6f}" for s in scores)])
        title = self.title or "ProtoSeg"
        plot_layer_scores(
            {"SA score": [row["mean"] for row in summary["layers"]]},
            self.layer_labels,
            out / "layers.png",
            stds={"SA score": [row["std"] for row in summary["layers"]]},
            references={"SA score": summary["output_dice"]["mean"]},
            title=f"{title}: SA score per layer ({summary['num_images']} images)",
        )
        if "units" in summary:
            units = summary["units"]
            with open(out / "units.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["rank", "unit", "mean_sa"])
                for rank, (unit, score) in enumerate(zip(units["sorted_units"], units["sorted_scores"]), start=1):
                    writer.writerow([rank, unit, f"{score:.6f}"])
            plot_unit_scores(
                units["mean_per_unit"],
                out / "units.png",
                reference=summary["output_dice"]["mean"],
                title=f"{title}: units of layer {units['index']} ({units['layer']})",
            )
        if self.sam_rows:
            plot_sams(self.sam_rows, out / "sams.png", title=f"{title}: SAMs")
        logger.info("wrote the ProtoSeg layer analysis to %s", out)
