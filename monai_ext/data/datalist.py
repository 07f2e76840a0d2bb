"""
Datalists from a dataset folder: a MONAI decathlon ``dataset.json``, or ``images/`` and ``masks/``
folders paired by file stem with a deterministic training / validation / test split; for inference, also a folder
of images alone or one image file (:func:`load_image_datalist`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist

from monai_ext.utils.checks import check_fraction
from monai_ext.utils.distributed import rank_zero_call

__all__ = [
    "DATALIST_FILENAME",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "file_stem",
    "list_image_files",
    "load_datalist",
    "load_image_datalist",
    "resolve_dataset_dir",
    "split_stems",
]

logger = logging.getLogger(__name__)

#: the datalist file read in a dataset folder when it exists.
DATALIST_FILENAME = "dataset.json"
#: the splits of a dataset; ``"all"`` asks for all of them together.
SPLITS: tuple[str, str, str] = ("training", "validation", "test")
#: file suffixes taken as images or masks in ``images/`` and ``masks/`` (lower case): those MONAI's
#: ``LoadImage`` reads with its default readers (PIL, ITK, NiBabel, NumPy).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp",
    ".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm", ".npy", ".npz",
)  # fmt: skip

#: how many file names an error message lists.
_MAX_LISTED = 5
#: what a message says where labels are required
_LABELS_NEEDED = "training and evaluation need a mask per image; inference.json reads images alone"


def _listing(names: Sequence[str]) -> str:
    """``a, b, c`` for error messages, cut to a few names with a count of the rest."""
    names = list(names)
    text = ", ".join(names[:_MAX_LISTED])
    return text + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def file_stem(name: str) -> str | None:
    """
    The stem of an image file name: the name without its image suffix (:data:`IMAGE_SUFFIXES`,
    matched case-insensitively, the longest first), so ``"a.nii.gz"`` -> ``"a"`` and
    ``"JPCLN001.v2.PNG"`` -> ``"JPCLN001.v2"``. ``None`` when the name has no image suffix.
    """
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def list_image_files(folder: str | PathLike) -> dict[str, str]:
    """
    Map stem -> absolute path for the image files of ``folder`` (not recursive). Hidden files are
    skipped; other files without an image suffix are skipped with a warning (``.raw`` data of
    ``.mhd`` headers, notes, ...). Two files with one stem raise a ``ValueError`` naming both.
    """
    folder = Path(folder)
    found: dict[str, str] = {}
    ignored: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stem = file_stem(path.name)
        if stem is None:
            ignored.append(path.name)
            continue
        if stem in found:
            raise ValueError(
                f"Two files in {folder} share the stem '{stem}': {Path(found[stem]).name} and {path.name}; "
                "images and masks are paired by stem, so each stem must name one file."
            )
        found[stem] = os.path.abspath(path)
    if ignored:
        logger.warning("Ignoring %d files without an image suffix in %s: %s", len(ignored), folder, _listing(ignored))
    return found


def split_stems(
    stems: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[str]]:
    """
    Split stems into ``training`` / ``validation`` / ``test`` deterministically.

    Rule: order the stems by the SHA-256 digest of ``f"{seed}/{stem}"`` (a seeded shuffle that does
    not depend on the platform, the Python or NumPy version, or the order the files are listed in);
    the first ``round(n * test_fraction)`` go to ``test``, the next ``round(n * val_fraction)`` to
    ``validation``, the rest to ``training``. A split with a non-zero fraction gets at least one
    stem when there are 3 stems or more. Each split is returned sorted by stem.
    """
    val_fraction = check_fraction("val_fraction", val_fraction, allow_one=False)
    test_fraction = check_fraction("test_fraction", test_fraction, allow_one=False)
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must sum below 1.")
    n = len(stems)

    def count(fraction: float) -> int:
        k = round(n * fraction)
        return 1 if k == 0 and fraction > 0 and n >= 3 else k

    ordered = sorted(stems, key=lambda s: hashlib.sha256(f"{seed}/{s}".encode()).hexdigest())
    n_test, n_val = count(test_fraction), count(val_fraction)
    return {
        "test": sorted(ordered[:n_test]),
        "validation": sorted(ordered[n_test : n_test + n_val]),
        "training": sorted(ordered[n_test + n_val :]),
    }


def _has_image_files(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") and file_stem(p.name) for p in folder.iterdir())


def _check_dataset_dir(dataset_dir: str | PathLike) -> Path:
    """
    The absolute dataset folder, after checking it holds a ``dataset.json``, an ``images/`` folder, or image files
    (a folder of images alone, for inference).
    """
    path = Path(os.path.abspath(os.path.expanduser(dataset_dir)))
    if not path.is_dir():
        raise FileNotFoundError(f"Dataset folder {path} does not exist (dataset_dir={str(dataset_dir)!r}).")
    if not (path / DATALIST_FILENAME).is_file() and not (path / "images").is_dir() and not _has_image_files(path):
        raise FileNotFoundError(
            f"Dataset folder {path} holds neither a {DATALIST_FILENAME} (a MONAI decathlon datalist), "
            "nor an images/ folder (with masks/ beside it, paired by file stem), nor image files (for inference)."
        )
    return path


def _images_alone(root: Path) -> bool:
    """Whether a dataset folder holds images without masks: no ``dataset.json``, no ``images/`` + ``masks/``."""
    return not (root / DATALIST_FILENAME).is_file() and not ((root / "images").is_dir() and (root / "masks").is_dir())


def _entry_files(entry: dict[str, Any]) -> list[str]:
    """The file paths of a datalist entry's ``image`` and ``label`` (a path or a list of paths each)."""
    files: list[str] = []
    for key in ("image", "label"):
        value = entry.get(key)
        if isinstance(value, (str, PathLike)):
            files.append(str(value))
        elif isinstance(value, Sequence):
            files.extend(str(v) for v in value)
    return files


