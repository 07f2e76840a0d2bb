"""
``DatasetWriter``: a dataset derived item by item from another (perturbed, attacked) written to a folder of NIfTI or
TIFF files with a decathlon ``dataset.json``; resumable after a kill, every file written atomically.
"""

from __future__ import annotations

import gzip
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
from monai.data import decollate_batch, list_data_collate
from monai.utils import optional_import

from monai_ext.data.datalist import DATALIST_FILENAME, SPLITS, file_stem
from monai_ext.utils.checks import check_choice, check_positive_int
from monai_ext.utils.distributed import get_rank, get_world_size, rank_zero_call
from monai_ext.utils.files import atomic_open, json_safe, write_json
from monai_ext.utils.resume import resume_results

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["IMAGE_EXTENSIONS", "DatasetWriter", "nifti_bytes", "write_image"]

logger = logging.getLogger(__name__)

#: the record of the settings a folder was written with, checked when a run resumes.
SETTINGS_FILENAME = "settings.json"
#: the folder of the per-item records (one JSON file per item and split: written last, it marks the item done).
ENTRIES_DIR = "entries"
#: file formats of the written arrays: NIfTI (gzipped or not) or TIFF (2D, one or three channels)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".tif", ".tiff")
#: the TIFF photometric interpretation per channel count
_PHOTOMETRIC = {1: "minisblack", 3: "rgb"}


def nifti_bytes(array: np.ndarray, channel_dim: int | None = -1, compress: bool = True) -> bytes:
    """
    A NIfTI-1 file (gzipped with ``compress``) holding ``array`` (channel-first ``(C, *spatial)``) exactly, with an
    identity affine.

    Args:
        array: ``(C, *spatial)``.
        channel_dim: ``-1``: stored as ``(*spatial, C)``, read back with ``LoadImage(reader="NibabelReader")`` and
            ``EnsureChannelFirst(channel_dim=-1)``; ``None``: one channel, stored as ``(*spatial)``, read back with
            ``LoadImage`` and ``EnsureChannelFirst()`` (as a PNG of the same image is).
        compress: gzip the file (``.nii.gz``).
    """
    if channel_dim not in (-1, None):
        raise ValueError(f"channel_dim must be -1 or None, got {channel_dim!r}.")
    if channel_dim is None and array.shape[0] != 1:
        raise ValueError(
            f"a NIfTI file without a channel axis holds one channel, got {array.shape[0]}: write a multi-channel 2D "
            "image as .tif (float TIFF keeps it exact), or with channel_dim=-1."
        )
    data = array[0] if channel_dim is None else np.moveaxis(array, 0, -1)
    content = nib.Nifti1Image(np.ascontiguousarray(data), np.eye(4)).to_bytes()
    return gzip.compress(content, compresslevel=1, mtime=0) if compress else content


def write_image(
    path: str | PathLike, array: torch.Tensor | np.ndarray, dtype: Any = np.float32, channel_dim: int | None = -1
) -> Path:
    """
    Write a channel-first array ``(C, *spatial)`` atomically as ``dtype``, exactly (float32 values as they are, no
    scaling; integer values that ``dtype`` cannot hold are refused).

    - ``.nii.gz`` / ``.nii``: NIfTI with an identity affine (:py:func:`nifti_bytes`, ``channel_dim``);
    - ``.tif`` / ``.tiff``: a 2D image ``(C, W, H)`` (the axis order MONAI's ``LoadImage`` gives a PNG) of one or three
      channels, as ``(H, W, C)`` rows, read back with ``LoadImage(reader=monai_ext.data.ImageFileReader)`` and
      ``EnsureChannelFirst()``.

    Args:
        path: the file; its extension picks the format.
        array: ``(C, *spatial)``.
        dtype: the dtype on disk (``np.float32`` keeps float images exact; ``np.uint8`` for class indices).
        channel_dim: NIfTI only: ``-1`` or ``None`` (see :py:func:`nifti_bytes`).

    Returns:
        ``path``.
    """
    path = Path(path)
    ext = next((e for e in IMAGE_EXTENSIONS if path.name.lower().endswith(e)), None)
    if ext is None:
        raise ValueError(f"{path.name}: unknown image extension, must be one of {', '.join(IMAGE_EXTENSIONS)}.")
    values = _as_numpy(array)
    data = values.astype(dtype)
    if np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, values):
        raise ValueError(f"{path.name}: the values (from {values.min()} to {values.max()}) do not fit {data.dtype}.")
    if ext in (".nii.gz", ".nii"):
        content = nifti_bytes(data, channel_dim, compress=ext == ".nii.gz")
    else:
        if data.ndim != 3 or data.shape[0] not in (1, 3):
            raise ValueError(f"{path.name}: a TIFF holds a 2D image of 1 or 3 channels, got shape {data.shape}.")
        buffer = io.BytesIO()
        rows = data.transpose(2, 1, 0)  # (C, W, H) -> (H, W, C)
        tifffile.imwrite(buffer, rows[..., 0] if data.shape[0] == 1 else rows, photometric=_PHOTOMETRIC[data.shape[0]])
        content = buffer.getvalue()
    with atomic_open(path, "wb") as f:
        f.write(content)
    return path


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.as_tensor() if hasattr(value, "as_tensor") else value
        return value.numpy()
    return np.asarray(value)


