"""
Small synthetic datasets that bundles use by default, so that they run out of the box without any download: chest
X-ray-like 2D phantoms (lungs and heart, PNG) or left-atrium-like 3D MRI phantoms (an ellipsoid in noise, NIfTI).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from monai_ext.utils.checks import check_non_negative_int, check_positive_int

__all__ = [
    "SYNTHETIC_LABELS",
    "SYNTHETIC_VOLUME_LABELS",
    "SYNTHETIC_VOLUME_SPACING",
    "make_synthetic_dataset",
    "synthetic_phantom",
    "synthetic_volume",
]

logger = logging.getLogger(__name__)

#: raw mask values of the phantoms, the convention of the SCR chest X-ray annotations.
SYNTHETIC_LABELS: dict[str, str] = {
    "0": "background",
    "150": "right lung (image left)",
    "200": "left lung (image right)",
    "250": "heart (drawn over lung where they overlap)",
}
#: mask values of the 3D phantoms, those of the left atrium MRI data (``la2018_mri``).
SYNTHETIC_VOLUME_LABELS: dict[str, str] = {"0": "background", "1": "left atrium"}
#: voxel size in mm of the 3D phantoms (isotropic), that of the ``la2018_mri`` volumes.
SYNTHETIC_VOLUME_SPACING = 0.625
#: bump when the phantoms change, so that datasets generated before are regenerated.
_GENERATOR_VERSION = 1
_DATALIST_FILENAME = "dataset.json"
_FOLDERS_2D = ("images", "masks")
_FOLDERS_3D = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
#: the descriptive fields of dataset.json, 2D (False) and 3D (True)
_DESCRIPTIONS: dict[bool, dict[str, Any]] = {
    False: {
        "name": "synthetic_chest_xray",
        "description": "Synthetic chest X-ray-like phantoms (body, lungs, heart) made by monai_ext.",
        "modality": {"0": "synthetic X-ray"},
        "labels": SYNTHETIC_LABELS,
    },
    True: {
        "name": "synthetic_left_atrium_mri",
        "description": "Synthetic left-atrium-like MRI phantoms (an ellipsoid atrium, a vessel, noise) made by monai_ext.",
        "modality": {"0": "synthetic MRI"},
        "labels": SYNTHETIC_VOLUME_LABELS,
        "tensorImageSize": "3D",
    },
}


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], radii: tuple[float, float], angle: float
) -> np.ndarray:
    """Normalised radius of the points ``(yy, xx)`` in an ellipse: < 1 inside, 1 on the border."""
    cos, sin = np.cos(angle), np.sin(angle)
    dy, dx = yy - center[0], xx - center[1]
    u = (cos * dx + sin * dy) / radii[1]
    v = (-sin * dx + cos * dy) / radii[0]
    return np.sqrt(u * u + v * v)


def _soft(radius: np.ndarray, size: float, edge: float) -> np.ndarray:
    """1 inside the normalised ``radius`` < 1, 0 outside, over a border of about ``edge`` (normalised units)."""
    return 1.0 / (1.0 + np.exp(np.clip((radius - 1.0) * size / edge, -50, 50)))


def synthetic_phantom(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """
    One chest X-ray-like phantom: a bright body ellipse, two darker lung ellipses of random size,
    position, tilt and intensity, a heart ellipse over the lungs' medial lower side, a smooth
    background gradient, soft edges and Gaussian noise.

    Args:
        rng: the random generator.
        shape: ``(rows, columns)`` of the arrays.

    Returns:
        ``(image, mask)``, ``uint8`` arrays of ``shape`` (row-major, as in a PNG file): the mask holds
        0 (background), 150 (right lung, image left), 200 (left lung, image right), 250 (heart).
    """
    rows, cols = shape
    yy, xx = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    edge = 1.5 / min(rows, cols)  # soft edge width, in normalised units

    def soft(radius: np.ndarray, size: float) -> np.ndarray:
        return _soft(radius, size, edge)

    image = rng.uniform(15, 40) + rng.uniform(-15, 15) * (xx - 0.5) + rng.uniform(-15, 15) * (yy - 0.5)
    mask = np.zeros(shape, dtype=np.uint8)

    body_radii = (rng.uniform(0.44, 0.49), rng.uniform(0.40, 0.46))
    body = _ellipse(yy, xx, (0.52 + rng.uniform(-0.02, 0.02), 0.5 + rng.uniform(-0.02, 0.02)), body_radii, 0.0)
    image = image + (rng.uniform(150, 200) - image) * soft(body, min(body_radii))

    lung_y = 0.45 + rng.uniform(-0.03, 0.03)
    for side, value in ((-1, 150), (1, 200)):  # image left: right lung (150); image right: left lung (200)
        radii = (rng.uniform(0.24, 0.31), rng.uniform(0.11, 0.15))
        center = (lung_y + rng.uniform(-0.02, 0.02), 0.5 + side * rng.uniform(0.17, 0.21))
        lung = _ellipse(yy, xx, center, radii, side * rng.uniform(0.0, 0.15))
        image = image + (rng.uniform(45, 100) - image) * soft(lung, min(radii))
        mask[lung < 1.0] = value

    heart_radii = (rng.uniform(0.10, 0.14), rng.uniform(0.12, 0.16))
    heart_center = (0.62 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(0.03, 0.08))
    heart = _ellipse(yy, xx, heart_center, heart_radii, rng.uniform(-0.3, 0.0))
    image = image + (rng.uniform(140, 180) - image) * soft(heart, min(heart_radii))
    mask[heart < 1.0] = 250

    image = image + rng.normal(0.0, rng.uniform(3.0, 8.0), size=shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def synthetic_volume(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """
    One left-atrium-like MRI phantom: a dim body ellipsoid on a darker background with a smooth intensity gradient,
    a bright ellipsoid "atrium" of random size, position and tilt (about a tenth of the volume, as in the
    ``la2018_mri`` data), a smaller bright sphere beside it that is not labelled (a vessel, so that brightness alone
    does not segment the atrium), soft edges and Gaussian noise.

    Args:
        rng: the random generator.
        shape: ``(x, y, z)`` sizes of the arrays, as stored in a NIfTI file and returned by MONAI's ``LoadImage``.

    Returns:
        ``(image, mask)``, ``uint8`` arrays of ``shape``: the mask holds 0 (background) and 1 (atrium).
    """
    grid = np.meshgrid(*((np.arange(n) + 0.5) / n for n in shape), indexing="ij")
    edge = 1.5 / min(shape)  # soft edge width, in normalised units

    def ellipsoid(center: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
        """Normalised radius of an ellipsoid tilted by ``angle`` in the x-y plane: < 1 inside."""
        dx, dy, dz = (g - c for g, c in zip(grid, center))
        u, v = np.cos(angle) * dx + np.sin(angle) * dy, -np.sin(angle) * dx + np.cos(angle) * dy
        return np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (dz / radii[2]) ** 2)

    gradient = rng.uniform(-10, 10, size=3)
    image = rng.uniform(10, 30) + sum(g * (c - 0.5) for g, c in zip(gradient, grid))
    body_radii = rng.uniform(0.42, 0.49, size=3)
    body = ellipsoid(0.5 + rng.uniform(-0.02, 0.02, size=3), body_radii, 0.0)
    image = image + (rng.uniform(50, 80) - image) * _soft(body, body_radii.min(), edge)

    radii = rng.uniform(0.2, 0.28, size=3)
    center = 0.5 + rng.uniform(-0.08, 0.08, size=3)
    atrium = ellipsoid(center, radii, rng.uniform(-0.6, 0.6))
    image = image + (rng.uniform(130, 180) - image) * _soft(atrium, radii.min(), edge)
    mask = (atrium < 1.0).astype(np.uint8)

    direction = rng.normal(size=3)
    vessel_center = center + (radii.max() + 0.12) * direction / np.linalg.norm(direction)
    vessel_radius = rng.uniform(0.06, 0.09)
    vessel = ellipsoid(np.clip(vessel_center, 0.15, 0.85), np.full(3, vessel_radius), 0.0)
    image = image + (rng.uniform(120, 170) - image) * _soft(vessel, vessel_radius, edge) * (1 - mask)

    image = image + rng.normal(0.0, rng.uniform(4.0, 10.0), size=shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def _nifti_gz(array: np.ndarray, spacing: float) -> bytes:
    """A gzipped NIfTI-1 file of ``array`` with an isotropic diagonal affine of ``spacing`` (deterministic bytes)."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    return gzip.compress(nib.Nifti1Image(array, affine).to_bytes(), compresslevel=6, mtime=0)


