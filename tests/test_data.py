"""Tests of monai_ext.data (datalists, synthetic data) and the data transforms of monai_ext.transforms."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import Dataset, MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityRanged
from PIL import Image

from monai_ext.data import (
    file_stem,
    load_datalist,
    make_synthetic_dataset,
    resolve_dataset_dir,
    split_stems,
)
from monai_ext.transforms import (
    CheckFinited,
    CheckSpatialShaped,
    ImageChannelsd,
    LabelToIndex,
    LabelToIndexd,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
requires_datasets = pytest.mark.skipif(
    not DATASETS.is_dir(), reason=f"real datasets not found at {DATASETS} (../shared/datasets from the repository)"
)
KEYS = ["image", "label"]
LUNGS = [[0, 250], [150, 200]]  # SCR masks: lungs 1, heart and background 0


def load(data: dict) -> dict:
    """LoadImaged + EnsureChannelFirstd on image and label."""
    return Compose([LoadImaged(KEYS), EnsureChannelFirstd(KEYS)])(data)


def pipeline(channels: int, spatial_size=(64, 64), image_mode: str = "area", **label_args) -> Compose:
    """The full pipeline every bundle uses, from files to (C, *spatial_size) images in [0, 1] and class indices."""
    return Compose(
        [
            LoadImaged(KEYS),
            EnsureChannelFirstd(KEYS),
            ImageChannelsd("image", channels=channels),
            LabelToIndexd("label", **label_args),
            CheckSpatialShaped(KEYS),
            CheckFinited(KEYS),
            Resized(KEYS, spatial_size=spatial_size, mode=(image_mode, "nearest")),
            ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True),
        ]
    )


def error_chain(exc: BaseException) -> str:
    """The messages of an exception and of its causes (MONAI's Compose wraps errors in RuntimeError)."""
    messages = []
    while exc is not None:
        messages.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(messages)


def write_png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def write_nifti(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return str(path)


def scr_mask(rows: int = 40, cols: int = 48) -> np.ndarray:
    """A small mask with the SCR raw values 0, 150, 200, 250."""
    mask = np.zeros((rows, cols), np.uint8)
    mask[5:30, 4:20] = 150
    mask[5:30, 28:44] = 200
    mask[20:35, 18:32] = 250
    return mask


def folder_dataset(root: Path, stems, image_suffix: str = ".png", mask_suffix: str = ".png") -> Path:
    """Write an images/ + masks/ dataset of tiny PNGs."""
    for stem in stems:
        write_png(root / "images" / f"{stem}{image_suffix}", np.full((8, 8), 100, np.uint8))
        write_png(root / "masks" / f"{stem}{mask_suffix}", np.zeros((8, 8), np.uint8))
    return root


# ----------------------------------------------------------------------------------------------- datalists


def test_datalist_from_dataset_json(tmp_path):
    for name in ("a", "b", "c"):
        write_png(tmp_path / "img" / f"{name}.png", np.zeros((8, 8), np.uint8))
        write_png(tmp_path / "lab" / f"{name}.png", np.zeros((8, 8), np.uint8))
    content = {
        "name": "toy",
        "training": [{"image": "img/a.png", "label": "lab/a.png"}, {"image": "img/b.png", "label": "lab/b.png"}],
        "validation": [{"image": "img/c.png", "label": "lab/c.png"}],
        "test": ["img/c.png"],  # decathlon test lists may hold image paths alone
    }
    (tmp_path / "dataset.json").write_text(json.dumps(content))

    training = load_datalist(tmp_path)
    assert training == [
        {"image": str(tmp_path / "img" / "a.png"), "label": str(tmp_path / "lab" / "a.png")},
        {"image": str(tmp_path / "img" / "b.png"), "label": str(tmp_path / "lab" / "b.png")},
    ]
    assert len(load_datalist(str(tmp_path), "validation")) == 1
    assert len(load_datalist(tmp_path, "all", require_labels=False)) == 4
    with pytest.raises(ValueError, match=r"no 'label'.*c\.png"):
        load_datalist(tmp_path, "test")
    assert load_datalist(tmp_path, "test", require_labels=False) == [{"image": str(tmp_path / "img" / "c.png")}]


@pytest.mark.parametrize(
    "name, stem",
    [("a.png", "a"), ("a.nii.gz", "a"), ("A.NII.GZ", "A"), ("x.v2.tiff", "x.v2"), ("b.jpeg", "b"), ("n.txt", None)],
)
def test_file_stem(name, stem):
    assert file_stem(name) == stem


def test_datalist_from_folders_pairs_by_stem(tmp_path):
    stems = [f"case{i:02d}" for i in range(20)]
    for stem in stems[:10]:  # PNG images with PNG masks
        write_png(tmp_path / "images" / f"{stem}.png", np.zeros((8, 8), np.uint8))
        write_png(tmp_path / "masks" / f"{stem}.png", np.zeros((8, 8), np.uint8))
    for stem in stems[10:15]:  # NIfTI pairs: stems without .nii.gz
        write_nifti(tmp_path / "images" / f"{stem}.nii.gz", np.zeros((8, 8), np.float32))
        write_nifti(tmp_path / "masks" / f"{stem}.nii.gz", np.zeros((8, 8), np.uint8))
    for stem in stems[15:]:  # JPEG images with PNG masks
        write_png(tmp_path / "images" / f"{stem}.jpg", np.zeros((8, 8), np.uint8))
        write_png(tmp_path / "masks" / f"{stem}.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "images" / ".DS_Store").write_text("hidden")
    (tmp_path / "masks" / "notes.txt").write_text("not an image")

    splits = {split: load_datalist(tmp_path, split) for split in ("training", "validation", "test")}
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [16, 2, 2]
    entries = [e for split in splits.values() for e in split]
    assert sorted(Path(e["image"]).name.split(".")[0] for e in entries) == stems
    for entry in entries:
        assert Path(entry["image"]).is_absolute() and file_stem(Path(entry["image"]).name) == file_stem(
            Path(entry["label"]).name
        )
    assert load_datalist(tmp_path, "test") == splits["test"]  # the same split on every call
    assert len(load_datalist(tmp_path, "all")) == 20


def test_split_stems_deterministic():
    stems = [f"s{i}" for i in range(50)]
    split = split_stems(stems)
    assert [len(split[k]) for k in ("training", "validation", "test")] == [40, 5, 5]
    assert split_stems(list(reversed(stems))) == split  # does not depend on listing order
    assert split_stems(stems, seed=1) != split
    assert sorted(stem for part in split.values() for stem in part) == sorted(stems)
    assert [len(v) for v in split_stems(["a", "b", "c"]).values()] == [1, 1, 1]


def test_datalist_images_without_masks_for_inference(tmp_path):
    write_png(tmp_path / "images" / "only.png", np.zeros((8, 8), np.uint8))
    assert load_datalist(tmp_path, "all", require_labels=False) == [{"image": str(tmp_path / "images" / "only.png")}]
    with pytest.raises(FileNotFoundError, match="no masks/ folder"):
        load_datalist(tmp_path, "all")


def _bad_json(root: Path, content: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(content))
    return root


@pytest.mark.parametrize(
    "make, split, error, match",
    [
        (lambda p: p / "nowhere", "training", FileNotFoundError, "nowhere"),
        (lambda p: (p / "empty_dir").mkdir() or p / "empty_dir", "training", FileNotFoundError, "images/"),
        (lambda p: folder_dataset(p, ["a", "b"]) and (p / "masks" / "b.png").unlink() or p, "all", ValueError, "b.png"),
        (
            lambda p: folder_dataset(p, ["a", "b"]) and (p / "images" / "a.png").unlink() or p,
            "all",
            ValueError,
            "a.png",
        ),
        (
            lambda p: folder_dataset(p, ["a"]) and write_png(p / "images" / "a.jpg", np.zeros((4, 4), np.uint8)) and p,
            "all",
            ValueError,
            "a.jpg",
        ),
        (lambda p: folder_dataset(p, ["a"]), "fold0", ValueError, "fold0"),
        (lambda p: _bad_json(p, {"training": [], "test": []}), "validation", ValueError, r"'validation'.*'training'"),
        (lambda p: _bad_json(p, {"training": []}), "training", ValueError, "empty"),
        (
            lambda p: _bad_json(p, {"training": [{"image": "gone.png", "label": "gone_mask.png"}]}),
            "training",
            FileNotFoundError,
            "gone.png",
        ),
        (
            lambda p: _bad_json(p, {"x": 1}) and (p / "dataset.json").write_text("{oops") and p,
            "training",
            ValueError,
            "not valid JSON",
        ),
    ],
    ids=[
        "missing_dir",
        "no_images_folder",
        "image_without_mask",
        "mask_without_image",
        "two_images_one_stem",
        "unknown_split",
        "missing_split_key",
        "empty_split",
        "missing_file",
        "bad_json",
    ],
)
def test_datalist_errors(tmp_path, make, split, error, match):
    root = make(tmp_path)
    with pytest.raises(error, match=match):
        load_datalist(root, split)


# ----------------------------------------------------------------------------------------------- bad files


def test_unreadable_file_names_the_file(tmp_path):
    broken = tmp_path / "images" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    mask = write_png(tmp_path / "masks" / "broken.png", np.zeros((8, 8), np.uint8))
    dataset = Dataset([{"image": str(broken), "label": mask}], transform=pipeline(1, label_values=[0]))
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the reader's error
        dataset[0]
    assert "LoadImaged" in str(info.value)
    assert re.search(r"cannot identify image file .*broken\.png", error_chain(info.value))


def test_label_value_not_in_label_values(tmp_path):
    mask = scr_mask()
    mask[0, 0] = 99
    data = load({"image": write_png(tmp_path / "img.png", mask), "label": write_png(tmp_path / "odd_mask.png", mask)})
    with pytest.raises(ValueError, match=r"odd_mask\.png.* 99 .*not in label_values \[0, 150, 200, 250\]"):
        LabelToIndexd("label", label_values=[0, 150, 200, 250])(data)


def test_spatial_shape_mismatch(tmp_path):
    data = load(
        {
            "image": write_png(tmp_path / "big.png", np.zeros((32, 40), np.uint8)),
            "label": write_png(tmp_path / "small_mask.png", np.zeros((30, 40), np.uint8)),
        }
    )
    with pytest.raises(ValueError, match=r"big\.png.*\(40, 32\).*small_mask\.png.*\(40, 30\)"):
        CheckSpatialShaped(KEYS)(data)
    same = {"image": data["image"], "label": data["image"]}
    assert CheckSpatialShaped(KEYS)(same) is same


def test_nan_image(tmp_path):
    image = np.ones((16, 16), np.float32)
    image[3, 4] = np.nan
    image_file = write_nifti(tmp_path / "nan_image.nii.gz", image)
    data = load({"image": image_file, "label": write_png(tmp_path / "m.png", scr_mask(16, 16))})
    with pytest.raises(ValueError, match=r"nan_image\.nii\.gz.* 1 NaN"):
        CheckFinited(KEYS)(data)
    data["image"] = torch.nan_to_num(data["image"])
    assert CheckFinited(KEYS)(data) is data


# ----------------------------------------------------------------------------------------------- transforms


def test_image_channels(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((12, 10, 1), 255, np.uint8)], axis=-1)
    files = {
        "grey.png": write_png(tmp_path / "grey.png", rgb[..., 0]),
        "rgb.png": write_png(tmp_path / "rgb.png", rgb),
        "rgba.png": write_png(tmp_path / "rgba.png", rgba),
        "grey.nii.gz": write_nifti(tmp_path / "grey.nii.gz", rgb[..., 0].astype(np.float32)),
    }
    loaded = {name: load({"image": f, "label": f}) for name, f in files.items()}
    assert [loaded[n]["image"].shape[0] for n in files] == [1, 3, 4, 1]
    for name, data in loaded.items():
        for channels in (1, 3):
            out = ImageChannelsd("image", channels=channels)(data)["image"]
            assert isinstance(out, MetaTensor) and out.shape == (channels, *data["image"].shape[1:]), name
            assert out.meta["filename_or_obj"] == files[name]
    grey = ImageChannelsd("image", channels=1)(loaded["rgba.png"])["image"]
    expected = Image.fromarray(rgb).convert("L")  # PIL uses the same ITU-R 601 weights
    np.testing.assert_allclose(grey[0].numpy().T, np.asarray(expected, np.float32), atol=1.0)
    repeated = ImageChannelsd("image", channels=3)(loaded["grey.png"])["image"]
    assert torch.equal(repeated[0], repeated[2])
    assert ImageChannelsd("image", channels=3)({"image": np.zeros((4, 5, 5))})["image"].shape == (3, 5, 5)

    five = loaded["grey.png"]["image"].repeat(5, 1, 1)
    with pytest.raises(ValueError, match=r"grey\.png.* 5 channels"):
        ImageChannelsd("image", channels=1)({"image": five})
    with pytest.raises(ValueError, match="1 .* or 3"):
        ImageChannelsd("image", channels=2)


def test_label_to_index_values_groups_threshold():
    mask = torch.as_tensor(scr_mask())[None].float()
    four = LabelToIndex(label_values=[0, 150, 200, 250])(mask)
    assert four.shape == (1, 40, 48) and four.dtype == torch.float32
    assert set(four.unique().tolist()) == {0, 1, 2, 3}
    lungs = LabelToIndex(label_values=LUNGS)(mask)
    assert torch.equal(lungs, ((mask == 150) | (mask == 200)).float())
    assert torch.equal(LabelToIndex(threshold=175)(mask), (mask >= 175).float())
    np_out = LabelToIndex(label_values=LUNGS, dtype=np.uint8)(mask.numpy())
    assert isinstance(np_out, np.ndarray) and np_out.dtype == np.uint8


def test_label_to_index_rgb_masks():
    grey = torch.as_tensor(scr_mask())[None].float()
    rgba = torch.cat([grey, grey, grey, torch.full_like(grey, 255)])
    assert torch.equal(LabelToIndex(label_values=LUNGS)(rgba), LabelToIndex(label_values=LUNGS)(grey))
    noisy = torch.cat([grey, grey + 1, grey - 1]).clamp(0, 255)  # JPEG-like colour noise
    assert torch.equal(LabelToIndex(threshold=128)(noisy), (grey >= 128).float())
    noisy = MetaTensor(noisy, meta={"filename_or_obj": "colour_mask.jpg"})
    with pytest.raises(ValueError, match=r"colour_mask\.jpg.*colour channels differ"):
        LabelToIndexd("label", label_values=LUNGS)({"label": noisy})


@pytest.mark.parametrize(
    "args, match",
    [
        ({}, "exactly one"),
        ({"label_values": [0, 1], "threshold": 0.5}, "exactly one"),
        ({"label_values": [0, [150, 0]]}, "0 is listed twice"),
        ({"label_values": [0, []]}, "empty"),
        ({"label_values": []}, "non-empty"),
    ],
)
def test_label_to_index_bad_config(args, match):
    with pytest.raises(ValueError, match=match):
        LabelToIndexd("label", **args)


# ----------------------------------------------------------------------------------------------- file formats


def _png_grey(tmp_path: Path, rng):
    mask = scr_mask()
    image = np.clip(mask.astype(np.int16) // 2 + rng.integers(0, 40, mask.shape), 0, 255).astype(np.uint8)
    return write_png(tmp_path / "x.png", image), write_png(tmp_path / "x_mask.png", mask), 1, {"label_values": LUNGS}


def _jpeg_rgb(tmp_path: Path, rng):
    mask = np.where(scr_mask() > 0, 255, 0).astype(np.uint8)
    image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.jpg", quality=80)
    Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "x_mask.jpg", quality=80)  # as Kvasir-SEG
    return str(tmp_path / "x.jpg"), str(tmp_path / "x_mask.jpg"), 3, {"threshold": 128}


def _tiff_rgb(tmp_path: Path, rng):
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    return (
        write_png(tmp_path / "x.tif", image),
        write_png(tmp_path / "x_mask.tiff", scr_mask()),
        1,
        {"label_values": [0, 150, 200, 250]},
    )


def _nifti(tmp_path: Path, rng):
    image = rng.uniform(0, 255, (40, 48)).astype(np.float32)
    mask = scr_mask()
    return (
        write_nifti(tmp_path / "x.nii.gz", image),
        write_nifti(tmp_path / "x_mask.nii.gz", mask),
        3,
        {"label_values": [0, 150, 200, 250]},
    )


@pytest.mark.parametrize("make", [_png_grey, _jpeg_rgb, _tiff_rgb, _nifti], ids=["png", "jpeg", "tiff", "nifti"])
@pytest.mark.parametrize("image_mode", ["area", "bilinear"])
def test_pipeline_file_formats(tmp_path, make, image_mode):
    image_file, mask_file, channels, label_args = make(tmp_path, np.random.default_rng(0))
    out = pipeline(channels, (32, 24), image_mode, **label_args)({"image": image_file, "label": mask_file})
    image, label = out["image"], out["label"]
    assert image.shape == (channels, 32, 24) and label.shape == (1, 32, 24)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    num_classes = len(label_args.get("label_values", [0, 1]))
    assert set(label.unique().tolist()) == set(range(num_classes))
    assert image.meta["filename_or_obj"] == image_file


# ----------------------------------------------------------------------------------------------- synthetic data


def test_synthetic_dataset(tmp_path, caplog):
    kwargs = {"num_training": 4, "num_validation": 2, "num_test": 2, "spatial_size": (64, 48), "seed": 3}
    root = make_synthetic_dataset(tmp_path / "a", **kwargs)
    assert root == str(tmp_path / "a")
    again = make_synthetic_dataset(tmp_path / "b", **kwargs)
    files = sorted(p.relative_to(root) for p in Path(root).rglob("*.png"))
    assert len(files) == 16 and files == sorted(p.relative_to(again) for p in Path(again).rglob("*.png"))
    assert all((Path(root) / f).read_bytes() == (Path(again) / f).read_bytes() for f in files)

    stamp = (Path(root) / "dataset.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="monai_ext"):
        assert make_synthetic_dataset(root, **kwargs) == root
    assert (Path(root) / "dataset.json").stat().st_mtime_ns == stamp and "Reusing" in caplog.text
    make_synthetic_dataset(root, **{**kwargs, "seed": 4})  # other parameters: rewritten
    assert (Path(root) / "images" / files[0].name).read_bytes() != (Path(again) / "images" / files[0].name).read_bytes()

    datalist = load_datalist(again, "training")
    assert len(datalist) == 4 and len(load_datalist(again, "test")) == 2
    for entry in datalist:
        raw = np.asarray(Image.open(entry["label"]))
        assert raw.shape == (48, 64) and set(np.unique(raw)) == {0, 150, 200, 250}
        out = pipeline(1, (64, 48), label_values=LUNGS)(entry)
        assert out["image"].shape == (1, 64, 48) and set(out["label"].unique().tolist()) == {0, 1}
        assert 0.12 < float(out["label"].mean()) < 0.45
        # right lung (150) on the image's left, heart over the lungs' medial side
        columns = np.nonzero(raw == 150)[1].mean(), np.nonzero(raw == 200)[1].mean(), np.nonzero(raw == 250)[1].mean()
        assert columns[0] < 32 < columns[1] and columns[0] < columns[2] < columns[1]


def test_synthetic_volumes(tmp_path, caplog):
    """Three sizes: uint8 NIfTI volumes in the decathlon layout (imagesTr / imagesTs), an atrium labelled 1 that is
    brighter than the rest, 0.625 mm voxels; deterministic, reused, and a 2D set in the same folder is replaced."""
    kwargs = {"num_training": 2, "num_validation": 1, "num_test": 1, "spatial_size": (32, 24, 16), "seed": 3}
    root = make_synthetic_dataset(tmp_path / "a", spatial_size=(32, 32), num_training=1, num_validation=0, num_test=0)
    assert make_synthetic_dataset(root, **kwargs) == root
    again = make_synthetic_dataset(tmp_path / "b", **kwargs)
    files = sorted(p.relative_to(root) for p in Path(root).rglob("phantom_*"))
    assert [str(f.parent) for f in files] == ["imagesTr"] * 3 + ["imagesTs"] + ["labelsTr"] * 3 + ["labelsTs"]
    assert all((Path(root) / f).read_bytes() == (Path(again) / f).read_bytes() for f in files)  # no PNG left over
    content = json.loads((Path(root) / "dataset.json").read_text())
    assert content["tensorImageSize"] == "3D" and content["labels"] == {"0": "background", "1": "left atrium"}
    assert [len(content[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    with caplog.at_level(logging.INFO, logger="monai_ext"):
        make_synthetic_dataset(root, **kwargs)
    assert "Reusing" in caplog.text

    load = Compose([LoadImaged(KEYS, image_only=True), EnsureChannelFirstd(KEYS)])
    for split in ("training", "validation", "test"):
        for entry in load_datalist(root, split):
            item = load(entry)
            image, label = item["image"], item["label"]
            assert image.shape == label.shape == (1, 32, 24, 16)
            assert {nib.load(entry[k]).get_data_dtype() for k in KEYS} == {np.dtype(np.uint8)}
            assert torch.allclose(image.pixdim, torch.full((3,), 0.625, dtype=torch.float64))
            assert set(label.unique().tolist()) == {0, 1} and 0.03 < float(label.float().mean()) < 0.2
            assert image[label == 1].float().mean() > image[label == 0].float().mean() + 40
    for size in ((32, 32, 32, 32), (32, 15, 32)):
        with pytest.raises(ValueError, match="2 or 3 sizes of at least 16"):
            make_synthetic_dataset(tmp_path / "c", spatial_size=size)


def test_synthetic_dataset_refuses_foreign_dataset_json(tmp_path):
    folder_dataset(tmp_path, ["a"])
    (tmp_path / "dataset.json").write_text(json.dumps({"training": []}))
    with pytest.raises(FileExistsError, match="not written by make_synthetic_dataset"):
        make_synthetic_dataset(tmp_path)


def test_resolve_dataset_dir(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="monai_ext"):
        root = resolve_dataset_dir(None, str(tmp_path / "synthetic"), num_training=2, num_validation=1, num_test=1)
    assert root == str(tmp_path / "synthetic") and "No dataset_dir given" in caplog.text and "4 images" in caplog.text
    assert resolve_dataset_dir("", tmp_path / "synthetic", num_training=2, num_validation=1, num_test=1) == root
    assert resolve_dataset_dir(root, "unused") == root
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        resolve_dataset_dir(tmp_path / "no_such_dataset", "unused")


# ----------------------------------------------------------------------------------------------- real data


@requires_datasets
def test_real_jsrt_test_split():
    datalist = load_datalist(DATASETS / "jsrt_scr_224", "test")
    assert len(datalist) == 123
    transform = pipeline(1, (224, 224), label_values=LUNGS)
    for entry in datalist[:: len(datalist) // 3][:4]:
        out = transform(entry)
        image, label = out["image"], out["label"]
        assert image.shape == (1, 224, 224) and label.shape == (1, 224, 224)
        assert 0.0 <= float(image.min()) < float(image.max()) <= 1.0
        assert set(label.unique().tolist()) == {0.0, 1.0}
        assert 0.15 < float(label.mean()) < 0.5


@requires_datasets
def test_real_kvasir_and_dsb2018_samples():
    kvasir = load_datalist(DATASETS / "kvasir_seg", "test")[0]
    raw = load(kvasir)
    assert raw["label"].shape[0] == 3  # JPEG masks load as RGB, with compression noise
    assert len(raw["label"].unique()) > 2
    out = pipeline(3, (96, 96), threshold=128)(kvasir)
    assert out["image"].shape == (3, 96, 96) and set(out["label"].unique().tolist()) == {0.0, 1.0}
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0

    dsb = load_datalist(DATASETS / "dsb2018_stage1_train", "validation")[0]
    assert load(dsb)["image"].shape[0] == 4  # RGBA PNG
    out = pipeline(3, (96, 96), label_values=[0, 255])(dsb)
    assert out["image"].shape == (3, 96, 96) and set(out["label"].unique().tolist()) == {0.0, 1.0}