class DatasetWriter:
    """
    Write a dataset derived from another, item by item, to ``output_dir``: for each item of a datalist, ``transform``
    (loading, preprocessing and any per-item change, such as ``monai_ext.transforms.Attackd``) and optionally
    ``batch_transform`` over batches of ``batch_size`` collated items (``GradientPerturbationd(batched=True)``,
    which stops each image early inside a batch); then the arrays at ``save_keys`` go to
    ``<output_dir>/<key>/<name><image_ext>`` (the name is the stem of the item's ``name_key`` file) in the dtype
    given, exact (:py:func:`write_image`: float32 values are stored as they are, no scaling), and the values at
    ``record_keys`` (the steps GP took, ``Attackd``'s record of an attack) with the source files to the item's entry
    in ``<output_dir>/dataset.json``, a decathlon datalist that ``monai_ext.data.load_datalist`` and MONAI's
    ``load_decathlon_datalist`` read.

    - Progress: a tqdm bar over the items (``progress``).
    - Atomic: every file is written to a temporary name and renamed (:py:func:`monai_ext.utils.atomic_open`).
    - Resumable: an item is done when its entry file ``entries/<split>/<name>.json`` exists, which is written after
      its images; a run killed at any point and run again does only the items not done, so each item is in the
      result exactly once. ``settings.json`` keeps the settings the folder was written with (``settings``, the keys):
      a run with other settings is refused in one line naming what differs, unless ``overwrite`` (which removes what
      the earlier run wrote; :py:func:`~monai_ext.utils.resume.resume_results`).
    - Splits: each :py:meth:`run` writes one split; ``dataset.json`` keeps the other splits already there.
    - Several processes (``torchrun``): each rank takes the items ``rank::world_size``; after a barrier, rank 0
      merges every entry into ``dataset.json`` (the same file as one process writes).

    Example (the GP training set of deep input transfer)::

        writer = DatasetWriter("gp_data", transform=preprocessing, batch_transform=gp_transform, batch_size=8,
                               save_keys={"image": "float32", "perturbed": "float32", "label": "uint8"},
                               record_keys=["perturbed_gp_iterations", "perturbed_gp_converged"],
                               settings=gp.settings())
        writer.run(load_datalist(dataset_dir, "training"), "training")

    Args:
        output_dir: the folder to write (created).
        transform: item -> item of arrays ``(C, *spatial)``, e.g. the bundle's preprocessing; ``None``: the items are
            arrays already.
        batch_transform: collated batch -> batch, run on ``batch_size`` items at a time; ``None`` for none.
        save_keys: key -> NumPy dtype name (``"float32"``, ``"uint8"``) of the arrays to write.
        record_keys: keys of values (numbers, bools, 0-d tensors, JSON-able dicts) recorded in each entry. After
            ``batch_transform``, a record given as a list holds one value per item (``Attackd(batched=True)``'s).
        batch_size: items per ``batch_transform`` call.
        settings: JSON-able settings that made the data (a GP's or attack's ``settings()``, the model's digest),
            written to ``dataset.json`` and checked on resume.
        name_key: the key whose source file names the item.
        overwrite: replace a folder written with other settings.
        progress: show a tqdm progress bar.
        image_ext: the file format of the arrays, one of ``IMAGE_EXTENSIONS``.
        channel_dim: NIfTI only: where the channels go, ``-1`` (last) or ``None`` (one channel, no channel axis); see
            :py:func:`nifti_bytes`.
    """

    def __init__(
        self,
        output_dir: str | PathLike,
        transform: Callable[[dict], dict] | None = None,
        batch_transform: Callable[[dict], dict] | None = None,
        save_keys: Mapping[str, str] | None = None,
        record_keys: Sequence[str] = (),
        batch_size: int = 1,
        settings: Mapping[str, Any] | None = None,
        name_key: str = "image",
        overwrite: bool = False,
        progress: bool = True,
        image_ext: str = ".nii.gz",
        channel_dim: int | None = -1,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.transform = transform
        self.batch_transform = batch_transform
        save_keys = {"image": "float32"} if save_keys is None else dict(save_keys)
        if not save_keys:
            raise ValueError("save_keys must name at least one key to write.")
        self.save_keys = {key: np.dtype(dtype).name for key, dtype in save_keys.items()}
        self.record_keys = list(record_keys)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.settings = json_safe(dict(settings or {}))
        self.name_key = name_key
        if not isinstance(overwrite, bool) or not isinstance(progress, bool):
            raise TypeError(f"overwrite and progress must be True or False, got {overwrite!r} and {progress!r}.")
        self.overwrite = overwrite
        self.progress = progress
        self.image_ext = check_choice("image_ext", image_ext, IMAGE_EXTENSIONS)
        if channel_dim not in (-1, None):
            raise ValueError(f"channel_dim must be -1 or None, got {channel_dim!r}.")
        self.channel_dim = channel_dim

    # ------------------------------------------------------------------------------------------------ settings
    def _record(self) -> dict[str, Any]:
        return {"settings": self.settings, "save_keys": self.save_keys, "record_keys": self.record_keys}

    def _prepare(self) -> None:
        """Check (or, with ``overwrite``, clear) a folder written before; record the settings. Rank 0 only."""
        path = self.output_dir / SETTINGS_FILENAME
        if resume_results(path, self._record(), self.overwrite, key=None, what="the record of a dataset") is not None:
            return
        if path.is_file():  # written with other settings, replaced (overwrite)
            for folder in [ENTRIES_DIR, *json.loads(path.read_text()).get("save_keys", {})]:
                shutil.rmtree(self.output_dir / folder, ignore_errors=True)
            (self.output_dir / DATALIST_FILENAME).unlink(missing_ok=True)
        write_json(path, self._record())

    # ------------------------------------------------------------------------------------------------ items
    def _name(self, item: Mapping[str, Any], index: int) -> str:
        source = item.get(self.name_key) if isinstance(item, Mapping) else None
        stem = file_stem(Path(str(source)).name) if isinstance(source, (str, PathLike)) else None
        return stem if stem else f"item{index:05d}"

    def _names(self, datalist: Sequence[Mapping[str, Any]]) -> list[str]:
        names = [self._name(item, i) for i, item in enumerate(datalist)]
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                raise ValueError(
                    f"items {seen[name]} and {i} of the datalist share the name '{name}' (the stem of their "
                    f"{self.name_key!r} file): each item needs its own name to be written once."
                )
            seen[name] = i
        return names

    def _decollate(self, batch: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The items of a transformed batch; a record key's list (one value per item) is handed out as it is."""
        batch = dict(batch)
        lists = {key: batch.pop(key) for key in self.record_keys if isinstance(batch.get(key), list)}
        items = decollate_batch(batch, detach=True)
        for key, values in lists.items():
            for item, value in zip(items, values, strict=True):
                item[key] = value
        return items

    def _entry_path(self, split: str, name: str) -> Path:
        return self.output_dir / ENTRIES_DIR / split / f"{name}.json"

    def _write_item(self, split: str, name: str, source: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        entry: dict[str, Any] = {}
        for key, dtype in self.save_keys.items():
            if key not in data:
                raise KeyError(f"save key {key!r} is not in the transformed item '{name}' (keys: {list(data)}).")
            relative = f"{key}/{name}{self.image_ext}"
            write_image(self.output_dir / relative, data[key], dtype, self.channel_dim)
            entry[key] = relative
        for key in self.record_keys:
            if key not in data:
                raise KeyError(f"record key {key!r} is not in the transformed item '{name}' (keys: {list(data)}).")
            entry[key] = json_safe(_as_numpy(data[key]).tolist() if isinstance(data[key], torch.Tensor) else data[key])
        entry["source"] = {k: str(v) for k, v in source.items() if isinstance(v, (str, PathLike))}
        write_json(self._entry_path(split, name), entry)  # last: marks the item done

    # ------------------------------------------------------------------------------------------------ run
    def run(
        self,
        datalist: Sequence[Mapping[str, Any]],
        split: str = "training",
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Path:
        """
        Write the items of ``datalist`` not written yet (this rank's share) as the split ``split``, then (rank 0)
        merge every entry of the split into ``dataset.json``.

        Args:
            datalist: items ``{"image": path, "label": path, ...}`` (what ``transform`` takes).
            split: ``"training"``, ``"validation"`` or ``"test"``.
            rank: this process's rank; ``None``: the default process group's (0 without one).
            world_size: the number of processes; ``None``: the default process group's (1 without one).

        Returns:
            ``output_dir``, the folder of ``dataset.json`` (for ``monai_ext.data.load_datalist``).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}.")
        rank = get_rank() if rank is None else rank
        world_size = get_world_size() if world_size is None else world_size
        names = self._names(datalist)
        if world_size == get_world_size():  # one process, or the ranks of the process group: rank 0 prepares
            rank_zero_call(self._prepare)
        elif rank == 0:  # ranks given by hand, each run on its own
            self._prepare()
        mine = [i for i in range(rank, len(datalist), world_size) if not self._entry_path(split, names[i]).is_file()]
        logger.info(
            "Writing %d of the %d %s items to %s (%d written before)%s.",
            len(mine), len(datalist), split, self.output_dir, len(range(rank, len(datalist), world_size)) - len(mine),
            f" on rank {rank} of {world_size}" if world_size > 1 else "",
        )  # fmt: skip
        bar = tqdm(total=len(mine), desc=f"{split} -> {self.output_dir.name}") if self.progress and has_tqdm else None
        for start in range(0, len(mine), self.batch_size):
            chunk = mine[start : start + self.batch_size]
            items = [dict(datalist[i]) if self.transform is None else self.transform(dict(datalist[i])) for i in chunk]
            if self.batch_transform is not None:
                items = self._decollate(self.batch_transform(list_data_collate(items)))
            for i, data in zip(chunk, items, strict=True):
                self._write_item(split, names[i], datalist[i], data)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if rank == 0:
            self.merge(datalist, split)
        return self.output_dir

    def merge(self, datalist: Sequence[Mapping[str, Any]], split: str = "training") -> dict[str, Any]:
        """
        Gather the entries of ``split`` written so far, in the order of ``datalist``, into ``dataset.json`` (other
        splits kept); ``"complete"`` says per split whether every item is in.

        Returns:
            the content written.
        """
        names = self._names(datalist)
        entries = [
            json.loads(self._entry_path(split, name).read_text())
            for name in names
            if self._entry_path(split, name).is_file()
        ]
        path = self.output_dir / DATALIST_FILENAME
        content = json.loads(path.read_text()) if path.is_file() else {}
        content.update({"description": "written by monai_ext.data.DatasetWriter", **self._record()})
        content[split] = entries
        content.setdefault("complete", {})[split] = len(entries) == len(names)
        write_json(path, content)
        logger.info("%s: %d of the %d %s items.", path, len(entries), len(names), split)
        return content
