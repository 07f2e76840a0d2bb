"""
Adversarial datasets on disk: every item of a datalist, preprocessed as for training, attacked by a trained network
and written as a dataset folder of its own (the training sets of the robust training paper's models 2 to 4), by
:py:class:`monai_ext.data.DatasetWriter` with :py:class:`monai_ext.transforms.Attackd` as its batch transform.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ext.data.datalist import DATALIST_FILENAME
from monai_ext.data.writer import IMAGE_EXTENSIONS, DatasetWriter
from monai_ext.engines.utils import state_digest
from monai_ext.transforms.attacks import Attackd, attack_record
from monai_ext.utils.checks import check_callable, check_choice, check_interval, check_positive_int

__all__ = ["RECORD_KEY", "AdversarialDatasetWriter"]

#: the key of each entry's ``{"attack": name, "settings": {...}, "record": {...}}`` in ``dataset.json``
RECORD_KEY = "adversarial"


class AdversarialDatasetWriter:
    """
    Build a dataset of adversarial images from a trained network: each item of ``datalist`` goes through
    ``preprocessing`` (the bundle's: load, scale to ``[0, 1]``, resize to the network's input size); batches of
    ``batch_size`` items are attacked (``Attackd(batched=True, record_key="adversarial")``: the attack's choices per
    image are kept) and written by :py:class:`monai_ext.data.DatasetWriter` to ``output_dir``:

    - ``image/<stem><ext>``: the adversarial image at the network's resolution, back in the intensity units of the
      source data (``low + x * (high - low)`` with ``intensity_range``), as float32 NIfTI (one channel) or TIFF: the
      attack's floats are kept, not rounded to 8 bits;
    - ``label/<stem><ext>``: the label at the same resolution, as class indices (uint8), which the bundles read with
      ``accept_class_indices``;
    - ``entries/<split>/<stem>.json``: the item's datalist entry, written last: the item is complete when it exists;
    - ``dataset.json``: a decathlon datalist whose ``split`` entries carry ``image``, ``label``, ``source`` (the
      source ``image`` and ``label``) and ``adversarial``: ``attack`` (class name), ``settings`` (the attack's) and
      ``record`` (the attack's record of the item: the signs of sign-selection FGSM, the class order of layered PGD);
      and ``settings.json``: what the build depends on (:py:meth:`settings`: attack, network weights, datalist,
      formats).

    Every file is written atomically. A killed build, run again with the same settings, computes only the items
    without an entry (none twice, none lost); a folder built with other settings is refused unless ``overwrite``.
    Progress is shown with tqdm. Under ``torchrun`` (a default process group initialised, e.g. by
    ``monai_ext.utils.init_distributed``), rank ``r`` of ``n`` builds the items ``r, r + n, r + 2n, ...`` and rank 0
    merges the entries into the one ``dataset.json``, the same as one process writes. The attack's random starts, if
    any, are drawn per batch: for a build that does not depend on the number of processes, use attacks without random
    start (the defaults of ``LayeredPGD`` and ``SignSelectionFGSM``) or ``batch_size=1`` with a seed per process.

    Args:
        network: the trained network (its eval-mode logits are attacked).
        attack: an attack of :py:mod:`monai_ext.attacks` (``with_record`` and ``settings``).
        datalist: the source items, ``{"image": path, "label": path}`` each.
        preprocessing: ``item -> {"image": (C, *spatial) in [0, 1], "label": (1, *spatial) class indices}``.
        output_dir: the dataset folder to write.
        intensity_range: ``(low, high)`` of the source images (the preprocessing's), to write the images in the
            source's units; ``None`` writes them in ``[0, 1]``. Per-image min-max scaling cannot be inverted: refused.
        image_ext: ``".nii.gz"`` (default), ``".nii"``, ``".tif"`` or ``".tiff"`` (TIFF for multi-channel images).
        split: the datalist key of the entries in ``dataset.json``.
        batch_size: items attacked together.
        device: where the attack runs; ``None``: the network's device.
        overwrite: replace a dataset built with other settings instead of refusing.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        network: nn.Module,
        attack: Any,
        datalist: Sequence[Mapping[str, Any]],
        preprocessing: Callable[[dict], dict],
        output_dir: str | PathLike,
        intensity_range: Sequence[float] | None = (0.0, 255.0),
        image_ext: str = ".nii.gz",
        split: str = "training",
        batch_size: int = 1,
        device: str | torch.device | None = None,
        overwrite: bool = False,
        progress: bool = True,
    ) -> None:
        self.attackd = Attackd("image", "label", attack, network, device, record_key=RECORD_KEY, batched=True)
        self.network, self.attack = network, attack
        self.datalist = [dict(item) for item in datalist]
        if not self.datalist:
            raise ValueError("datalist is empty: nothing to attack.")
        self.preprocessing = check_callable("preprocessing", preprocessing)
        self.output_dir = Path(output_dir)
        if isinstance(intensity_range, str):
            raise TypeError(
                f"intensity_range {intensity_range!r}: per-image min-max scaling cannot be inverted to write the "
                "adversarial images in the source's units; give the data's fixed range (--intensity_range [min, max])."
            )
        self.intensity_range = None if intensity_range is None else check_interval("intensity_range", intensity_range)
        self.image_ext = check_choice("image_ext", image_ext, IMAGE_EXTENSIONS)
        self.split = split
        self.batch_size = check_positive_int("batch_size", batch_size)
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
        self.overwrite, self.progress = overwrite, progress

    def settings(self) -> dict[str, Any]:
        """What the written items depend on: the attack and its settings, the network's weights, the datalist."""
        described = attack_record(self.attack, {})
        datalist = json.dumps(self.datalist, sort_keys=True, default=str).encode()
        return {
            "attack": described["attack"],
            "settings": described["settings"],
            "network": state_digest(self.network),
            "datalist": hashlib.sha256(datalist).hexdigest()[:20],
            "num_items": len(self.datalist),
            "intensity_range": self.intensity_range,
            "image_ext": self.image_ext,
            "split": self.split,
        }

    def attack_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Attack a collated batch and bring the images back to the source's intensity units (``batch_transform``)."""
        batch = self.attackd(batch)
        if self.intensity_range is not None:
            low, high = self.intensity_range
            batch["image"] = batch["image"] * (high - low) + low
        return batch

    def writer(self) -> DatasetWriter:
        """The :py:class:`~monai_ext.data.DatasetWriter` of the build (its settings read the network's weights now)."""
        return DatasetWriter(
            self.output_dir,
            transform=self.preprocessing,
            batch_transform=self.attack_batch,
            save_keys={"image": "float32", "label": "uint8"},
            record_keys=[RECORD_KEY],
            batch_size=self.batch_size,
            settings=self.settings(),
            overwrite=self.overwrite,
            progress=self.progress,
            image_ext=self.image_ext,
            channel_dim=None,
        )

    def run(self) -> Path:
        """
        Build the dataset (only the items still missing), then write ``dataset.json``.

        Returns:
            the path of ``dataset.json``.
        """
        return self.writer().run(self.datalist, self.split) / DATALIST_FILENAME
