"""
Helpers for bundle configs: the logic a ``$`` expression would otherwise spell out inline, as named functions.

In a config (after ``"$import monai_ext.utils"``)::

    "$monai_ext.utils.load_weights(@network, @init_ckpt, @device, strict=False)"
    "$monai_ext.utils.mask_cleanup('pred', @num_classes, @keep_components, @fill_holes)"
    "summary": {"_target_": "monai_ext.utils.log_summary", "_mode_": "callable", "logger": "monai_ext.nlcen",
                "template": "best validation mean Dice {state.best_metric:.4f}", ...},
    "run": ["$@train#trainer.run()", "$@summary(@validate#evaluator)"]

This module imports no other ``monai_ext`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from os import PathLike
from typing import Any

import torch
from monai.networks.utils import copy_model_state
from monai.transforms import Compose, FillHolesd, KeepLargestConnectedComponentd

from .checks import check_fraction

__all__ = ["load_weights", "log_summary", "mask_cleanup"]

logger = logging.getLogger(__name__)


def load_weights(
    network: torch.nn.Module,
    path: str | PathLike | None,
    device: str | torch.device | None = None,
    strict: bool = True,
    min_fraction: float = 0.5,
    prefix: str = "",
) -> torch.nn.Module:
    """
    Load a state dict saved with ``torch.save(network.state_dict(), path)`` into ``network``, in place.

    Args:
        network: the network to load into.
        path: the saved state dict; ``None`` or ``""`` leaves ``network`` as it is (an optional ``init_ckpt``).
        device: ``map_location`` of ``torch.load`` (``None``: where the tensors were saved).
        strict: ``True``: every parameter and buffer must match (``load_state_dict(strict=True)``); ``False``: copy
            the entries whose names and shapes match ``network``'s (MONAI's ``copy_model_state``), keep the others
            and log how many were loaded, to start a training run from another run's weights.
        min_fraction: with ``strict=False``, the least fraction of ``network``'s entries (parameters and buffers) the
            file must match by name and shape; fewer is an error (a checkpoint of another network).
        prefix: load only the file's entries whose names start with ``prefix``, with it removed: a part of a saved
            whole, e.g. ``prefix="segmenter."`` loads the segmenter of a ``TranslateThenSegment`` checkpoint.

    Returns:
        ``network``.

    Raises:
        ValueError: with ``strict=False``, the file matches fewer than ``min_fraction`` of the entries.
    """
    if path is None or not str(path).strip():
        return network
    state = torch.load(path, map_location=device, weights_only=True)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if strict:
        network.load_state_dict(state, strict=True)
    else:
        own = network.state_dict()
        matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(matching) < check_fraction("min_fraction", min_fraction) * len(own):
            raise ValueError(
                f"{path} matches {len(matching)} of the {len(own)} variables of {type(network).__name__} by name and "
                f"shape ({len(state)} in the file), fewer than min_fraction {min_fraction:g}: is it a checkpoint of "
                "this network (same backbone, channels and classes)? Lower min_fraction (--init_min_fraction) to load it."
            )
        copy_model_state(network, matching, inplace=True)
        logger.info("Loaded %d of the %d entries of %s from %s.", len(matching), len(own), type(network).__name__, path)
    return network


def mask_cleanup(
    keys: Hashable | Sequence[Hashable], num_classes: int, keep_components: int | None = None, fill_holes: bool = False
) -> Compose:
    """
    Optional clean-up of class-index masks (channel-first, one channel), applied per foreground class
    ``1 .. num_classes - 1``: keep the ``keep_components`` largest connected components (MONAI's
    ``KeepLargestConnectedComponentd``), then fill enclosed holes (MONAI's ``FillHolesd``).

    Args:
        keys: the mask keys, e.g. ``"pred"``.
        num_classes: number of classes, background (class 0) included.
        keep_components: how many components to keep per class; ``None`` or ``0``: no component filtering.
        fill_holes: fill the holes enclosed by each class.

    Returns:
        a ``Compose`` of the steps switched on (none: it returns its input unchanged).

    Raises:
        ValueError: ``num_classes`` below 2, or ``keep_components`` negative or not an integer.
        TypeError: ``fill_holes`` is not a bool (on the ``monai.bundle run`` command line ``--fill_holes false``
            arrives as the string ``"false"``: write ``False``).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}.")
    if keep_components is not None and (
        isinstance(keep_components, bool) or not isinstance(keep_components, int) or keep_components < 0
    ):
        raise ValueError(f"keep_components must be None or an integer >= 0, got {keep_components!r}.")
    if not isinstance(fill_holes, bool):
        raise TypeError(f"fill_holes must be True or False, got {fill_holes!r} (write booleans as True / False).")
    labels = list(range(1, num_classes))
    steps = []
    if keep_components:
        steps.append(KeepLargestConnectedComponentd(keys, applied_labels=labels, num_components=keep_components))
    if fill_holes:
        steps.append(FillHolesd(keys, applied_labels=labels))
    return Compose(steps)


def log_summary(engine: Any = None, logger: str = "monai_ext", template: str = "", **fields: Any) -> str:
    """
    Log one line at INFO level: ``template`` formatted with ``str.format`` over ``fields`` and ``state``, the state
    of ``engine`` (so ``{state.best_metric:.4f}``, ``{state.best_metric_epoch}``, ``{state.metrics[mean_dice]:.4f}``).

    In a config, bind everything but the engine with ``"_mode_": "callable"`` and call it in ``run`` once the engine
    has run (see the module docstring).

    Args:
        engine: an ignite engine (``state`` is its ``state``) or ``None`` (``state`` is ``None``).
        logger: the logger's name.
        template: the message, with ``{field}`` placeholders (format specs, attribute and item access allowed).
        fields: the other values the template names.

    Returns:
        the message logged.

    Raises:
        KeyError: the template names a field that was not given.
    """
    state = getattr(engine, "state", None) if engine is not None else None
    message = template.format(state=state, **fields)
    logging.getLogger(logger).info(message)
    return message