def _datalist_from_json(path: Path, split: str, require_labels: bool) -> list[dict[str, Any]]:
    """Read split ``split`` of the decathlon datalist ``path`` (paths relative to its folder)."""
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    split_keys = [k for k, v in content.items() if isinstance(v, list)] if isinstance(content, dict) else []
    keys = [k for k in SPLITS if k in split_keys] if split == "all" and "all" not in split_keys else [split]
    if not keys or keys[0] not in split_keys:
        raise ValueError(f"Split {split!r} not found in {path}; its datalist keys are {split_keys or 'none'}.")
    datalist: list[dict[str, Any]] = []
    for key in keys:
        if content[key]:  # load_decathlon_datalist fails on an empty "test" list
            datalist += load_decathlon_datalist(path, is_segmentation=True, data_list_key=key, base_dir=path.parent)
    if require_labels:
        unlabelled = [str(e.get("image")) for e in datalist if e.get("label") in (None, "", [])]
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} entries of split {split!r} in {path} have no 'label': {_listing(unlabelled)}; "
                f"{_LABELS_NEEDED}."
            )
    return datalist


def _datalist_from_folders(
    root: Path, split: str, require_labels: bool, val_fraction: float, test_fraction: float, seed: int
) -> list[dict[str, Any]]:
    """Pair ``root/images/*`` with ``root/masks/*`` by stem and take split ``split``."""
    if split != "all" and split not in SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for the images/ + masks/ layout of {root}; use one of {[*SPLITS, 'all']}."
        )
    images_dir = root / "images" if (root / "images").is_dir() else root
    images = list_image_files(images_dir)
    masks_dir = root / "masks"
    if masks_dir.is_dir() and images_dir != root:
        masks = list_image_files(masks_dir)
    elif require_labels:
        what = "has images/ but no masks/ folder" if images_dir != root else "holds images alone (no images/ + masks/)"
        raise FileNotFoundError(f"Dataset folder {root} {what}; {_LABELS_NEEDED}.")
    else:
        masks = {}
    orphan_masks = sorted(set(masks) - set(images))
    if orphan_masks:
        raise ValueError(
            f"{len(orphan_masks)} masks in {masks_dir} have no image of the same stem in {images_dir}: "
            f"{_listing([Path(masks[s]).name for s in orphan_masks])}."
        )
    orphan_images = sorted(set(images) - set(masks))
    if orphan_images and require_labels:
        raise ValueError(
            f"{len(orphan_images)} images in {images_dir} have no mask of the same stem in {masks_dir}: "
            f"{_listing([Path(images[s]).name for s in orphan_images])}; {_LABELS_NEEDED}."
        )
    stems = sorted(images) if split == "all" else split_stems(sorted(images), val_fraction, test_fraction, seed)[split]
    return [{"image": images[s], **({"label": masks[s]} if s in masks else {})} for s in stems]