def _params(num_training: int, num_validation: int, num_test: int, spatial_size: Sequence[int], seed: int) -> dict:
    return {
        "generator": "monai_ext.data.make_synthetic_dataset",
        "version": _GENERATOR_VERSION,
        "num_training": int(num_training),
        "num_validation": int(num_validation),
        "num_test": int(num_test),
        "spatial_size": [int(s) for s in spatial_size],
        "seed": int(seed),
    }


def _reusable(datalist_file: Path, params: dict) -> bool:
    """Whether ``datalist_file`` was generated with ``params`` and all its files exist."""
    try:
        with open(datalist_file) as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(content, dict) or "synthetic" not in content:
        raise FileExistsError(
            f"{datalist_file} exists and was not written by make_synthetic_dataset; "
            "refusing to overwrite it: choose another folder for the synthetic dataset."
        )
    if content["synthetic"] != params:
        return False
    root = datalist_file.parent
    entries = [e for key in ("training", "validation", "test") for e in content.get(key, [])]
    return all((root / e["image"]).is_file() and (root / e["label"]).is_file() for e in entries)


def _clear(root: Path) -> None:
    """Remove the phantom files a generation with other parameters left in ``root``."""
    for folder in _FOLDERS_2D + _FOLDERS_3D:
        for old in (root / folder).glob("phantom_*"):
            old.unlink()


