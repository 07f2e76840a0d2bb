"""An ignite handler that puts the feature maps of named layers of a network, recorded in the engine's own forward
pass, into the engine's output, where metric handlers read them as they read ``"pred"``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from torch import nn

from monai_ext.networks.utils import BASIC_UNET_LAYERS, INPUT_LAYER, FeatureRecorder

__all__ = ["FeatureRecorderHandler", "batch_items", "item_name", "layer_name", "stack_items"]


class FeatureRecorderHandler:
    """
    Hook ``layers`` of ``network`` (:py:class:`~monai_ext.networks.utils.FeatureRecorder`) and, after each forward
    pass of the engine (``IterationEvents.MODEL_COMPLETED``, after MONAI's decollation and postprocessing), store
    ``{layer name: feature map}`` in the engine's output under ``key``: in each item of a decollated output
    (``(C, *spatial)`` maps), or in the output dictionary (batches). ``"input"`` records the network's input.

    Example (bundle config)::

        "val_handlers": [{"_target_": "monai_ext.handlers.FeatureRecorderHandler", "network": "@network"}],
        "additional_metrics": {"sa": {"_target_": "monai_ext.handlers.SAScoreHandler"}}

    Args:
        network: the engine's network.
        layers: module names (and ``"input"``); ``None``: ``"input"`` and the 18 convolutions of MONAI's
            ``BasicUNet``. A name given twice is recorded once.
        key: the output key of the features.
    """

    def __init__(self, network: nn.Module, layers: Sequence[str] | None = None, key: str = "features") -> None:
        layers = [INPUT_LAYER, *BASIC_UNET_LAYERS] if layers is None else list(dict.fromkeys(layers))
        self.recorder = FeatureRecorder(network, layers)
        self.key = key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        features, output = self.recorder.pop(), engine.state.output
        if isinstance(output, dict):
            output[self.key] = features
            return
        batch = next(iter(features.values())).shape[0]
        if batch != len(output):
            raise ValueError(
                f"Batch of {batch} network inputs but {len(output)} outputs: the recorded features need one forward "
                "pass per batch (no sliding window)."
            )
        for i, item in enumerate(output):
            item[self.key] = {name: f[i] for name, f in features.items()}


def batch_items(data: Any) -> list[Any]:
    """The items of a batch: a batched tensor split along its first dim, a dictionary of batched tensors (recorded
    features) as one dictionary per item, a list (a decollated engine output) as it is."""
    if isinstance(data, torch.Tensor):
        return list(data)
    if isinstance(data, dict):
        return [dict(zip(data, values)) for values in zip(*data.values())]
    return list(data)


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def _shape(item: Any) -> tuple:
    return tuple(tuple(v.shape) for v in item.values()) if isinstance(item, dict) else tuple(item.shape)


def stack_items(*columns: Any) -> list[tuple]:
    """
    The items of several batch columns (``batch_items`` of each: features, predictions, labels) stacked into
    batches of plain tensors: one batch when every column holds items of one shape, else one batch per item
    (images of different sizes after MONAI's ``Invertd``). Dictionaries are stacked per key.

    Returns:
        a list of tuples, one stacked batch per column.
    """
    columns = [batch_items(c) for c in columns]
    groups = [list(range(len(columns[0])))]
    if any(len({_shape(x) for x in col}) > 1 for col in columns):
        groups = [[i] for i in range(len(columns[0]))]

    def stack(col: list, idx: list[int]) -> Any:
        if isinstance(col[0], dict):
            return {k: torch.stack([_plain(col[i][k]) for i in idx]) for k in col[0]}
        return torch.stack([_plain(col[i]) for i in idx])

    return [tuple(stack(col, idx) for col in columns) for idx in groups]


def item_name(item: Any, fallback: str) -> str:
    """The file name an item was loaded from (``MetaTensor`` meta data ``filename_or_obj``), or ``fallback``."""
    meta = getattr(item, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, dict) else None
    return str(name) if name else fallback


def layer_name(recorded: Sequence[str], layer: str | int) -> str:
    """A layer name from a name or an index into the recorded layers other than ``"input"``."""
    layers = [name for name in recorded if name != INPUT_LAYER]
    if isinstance(layer, int):
        if not -len(layers) <= layer < len(layers):
            raise ValueError(f"layer index {layer} is out of range for {len(layers)} layers.")
        return layers[layer]
    if layer not in layers:
        raise ValueError(f"{layer!r} is not one of the analysed layers {layers}.")
    return layer