def load_datalist(
    dataset_dir: str | PathLike,
    split: str = "training",
    require_labels: bool = True,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> list[dict[str, str]]:
    """
    Load split ``split`` of the dataset in ``dataset_dir`` as a list of ``{"image": path, "label": path}``
    with absolute paths, for ``LoadImaged(keys=["image", "label"])``.

    - ``dataset_dir/dataset.json``, when it exists, is read as a MONAI decathlon datalist
      (``monai.data.load_decathlon_datalist``): ``split`` is one of its keys (``training``,
      ``validation``, ``test``), its paths are relative to ``dataset_dir``.
    - Otherwise ``dataset_dir/images/*`` are paired with ``dataset_dir/masks/*`` by file stem
      (``a.png`` with ``a.png``, ``a.nii.gz`` with ``a.nii.gz``, ``a.jpg`` with ``a.png``; see
      :func:`file_stem` and :data:`IMAGE_SUFFIXES`; hidden files are skipped). This layout has no
      splits: :func:`split_stems` makes a deterministic 80/10/10 split (by default), the same for
      every call on the same files.
    - Without ``require_labels``, ``dataset_dir`` may also hold images alone: ``images/`` without
      ``masks/``, or the image files themselves (split as the ``images/`` layout).

    ``split="all"`` returns every entry (all images of the folders, or the three splits of
    ``dataset.json`` one after the other).

    Args:
        dataset_dir: the dataset folder.
        split: ``"training"``, ``"validation"``, ``"test"`` or ``"all"``.
        require_labels: every entry must have a label; with ``False`` images without masks are kept as
            ``{"image": path}`` (inference), and ``masks/`` (or ``images/``) may be absent.
        val_fraction: fraction of the images/masks layout given to ``validation``.
        test_fraction: fraction of the images/masks layout given to ``test``.
        seed: seed of the images/masks split.

    Raises:
        FileNotFoundError: ``dataset_dir`` is missing, holds neither ``dataset.json`` nor ``images/`` nor
            image files, has no ``masks/`` (when labels are required), or an entry names a file that does not exist.
        ValueError: ``split`` is not in ``dataset.json`` (the error lists its keys), a mask has no image
            or an image no mask (the error names the files), an entry has no label, or the split is empty.
    """
    root = _check_dataset_dir(dataset_dir)
    datalist_file = root / DATALIST_FILENAME
    if datalist_file.is_file():
        datalist = _datalist_from_json(datalist_file, split, require_labels)
        source = str(datalist_file)
    else:
        datalist = _datalist_from_folders(root, split, require_labels, val_fraction, test_fraction, seed)
        source = str(root / "images") if (root / "images").is_dir() else str(root)
        source += f" and {root / 'masks'}" if (root / "masks").is_dir() else ""
    if not datalist:
        raise ValueError(f"Split {split!r} of the dataset in {root} is empty.")
    missing = [f for entry in datalist for f in _entry_files(entry) if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} files listed in split {split!r} of {source} do not exist: {_listing(missing)}."
        )
    logger.debug("Loaded %d entries of split %r from %s.", len(datalist), split, source)
    return datalist


