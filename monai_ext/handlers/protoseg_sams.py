"""An ignite handler that draws the segmentation ability maps (SAMs) of a few layers for the first images of an
evaluation (ProtoSeg paper, Fig. 6)."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from monai_ext.handlers.feature_recorder import item_name, layer_name, stack_items
from monai_ext.metrics import binarize_prediction, segmentation_ability_map
from monai_ext.networks.utils import INPUT_LAYER
from monai_ext.visualize import plot_sams

__all__ = ["SAMPlotHandler"]

#: how many layers get SAM images by default (spread evenly from the first to the last).
_DEFAULT_NUM_LAYERS = 6


class SAMPlotHandler:
    """
    For the first ``num_images`` images of an epoch, the SAM of each of ``layers`` (prototypes from the binarised
    output, at the label's resolution) beside the image, the ground truth and the output; drawn to ``path`` at the
    epoch's end with :py:func:`~monai_ext.visualize.plot_sams`. Reads the features a
    :py:class:`~monai_ext.handlers.FeatureRecorderHandler` put in the engine's output.

    Args:
        path: the PNG file.
        layers: recorded layers (names, or indices into the recorded layers other than ``"input"``); ``None``: 6
            spread evenly. The figure labels them ``1`` ... ``L`` by their place among the recorded layers.
        num_images: how many images (rows) to draw.
        title: the figure's title.
        keys: the output keys of the features, the prediction, the label and the image.
    """

    def __init__(
        self,
        path: str | PathLike,
        layers: Sequence[str | int] | None = None,
        num_images: int = 4,
        title: str | None = None,
        keys: Sequence[str] = ("features", "pred", "label", "image"),
    ) -> None:
        self.path, self.layers, self.num_images, self.title, self.keys = Path(path), layers, num_images, title, keys
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: self.rows and self.plot())

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, list) else []:
            if len(self.rows) >= self.num_images:
                return
            self.rows.append(self.row(*(item[k] for k in self.keys), name=item_name(item[self.keys[3]], "image")))

    def row(self, features: dict, pred: Any, label: Any, image: Any, name: str) -> dict[str, Any]:
        """One row of the figure for one image: class-index maps (SAMs, label, output) at the label's size."""
        recorded = [n for n in features if n != INPUT_LAYER]
        layers = self.layers
        if layers is None:
            count = min(_DEFAULT_NUM_LAYERS, len(recorded))
            layers = sorted({round(float(i)) for i in np.linspace(0, len(recorded) - 1, count)})
        (feats, pred, label) = stack_items([features], [pred], [label])[0]
        mask = binarize_prediction(pred)
        size = label.shape[2:]
        sams = {}
        for layer in (layer_name(recorded, la) for la in layers):
            sam = segmentation_ability_map(feats[layer], mask, spatial_size=size)
            sams[str(recorded.index(layer) + 1)] = sam[0, 0].cpu().numpy()
        return {
            "name": Path(name).name,
            "image": np.asarray(image.detach().float().cpu()),
            "label": (label[0, 0] if label.shape[1] == 1 else label[0].argmax(0)).cpu().numpy(),
            "pred": mask[0].argmax(0).cpu().numpy(),
            "sams": sams,
        }

    def plot(self) -> None:
        plot_sams(self.rows, self.path, title=f"{self.title or 'ProtoSeg'}: SAMs")
