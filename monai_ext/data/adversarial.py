"""The training pairs of adversarial datasets that ``monai_ext.engines.AdversarialDatasetWriter`` wrote."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from monai_ext.data.datalist import DATALIST_FILENAME, load_datalist

__all__ = ["load_adversarial_datalist"]


def load_adversarial_datalist(
    dataset_dirs: str | PathLike | Sequence[str | PathLike], split: str = "training"
) -> list[dict[str, str]]:
    """
    The ``{"image", "label"}`` pairs (absolute paths) of split ``split`` of one or more adversarial datasets, one after
    the other, without their records (the attack's settings and choices, which a data loader cannot collate).

    In a bundle config (model 4 of the robust training bundle: clean + both adversarial sets)::

        "train#datalist": "$@clean_datalist + monai_ext.data.load_adversarial_datalist([@layered_dir, @signs_dir])"

    Args:
        dataset_dirs: a dataset folder, or a list of them.
        split: the datalist key.

    Raises:
        FileNotFoundError: a folder has no ``dataset.json`` (the build has not run or not finished), naming it.
    """
    dirs = [dataset_dirs] if isinstance(dataset_dirs, (str, PathLike)) else list(dataset_dirs)
    pairs: list[dict[str, str]] = []
    for folder in dirs:
        if not (Path(folder) / DATALIST_FILENAME).is_file():
            raise FileNotFoundError(
                f"{folder} holds no {DATALIST_FILENAME}: build the adversarial dataset first (its build config), or "
                "let a killed build finish (run it again: it resumes)."
            )
        pairs += [{"image": e["image"], "label": e["label"]} for e in load_datalist(folder, split)]
    return pairs