def make_synthetic_dataset(
    root_dir: str | PathLike,
    num_training: int = 32,
    num_validation: int = 8,
    num_test: int = 8,
    spatial_size: Sequence[int] = (128, 128),
    seed: int = 0,
) -> str:
    """
    Write a small synthetic segmentation dataset with a MONAI decathlon ``dataset.json`` of ``training``,
    ``validation`` and ``test`` splits:

    - two sizes in ``spatial_size``: chest X-ray-like images (see :func:`synthetic_phantom`), 8-bit grey PNG files
      ``images/phantom_NNNN.png`` and ``masks/phantom_NNNN.png``. The masks follow the SCR chest X-ray convention
      (0 background, 150 right lung, 200 left lung, 250 heart over lung), so a bundle's ``label_values`` work on
      both: ``[[0, 250], [150, 200]]`` for lungs versus the rest;
    - three sizes: left-atrium-like MRI volumes (see :func:`synthetic_volume`), uint8 NIfTI files in the Medical
      Segmentation Decathlon layout (``imagesTr/`` and ``labelsTr/`` for the training and validation splits,
      ``imagesTs/`` and ``labelsTs/`` for the test split, ``phantom_NNNN.nii.gz``) with an isotropic spacing of
      :data:`SYNTHETIC_VOLUME_SPACING` mm; masks 0 (background) and 1 (left atrium), as in ``la2018_mri``.

    The dataset is deterministic for a ``seed``. The parameters are stored in ``dataset.json`` under
    ``"synthetic"``: a folder already holding a dataset generated with the same parameters is reused
    as it is; one generated with other parameters is rewritten. A ``dataset.json`` not written here is
    never overwritten (``FileExistsError``).

    Args:
        root_dir: the folder to write (created when missing).
        num_training: number of training pairs.
        num_validation: number of validation pairs.
        num_test: number of test pairs.
        spatial_size: image size as MONAI's ``LoadImage`` returns it, at least 16 each: ``(width, height)`` of the PNG
            files (MONAI's 2D readers put the file's columns first), or ``(x, y, z)`` of the NIfTI volumes.
        seed: random seed.

    Returns:
        ``root_dir`` as an absolute path.
    """
    num_training = check_positive_int("num_training", num_training)
    num_validation = check_non_negative_int("num_validation", num_validation)
    num_test = check_non_negative_int("num_test", num_test)
    if len(spatial_size) not in (2, 3) or min(spatial_size) < 16:
        raise ValueError(f"spatial_size must be 2 or 3 sizes of at least 16 pixels, got {spatial_size}.")
    root = Path(os.path.abspath(os.path.expanduser(root_dir)))
    datalist_file = root / _DATALIST_FILENAME
    params = _params(num_training, num_validation, num_test, spatial_size, seed)
    total = num_training + num_validation + num_test
    if datalist_file.exists() and _reusable(datalist_file, params):
        logger.info("Reusing the synthetic dataset of %d images at %s.", total, root)
        return str(root)

    volumes = len(spatial_size) == 3
    for folder in _FOLDERS_3D if volumes else _FOLDERS_2D:
        (root / folder).mkdir(parents=True, exist_ok=True)
    _clear(root)
    datalist_file.unlink(missing_ok=True)

    entries = []
    for index in range(total):
        rng = np.random.default_rng([seed, index])
        if volumes:
            image, mask = synthetic_volume(rng, tuple(int(s) for s in spatial_size))
            images, labels = ("imagesTs", "labelsTs") if index >= num_training + num_validation else _FOLDERS_3D[:2]
            name = f"phantom_{index:04d}.nii.gz"
            (root / images / name).write_bytes(_nifti_gz(image, SYNTHETIC_VOLUME_SPACING))
            (root / labels / name).write_bytes(_nifti_gz(mask, SYNTHETIC_VOLUME_SPACING))
        else:
            image, mask = synthetic_phantom(rng, (int(spatial_size[1]), int(spatial_size[0])))  # (rows, columns)
            images, labels, name = "images", "masks", f"phantom_{index:04d}.png"
            Image.fromarray(image).save(root / images / name)
            Image.fromarray(mask).save(root / labels / name)
        entries.append({"image": f"{images}/{name}", "label": f"{labels}/{name}"})

    content: dict[str, Any] = _DESCRIPTIONS[volumes] | {
        "numTraining": num_training,
        "numValidation": num_validation,
        "numTest": num_test,
        "synthetic": params,
        "training": entries[:num_training],
        "validation": entries[num_training : num_training + num_validation],
        "test": entries[num_training + num_validation :],
    }
    tmp = datalist_file.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(content, f, indent=1)
    os.replace(tmp, datalist_file)  # written last: a dataset.json means a complete dataset
    logger.info("Generated a synthetic dataset of %d %s at %s.", total, "volumes" if volumes else "images", root)
    return str(root)
