"""
Inputs that must never go silently wrong (issue 11): inference on unlabelled data from every bundle, the documented
per-image min-max option on the ``monai.bundle run`` command line, the check of what the masks hold before training,
data errors that end with exit status 1 and the file named, and settings refused before training.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import BUNDLES, REPO, read_bundle_config, run_bundle_configs, spatial_dims, tiny
from PIL import Image

from monai_ext.data import check_label_content, file_stem, load_image_datalist, resolve_dataset_dir
from monai_ext.transforms import ScaleIntensityToUnitd
from monai_ext.utils import check_num_classes, check_spatial_size

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def _grey(rows: int = 40, cols: int = 48) -> np.ndarray:
    return RNG.integers(0, 256, (rows, cols), dtype=np.uint8)


def _scan(path: Path, dims: int = 2, rows: int = 40, cols: int = 48) -> str:
    """A random grey image at ``path`` + its suffix: a PNG of ``rows x cols`` (2D) or a uint8 NIfTI volume of
    ``rows x cols x 16`` at 0.625 mm (3D)."""
    if dims == 2:
        return _png(path.with_name(path.name + ".png"), _grey(rows, cols))
    path.parent.mkdir(parents=True, exist_ok=True)
    volume = RNG.integers(0, 256, (rows, cols, 16), dtype=np.uint8)
    nib.save(nib.Nifti1Image(volume, np.diag([0.625, 0.625, 0.625, 1.0])), path.with_name(path.name + ".nii.gz"))
    return str(path.with_name(path.name + ".nii.gz"))


def _shape(path: str | Path) -> tuple[int, ...]:
    """The array shape of a PNG image or a NIfTI volume."""
    return nib.load(path).shape if str(path).endswith((".nii", ".nii.gz")) else np.asarray(Image.open(path)).shape


def _binary_dataset(root: Path, num: int = 10, truncated: str | None = None) -> Path:
    """``images/`` + ``masks/`` of ``num`` grey PNGs with 0/1 masks (a square of 1s); ``truncated``: cut that image."""
    for i in range(num):
        mask = np.zeros((40, 48), np.uint8)
        mask[8:30, 10:36] = 1
        _png(root / "images" / f"case{i}.png", _grey())
        _png(root / "masks" / f"case{i}.png", mask)
    if truncated:
        path = root / "images" / truncated
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return root


def _python(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _chain(error: BaseException | None) -> str:
    """The messages of an error and its causes (MONAI's config parser wraps errors in RuntimeError)."""
    messages = []
    while error is not None:
        messages.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def _tiny_checkpoint(bundle: str, root: Path) -> None:
    """A checkpoint of the bundle's network at its tiny sizes, where inference.json reads it."""
    parser = read_bundle_config(bundle, "inference", bundle_root=str(root), **tiny(bundle))
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")


# ----------------------------------------------------------------------------------------- unlabelled inference


def _images_alone(root: Path, dims: int = 2) -> list[str]:
    return [_scan(root / f"new{i}", dims, 30 + i, 36) for i in range(3)]


def _images_folder_without_masks(root: Path) -> list[str]:
    return [_png(root / "images" / f"new{i}.png", _grey()) for i in range(3)]


def _dataset_json_without_labels(root: Path, dims: int = 2) -> list[str]:
    files = [_scan(root / "img" / f"t{i}", dims) for i in range(2)]
    content = {"training": [], "test": [{"image": str(Path(f).relative_to(root))} for f in files]}
    (root / "dataset.json").write_text(json.dumps(content))
    return files


@pytest.mark.parametrize(
    "make", [_images_alone, _images_folder_without_masks, _dataset_json_without_labels], ids=lambda f: f.__name__[1:]
)
def test_image_datalist_without_labels(make, tmp_path: Path) -> None:
    """All images of a folder of images alone; the test split of a dataset.json whose entries have no label."""
    files = make(tmp_path / "data")
    root = resolve_dataset_dir(tmp_path / "data", tmp_path / "unused")
    assert load_image_datalist(root) == [{"image": f} for f in sorted(files)]


def test_image_datalist_one_file_and_mistakes(tmp_path: Path) -> None:
    image = _png(tmp_path / "one.png", _grey())
    assert resolve_dataset_dir(None, tmp_path / "synthetic", image=image) is None
    assert not (tmp_path / "synthetic").exists()
    assert load_image_datalist(None, image=image) == [{"image": image}]
    with pytest.raises(ValueError, match=r"--image .*one\.png.*--dataset_dir .*not both"):
        resolve_dataset_dir(tmp_path, tmp_path / "synthetic", image=image)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_image_datalist(None, image=tmp_path / "missing.png")
    with pytest.raises(ValueError, match="--dataset_dir DIR.*--image PATH"):
        load_image_datalist(None)
    _binary_dataset(tmp_path / "labelled")
    assert len(load_image_datalist(tmp_path / "labelled")) == 1  # images + masks: the test split (10%)
    assert len(load_image_datalist(tmp_path / "labelled", "all")) == 10


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("source", ["images_alone", "dataset_json", "image"])
def test_inference_on_unlabelled_data(bundle: str, source: str, tmp_path: Path) -> None:
    """Every bundle's inference.json: a folder of images alone, a dataset.json without labels, or ``--image PATH``
    (PNG images for a 2D bundle, NIfTI volumes for a 3D one)."""
    root = tmp_path / "bundle"
    _tiny_checkpoint(bundle, root)
    dims = spatial_dims(bundle)
    if source == "image":
        files = [_scan(tmp_path / "scan", dims, 37, 41)]
        data = {"image": files[0]}
    else:
        make = _images_alone if source == "images_alone" else _dataset_json_without_labels
        files = make(tmp_path / "data", dims)
        data = {"dataset_dir": str(tmp_path / "data")}
    run_bundle_configs(bundle, "inference", bundle_root=str(root), **data, **tiny(bundle))
    ext = read_bundle_config(bundle, "inference")["output_ext"]
    for file in files:
        assert _shape(root / "predictions" / f"{file_stem(Path(file).name)}_seg{ext}") == _shape(file)
    assert len(list((root / "predictions").glob(f"*_seg{ext}"))) == len(files)
    assert not (root / "synthetic_data").exists()


# ----------------------------------------------------------------------------------------- per-image min-max


def test_minmax_intensity_range() -> None:
    img = torch.tensor([[[-1000.0, 0.0, 3000.0]]])
    for value in ("minmax", "MinMax", None):
        out = ScaleIntensityToUnitd("image", intensity_range=value)({"image": img})["image"]
        assert torch.allclose(out, torch.tensor([[[0.0, 0.25, 1.0]]]))
    with pytest.raises(ValueError, match="intensity_range .*'minmax'.*got 'null'"):
        ScaleIntensityToUnitd("image", intensity_range="null")


def _documented_command(marker: str) -> list[str]:
    """The README's command line that holds ``marker`` (in a fenced block), as arguments after ``python``."""
    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines()]
    found = [line for line in lines if line.startswith("python -m monai.bundle run") and marker in line]
    assert found, f"README.md documents no command line with {marker!r}"
    return shlex.split(found[0])[1:]


