"""
Adversarial datasets on disk: every item of a datalist, preprocessed as for training, attacked by a trained network
and written as a dataset folder of its own (the training sets of the robust training paper's models 2 to 4).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import tifffile
import torch
import torch.distributed as dist
from monai.data import MetaTensor
from torch import nn
from tqdm import tqdm

from monai_ext.data.datalist import DATALIST_FILENAME, file_stem
from monai_ext.engines.sweep import state_digest
from monai_ext.transforms.attacks import attack_record
from monai_ext.utils.checks import check_callable, check_choice, check_interval, check_positive_int
from monai_ext.utils.distributed import get_rank, get_world_size, rank_zero_call
from monai_ext.utils.files import atomic_open, write_json

__all__ = ["IMAGE_EXTENSIONS", "AdversarialDatasetWriter", "write_image"]

logger = logging.getLogger(__name__)

#: file formats of the written images and labels: float32 NIfTI (one channel) or float32 TIFF (any channel count)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".tif", ".tiff")
SETTINGS_FILENAME = "settings.json"


def write_image(path: str | PathLike, array: torch.Tensor | np.ndarray, dtype: Any = np.float32) -> Path:
    """
    Write a channel-first 2D image ``(C, W, H)`` (the axis order MONAI's ``LoadImage`` gives a PNG, spatial axes
    reversed) atomically, so that ``LoadImage(reader=ImageFileReader)`` + ``EnsureChannelFirst`` read back exactly
    ``array`` in ``dtype``.

    - ``.nii.gz`` / ``.nii``: NIfTI with an identity affine, one channel (a 3D ``(1, X, Y, Z)`` volume too);
    - ``.tif`` / ``.tiff``: TIFF, one or three channels (``(H, W, C)`` rows on disk, as an RGB TIFF).

    Args:
        path: the file; its extension picks the format.
        array: ``(C, *spatial)``.
        dtype: the dtype on disk (``np.float32`` keeps float images exact; ``np.uint8`` for class indices).
    """
    path = Path(path)
    ext = next((e for e in IMAGE_EXTENSIONS if path.name.lower().endswith(e)), None)
    if ext is None:
        raise ValueError(f"{path.name}: unknown image extension, must be one of {', '.join(IMAGE_EXTENSIONS)}.")
    data = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array).astype(dtype)
    if ext in (".nii.gz", ".nii"):
        if data.shape[0] != 1:
            raise ValueError(
                f"{path.name}: NIfTI files here hold one channel, got {data.shape[0]}; write a multi-channel "
                "image as .tif (float TIFF keeps it exact)."
            )
        content = nib.Nifti1Image(data[0], np.eye(4)).to_bytes()
        content = gzip.compress(content, mtime=0) if ext == ".nii.gz" else content
    else:
        if data.ndim != 3 or data.shape[0] not in (1, 3):
            raise ValueError(f"{path.name}: a TIFF holds a 2D image of 1 or 3 channels, got shape {data.shape}.")
        buffer = io.BytesIO()
        rows = data.transpose(2, 1, 0)  # (C, W, H) -> (H, W, C)
        if data.shape[0] == 1:
            tifffile.imwrite(buffer, rows[..., 0], photometric="minisblack")
        else:
            tifffile.imwrite(buffer, rows, photometric="rgb")
        content = buffer.getvalue()
    with atomic_open(path, "wb") as f:
        f.write(content)
    return path


def _plain(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class AdversarialDatasetWriter:
    """
    Build a dataset of adversarial images from a trained network: each item of ``datalist`` goes through
    ``preprocessing`` (the bundle's: load, scale to ``[0, 1]``, resize to the network's input size), is attacked
    (``attack.with_record``: the attack's choices per image are kept), and is written to ``output_dir``:

    - ``images/<index>_<stem><ext>``: the adversarial image at the network's resolution, back in the intensity units
      of the source data (``low + x * (high - low)`` with ``intensity_range``), as float32 NIfTI or TIFF: the attack's
      floats are kept, not rounded to 8 bits;
    - ``labels/<index>_<stem><ext>``: the label at the same resolution, as class indices (uint8), which the bundles
      read with ``accept_class_indices``;
    - ``records/<index>.json``: the item's datalist entry, written last: the item is complete when it exists;
    - ``dataset.json`` (when every item is done): a decathlon datalist whose ``split`` entries carry ``image``,
      ``label``, ``source_image``, ``source_label``, ``attack`` (class name), ``settings`` (the attack's) and
      ``record`` (the attack's record of the item: the signs of sign-selection FGSM, the class order of layered PGD);
      and ``settings.json``: what the build depends on (attack, network weights, datalist, formats).

    Every file is written atomically (:py:func:`monai_ext.utils.atomic_open`). A killed build, run again with the same
    settings, computes only the items without a record (none twice, none lost); a folder built with other settings is
    refused unless ``overwrite``. Progress is shown with tqdm.

    Under ``torchrun`` (a default process group initialised, e.g. by ``monai_ext.utils.init_distributed``), rank ``r``
    of ``n`` builds the items ``r, r + n, r + 2n, ...`` and rank 0 merges the records into the one ``dataset.json``,
    the same as one process writes. The attack's random starts, if any, are drawn per batch: for a build that does
    not depend on the number of processes, use attacks without random start (the defaults of ``LayeredPGD`` and
    ``SignSelectionFGSM``) or ``batch_size=1`` with a seed per process.

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
        self.network = check_callable("network", network, "a torch.nn.Module")
        check_callable("attack.with_record", getattr(attack, "with_record", None), "a method (see monai_ext.attacks)")
        self.attack = attack
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
        self.device = None if device is None else torch.device(device)
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
        self.overwrite, self.progress = overwrite, progress

    # ------------------------------------------------------------------------------------------------ settings

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

    def _prepare(self, settings: dict[str, Any]) -> bool:
        """Check or start the folder (rank 0). Returns whether its ``dataset.json`` is already complete."""
        path = self.output_dir / SETTINGS_FILENAME
        stored = json.loads(path.read_text()) if path.is_file() else None
        settings = json.loads(json.dumps(settings))  # as JSON reads it back (tuples as lists)
        if stored is not None and stored != settings:
            differ = sorted(k for k in {*settings, *stored} if settings.get(k) != stored.get(k))
            if not self.overwrite:
                raise ValueError(
                    f"{self.output_dir} holds an adversarial dataset built with other settings ({', '.join(differ)} "
                    "differ): pass overwrite=True (on a bundle's command line: --overwrite True) to replace it, or "
                    "write it elsewhere."
                )
            logger.warning("%s: replacing a dataset built with other settings (%s)", self.output_dir, differ)
            for name in ("images", "labels", "records"):
                shutil.rmtree(self.output_dir / name, ignore_errors=True)
            (self.output_dir / DATALIST_FILENAME).unlink(missing_ok=True)
            stored = None
        if stored is None:
            write_json(path, settings)
        return (self.output_dir / DATALIST_FILENAME).is_file()

    # ------------------------------------------------------------------------------------------------ items

    def _name(self, index: int) -> str:
        image = str(self.datalist[index]["image"])
        return f"{index:05d}_{file_stem(Path(image).name) or Path(image).stem}"

    def _record_path(self, index: int) -> Path:
        return self.output_dir / "records" / f"{index:05d}.json"

    def _done(self, index: int) -> bool:
        record = self._record_path(index)
        if not record.is_file():
            return False
        entry = json.loads(record.read_text())
        return all((self.output_dir / entry[key]).is_file() for key in ("image", "label"))

    def _to_source_units(self, image: torch.Tensor) -> torch.Tensor:
        if self.intensity_range is None:
            return image
        low, high = self.intensity_range
        return image * (high - low) + low

    def _write_item(self, index: int, image: torch.Tensor, label: torch.Tensor, record: dict[str, Any]) -> None:
        name, source = self._name(index), self.datalist[index]
        entry = {
            "image": f"images/{name}{self.image_ext}",
            "label": f"labels/{name}{self.image_ext}",
            "source_image": str(source["image"]),
            "source_label": str(source.get("label")),
            **record,
        }
        write_image(self.output_dir / entry["image"], self._to_source_units(image), np.float32)
        label_dtype = np.uint8 if float(label.max()) < 256 else np.uint16
        write_image(self.output_dir / entry["label"], label, label_dtype)
        write_json(self._record_path(index), entry)  # last: the item is complete

    def _attack_batch(self, indices: list[int]) -> None:
        items = [self.preprocessing(dict(self.datalist[i])) for i in indices]
        images = torch.stack([_plain(item["image"]) for item in items]).float()
        labels = torch.stack([_plain(item["label"]) for item in items])
        device = self.device or next(self.network.parameters(), images).device
        adv, records = self.attack.with_record(self.network, images.to(device), labels.to(device))
        for i, index in enumerate(indices):
            self._write_item(index, adv[i].cpu(), labels[i], attack_record(self.attack, records[i]))

    def _merge(self) -> Path:
        """Write ``dataset.json`` from every item's record (rank 0)."""
        missing = [i for i in range(len(self.datalist)) if not self._done(i)]
        if missing:
            raise RuntimeError(
                f"{self.output_dir}: {len(missing)} items have no record after the build: {missing[:5]}."
            )
        entries = [json.loads(self._record_path(i).read_text()) for i in range(len(self.datalist))]
        settings = self.settings()
        document = {
            "name": f"{settings['attack']} adversarial dataset",
            "description": "adversarial images of a trained network, written by monai_ext.engines.AdversarialDatasetWriter",
            "attack": settings["attack"],
            "settings": settings["settings"],
            "network": settings["network"],
            "intensity_range": self.intensity_range,
            f"num_{self.split}": len(entries),
            self.split: entries,
        }
        return write_json(self.output_dir / DATALIST_FILENAME, document)

    def run(self) -> Path:
        """
        Build the dataset (only the items still missing), then write ``dataset.json``.

        Returns:
            the path of ``dataset.json``.
        """
        rank, world = get_rank(), get_world_size()
        if rank_zero_call(self._prepare, self.settings()):
            logger.info("%s is complete: nothing to do", self.output_dir / DATALIST_FILENAME)
            return self.output_dir / DATALIST_FILENAME
        mine = list(range(rank, len(self.datalist), world))
        pending = [i for i in mine if not self._done(i)]
        desc = f"{type(self.attack).__name__} dataset" + (f" (rank {rank}/{world})" if world > 1 else "")
        with tqdm(total=len(mine), initial=len(mine) - len(pending), desc=desc, position=rank,
                  disable=not self.progress) as bar:  # fmt: skip
            for start in range(0, len(pending), self.batch_size):
                batch = pending[start : start + self.batch_size]
                self._attack_batch(batch)
                bar.update(len(batch))
        if world > 1:
            dist.barrier()  # every rank's items are written before rank 0 merges them
        path = rank_zero_call(self._merge)
        logger.info("wrote %d adversarial items to %s", len(self.datalist), path)
        return path
