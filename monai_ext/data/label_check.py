"""
What the masks of a dataset hold after the label mapping, checked before training: the fraction of empty masks per
split is logged, and a split whose every mask is empty is an error that names the label setting at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import LoadImage

from monai_ext.data.dataset import item_files
from monai_ext.data.readers import ImageFileReader

__all__ = ["check_label_content"]

#: how many raw mask values an error lists
_MAX_LISTED = 8


def _label_setting(label_values: Any, label_threshold: float | None) -> tuple[str, str, str]:
    """The label setting, what it means, and the option to check."""
    if label_threshold is not None:
        return (
            f"label_threshold={label_threshold:g}",
            f"foreground: raw value >= {label_threshold:g}",
            "--label_threshold",
        )
    return f"label_values={label_values}", "class i: the raw values at position i", "--label_values"


def _raw_values(item: Any, key: str) -> str:
    """The raw values of an item's mask file, as ``"holds raw values 0, 1"``, for the error message."""
    files = item_files({key: item.get(key)}) if isinstance(item, Mapping) else []
    if not files:
        return ""
    try:
        mask = LoadImage(reader=ImageFileReader(), image_only=True)(files[0])
    except Exception:  # noqa: BLE001 (only an illustration for the message; the mask loaded once already)
        return ""
    values = torch.unique(torch.as_tensor(mask)).tolist()
    listed = ", ".join(f"{v:g}" for v in values[:_MAX_LISTED]) + (" ..." if len(values) > _MAX_LISTED else "")
    return f" The first mask, '{files[0]}', holds the raw values {listed}."


def check_label_content(
    datasets: Mapping[str, Sequence[Mapping[str, Any]]],
    label_values: Any = None,
    label_threshold: float | None = None,
    key: str = "label",
    logger: str = "monai_ext",
) -> dict[str, float]:
    """
    Check what the class-index masks of each split hold, after the bundle's preprocessing (``LabelToIndexd``):
    log the fraction of empty masks (background only) and, for each class, how many masks hold it; raise when every
    mask of a split is empty, naming the label setting that made them so (``--label_threshold 128`` on masks stored
    as 0/1, ``--label_values`` that put the foreground value in class 0).

    Reads each item once; a ``CacheDataset`` (as the bundles use) serves its cache, so the check costs a pass over
    memory. In a config::

        "check_labels": {"_target_": "monai_ext.data.check_label_content", "_mode_": "callable",
                         "datasets": {"training": "@train#dataset", "validation": "@validate#dataset"},
                         "label_values": "@label_values", "label_threshold": "@label_threshold"},
        "run": ["$@check_labels()", "$@train#trainer.run()"]

    Args:
        datasets: split name -> dataset of dictionaries whose ``key`` holds a class-index mask.
        label_values: the ``label_values`` setting, for the messages.
        label_threshold: the ``label_threshold`` setting (used instead of ``label_values`` when not ``None``).
        key: the mask key.
        logger: the logger's name.

    Returns:
        split -> fraction of empty masks.

    Raises:
        ValueError: every mask of a split is empty, or an item has no ``key``.
    """
    log = logging.getLogger(logger)
    setting, meaning, option = _label_setting(label_values, label_threshold)
    fractions: dict[str, float] = {}
    for split, dataset in datasets.items():
        num_items, num_empty, holding = len(dataset), 0, {}
        for index in range(num_items):
            item = dataset[index]
            if not isinstance(item, Mapping) or key not in item:
                raise ValueError(f"Item {index} of the {split} split has no {key!r}: masks are needed to train.")
            classes = torch.unique(torch.as_tensor(item[key])).tolist()
            num_empty += int(all(c == 0 for c in classes))
            for c in classes:
                holding[int(c)] = holding.get(int(c), 0) + 1
        if num_items == 0:
            continue
        fractions[split] = num_empty / num_items
        per_class = ", ".join(f"class {c} in {n}" for c, n in sorted(holding.items()) if c != 0) or "none"
        log.info(
            "%s split: %d of %d masks empty (%.1f%%); masks holding each foreground class: %s; %s.",
            split, num_empty, num_items, 100 * fractions[split], per_class, setting,
        )  # fmt: skip
        if num_empty == num_items:
            data = getattr(dataset, "data", None)
            raw = _raw_values(data[0], key) if isinstance(data, Sequence) and data else ""
            raise ValueError(
                f"Every mask of the {split} split ({num_items} masks) is empty (background only) after the label "
                f"mapping {setting} ({meaning}).{raw} Check {option} against the masks' raw values (masks stored as 0/1 need "
                '--label_threshold 1 or --label_values "[0, 1]").'
            )
    return fractions