@pytest.mark.slow
def test_documented_minmax_command_line(tmp_path: Path) -> None:
    """README's per-image min-max command, run as written through ``python -m monai.bundle run`` (python-fire)."""
    root = tmp_path / "bundle"
    _tiny_checkpoint("nlcen", root)
    scan = tmp_path / "scan.png"
    Image.fromarray(RNG.integers(1000, 4000, (37, 41), dtype=np.uint16)).save(scan)  # 16 bit: outside [0, 255]
    args = [str(scan) if a == "scan.png" else a for a in _documented_command("--intensity_range minmax")]
    args += ["--bundle_root", str(root), "--spatial_size", "[64, 64]", "--num_workers", "0"]
    done = _python(args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert np.asarray(Image.open(root / "predictions" / "scan_seg.png")).shape == (37, 41)


# ----------------------------------------------------------------------------------------- what the masks hold


def test_check_label_content(caplog: pytest.LogCaptureFixture) -> None:
    full, empty = {"label": torch.ones(1, 4, 4)}, {"label": torch.zeros(1, 4, 4)}
    with caplog.at_level(logging.INFO, logger="monai_ext"):
        fractions = check_label_content({"training": [full, empty, full, full], "validation": [full]}, [0, 1])
    assert fractions == {"training": 0.25, "validation": 0.0}
    assert "training split: 1 of 4 masks empty (25.0%)" in caplog.text
    with pytest.raises(ValueError, match=r"validation split \(2 masks\) is empty.*label_threshold=128"):
        check_label_content({"training": [full], "validation": [empty, empty]}, None, 128)


@pytest.mark.parametrize(
    "bundle, setting, match",
    [
        ("nlcen", {"label_threshold": 128}, r"label_threshold=128 .*raw values 0, 1\. Check --label_threshold"),
        ("protoseg", {"label_threshold": 128}, r"label_threshold=128 .*raw values 0, 1\. Check --label_threshold"),
        # 0/1 masks whose values are also class indices that map elsewhere: refused as ambiguous, naming the setting
        ("sagan_seg", {"label_values": [[0, 1], [250]], "num_classes": 2}, r"label_values \[\[0, 1\], \[250\]\]"),
    ],
)
def test_all_empty_masks_stop_before_training(bundle: str, setting: dict, match: str, tmp_path: Path) -> None:
    """``--label_threshold 128`` on masks stored as 0/1 empties every mask: an error before the first epoch."""
    data = _binary_dataset(tmp_path / "data")
    with pytest.raises(Exception) as info:  # MONAI wraps the ValueError: matched on the chain
        run_bundle_configs(
            bundle, "train", bundle_root=str(tmp_path / "b"), dataset_dir=str(data), epochs=1, **setting, **tiny(bundle)
        )
    assert re.search(match, _chain(info.value)), _chain(info.value)
    assert not list((tmp_path / "b").rglob("model.pt"))


# ----------------------------------------------------------------------------------------- errors: exit 1, named


@pytest.mark.slow
def test_truncated_image_while_caching_exits_1_naming_the_file(tmp_path: Path) -> None:
    """A truncated PNG among the training images, cached on two threads: a Python error naming it, exit status 1."""
    data = _binary_dataset(tmp_path / "data", num=10, truncated="case4.png")
    args = ["-m", "monai.bundle", "run", "--config_file", "bundles/nlcen/configs/train.json"]
    args += ["--dataset_dir", str(data), "--bundle_root", str(tmp_path / "b"), "--label_values", "[0, 1]"]
    args += ["--spatial_size", "[32, 32]", "--num_workers", "2", "--epochs", "1"]
    done = _python(args)
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.search(r"Cannot read image file '[^']*case4\.png'.*truncated", done.stderr), done.stderr[-3000:]


_CACHING_SCRIPT = """
import time, torch
from monai.transforms import Lambda
from monai_ext.data import CacheDataset

def work(item):
    if item["image"] == "bad.png":
        raise ValueError("image 'bad.png' is broken")
    x, end = torch.rand(1, 128, 128), time.time() + 0.5
    while time.time() < end:  # the other thread is inside torch when the error reaches the main thread
        x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    return item

CacheDataset([{"image": "bad.png"}] + [{"image": f"{i}.png"} for i in range(4)], Lambda(work), num_workers=2)
"""


@pytest.mark.slow
def test_caching_error_on_worker_threads_exits_1() -> None:
    """MONAI's CacheDataset aborts here ("terminate called without an active exception", exit 134)."""
    done = _python(["-c", _CACHING_SCRIPT])
    assert done.returncode == 1, done.stderr[-3000:]
    assert "dataset item 0 ('bad.png'): ValueError: image 'bad.png' is broken" in done.stderr
    assert "terminate called" not in done.stderr


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundles_cache_with_the_named_error_dataset(bundle: str) -> None:
    parser = read_bundle_config(bundle, "train")
    for split in ("train", "validate"):
        assert parser[f"{split}#dataset#_target_"] == "monai_ext.data.CacheDataset"


# ----------------------------------------------------------------------------------------- settings refused early


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize(
    "setting, match",
    [
        ({"num_classes": 1}, r"num_classes must be >= 2.*--num_classes 2"),
        ({"num_classes": 5}, r"num_classes=5 does not match label_values.*--num_classes"),
        ({"num_classes": 3, "label_threshold": 128}, r"num_classes=3 does not match label_threshold=128"),
        ({"spatial_size": [0, 0]}, r"spatial_size must hold whole numbers >= 1.*\[0, 0\]"),
        ({"spatial_size": [64, -1]}, r"spatial_size must hold whole numbers >= 1"),
    ],
    ids=["one_class", "classes_vs_values", "classes_vs_threshold", "size_zero", "size_negative"],
)
def test_impossible_settings_refused_before_training(bundle: str, setting: dict, match: str, tmp_path: Path) -> None:
    """The preprocessing refuses them when built (before any data is read), naming the options."""
    undefined = sorted(key for key in setting if key not in read_bundle_config(bundle, "train"))
    if undefined:  # the 3D bundle: no resizing (spatial_size), no threshold (NIfTI masks hold their classes)
        pytest.skip(f"{bundle} has no option {undefined}")
    overrides = {**tiny(bundle), **setting, "bundle_root": str(tmp_path)}
    configs = ["train"] if "num_classes" in setting else ["train", "inference"]
    for config in configs:
        parser = read_bundle_config(bundle, config, **overrides)
        with pytest.raises(Exception) as info:  # MONAI wraps the ValueError: matched on the chain
            parser.get_parsed_content("preprocessing")
        assert re.search(match, _chain(info.value)), _chain(info.value)
    assert not (tmp_path / "synthetic_data").exists()


def test_size_and_class_count_checks() -> None:
    assert check_spatial_size("spatial_size", [224, 224]) == [224, 224]
    assert check_spatial_size("spatial_size", (8.0, 8)) == [8, 8] and check_spatial_size("spatial_size", 96) == 96
    for bad in ([0, 0], [64, -1], [1.5, 2], [], "224", [True, 1], [float("nan"), 4]):
        with pytest.raises(ValueError, match="spatial_size"):
            check_spatial_size("spatial_size", bad)
    with pytest.raises(ValueError, match="2 sizes"):
        check_spatial_size("spatial_size", [4, 4, 4], spatial_dims=2)
    assert check_num_classes(2, [[0, 250], [150, 200]]) == 2 and check_num_classes(2.0, None, 128) == 2
    for args in ((1,), (True,), (3, [[0], [1]]), (4, None, 0.5)):
        with pytest.raises(ValueError, match="num_classes"):
            check_num_classes(*args)