def load_image_datalist(
    dataset_dir: str | PathLike | None,
    split: str | None = None,
    image: str | PathLike | None = None,
    **kwargs: Any,
) -> list[dict[str, str]]:
    """
    The images to predict, without labels: a list of ``{"image": path}`` (absolute paths), for inference.

    - ``image``: that one file (``--image PATH``); ``dataset_dir`` must then be ``None``.
    - ``dataset_dir``: split ``split`` of the dataset (:func:`load_datalist` with ``require_labels=False``, labels
      dropped): a ``dataset.json`` whose entries may lack a ``label``, ``images/`` + ``masks/``, ``images/`` alone,
      or a folder of image files. ``split=None`` takes ``"test"``, or ``"all"`` for a folder of images alone (no
      ``dataset.json``, no ``masks/``), whose images were never split for training.

    In a bundle config: ``"$monai_ext.data.load_image_datalist(@data_root, @split, @image)"``.

    Args:
        dataset_dir: the dataset folder (:func:`resolve_dataset_dir`'s result), or ``None`` with ``image``.
        split: ``"training"``, ``"validation"``, ``"test"``, ``"all"`` or ``None`` (see above).
        image: one image file, or ``None``.
        kwargs: ``val_fraction``, ``test_fraction``, ``seed`` of :func:`load_datalist`.

    Raises:
        FileNotFoundError: ``image`` does not exist (or see :func:`load_datalist`).
        ValueError: both or neither of ``dataset_dir`` and ``image`` given (or see :func:`load_datalist`).
    """
    has_dir = dataset_dir is not None and str(dataset_dir).strip() != ""
    if image is not None and str(image).strip():
        if has_dir:
            raise ValueError(
                f"Give one image (--image {image}) or a dataset folder (--dataset_dir {dataset_dir}), not both."
            )
        path = os.path.abspath(os.path.expanduser(image))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file {path} does not exist (image={str(image)!r}).")
        return [{"image": path}]
    if not has_dir:
        raise ValueError("Give a dataset folder (--dataset_dir DIR) or one image file (--image PATH).")
    root = _check_dataset_dir(dataset_dir)  # type: ignore[arg-type]
    if split is None:
        split = "all" if _images_alone(root) else "test"
    datalist = [{"image": e["image"]} for e in load_datalist(root, split, require_labels=False, **kwargs)]
    logger.info("Predicting %d images of split %r of %s.", len(datalist), split, root)
    return datalist


def resolve_dataset_dir(
    dataset_dir: str | PathLike | None,
    synthetic_dir: str | PathLike,
    image: str | PathLike | None = None,
    **synthetic_kwargs: Any,
) -> str | None:
    """
    The dataset folder a bundle reads: ``dataset_dir`` when one is given (after checking that it
    exists and holds a ``dataset.json``, an ``images/`` folder or image files), ``None`` when one ``image``
    file is given instead (inference), or else a synthetic dataset generated (or reused) at ``synthetic_dir``
    by :func:`monai_ext.data.make_synthetic_dataset`, which is logged. Under DDP, rank 0 generates it while the
    other ranks wait.

    In a bundle config: ``"$monai_ext.data.resolve_dataset_dir(@dataset_dir, @bundle_root + '/synthetic_data')"``.

    Args:
        dataset_dir: the dataset folder; ``None`` or ``""`` for the synthetic default.
        synthetic_dir: where to write the synthetic dataset.
        image: one image file to predict (``--image PATH`` of an inference config); ``None`` or ``""`` for none.
        synthetic_kwargs: arguments of ``make_synthetic_dataset`` (``num_training``, ``spatial_size``, ...).

    Raises:
        ValueError: both ``dataset_dir`` and ``image`` are given.
    """
    has_dir = dataset_dir is not None and str(dataset_dir).strip() != ""
    if image is not None and str(image).strip():
        if has_dir:
            raise ValueError(
                f"Give one image (--image {image}) or a dataset folder (--dataset_dir {dataset_dir}), not both."
            )
        return None
    if has_dir:
        path = _check_dataset_dir(dataset_dir)  # type: ignore[arg-type]
        logger.info("Using the dataset at %s.", path)
        return str(path)
    from monai_ext.data.synthetic import make_synthetic_dataset

    root = rank_zero_call(make_synthetic_dataset, synthetic_dir, **synthetic_kwargs)  # DDP: rank 0 writes it
    with open(Path(root) / DATALIST_FILENAME) as f:
        content = json.load(f)
    counts = {k: len(content.get(k, [])) for k in SPLITS}
    logger.warning(
        "No dataset_dir given: using a synthetic dataset of %d images (%s) generated at %s; "
        "pass dataset_dir for real data.",
        sum(counts.values()),
        ", ".join(f"{n} {k}" for k, n in counts.items()),
        root,
    )
    return root
