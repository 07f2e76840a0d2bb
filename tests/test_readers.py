"""
``monai_ext.data.ImageFileReader`` through every bundle's ``LoadImaged`` path: TIFF channels from the samples per pixel
(whatever the photometric tag), decoded arrays that disagree with their header refused, truncated files named.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from conftest import BUNDLES, read_bundle_config, spatial_dims
from monai.data import PILReader
from monai.transforms import Compose, LoadImage
from PIL import Image

from monai_ext.data import ImageFileReader

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)
HEIGHT, WIDTH = 20, 28
HAS_IMAGECODECS = importlib.util.find_spec("imagecodecs") is not None


def _scr_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[2:15, 3:12], mask[2:15, 16:26], mask[10:18, 10:18] = 150, 200, 250
    return mask


def _load_steps(bundle: str, **overrides) -> Compose:
    """The bundle's preprocessing up to (and with) its channel handling: LoadImaged, EnsureChannelFirstd, ..."""
    parser = read_bundle_config(bundle, "train", **overrides)
    steps = parser.get_parsed_content("preprocessing").transforms
    names = [type(t).__name__ for t in steps]
    return Compose(steps[: names.index("ImageChannelsd") + 1])


def _tiff(path: Path, array: np.ndarray, **kwargs) -> str:
    tifffile.imwrite(path, array, **kwargs)
    return str(path)


# written array (height, width[, samples]), tifffile arguments, in_channels the bundle is run with
CASES = {
    "grey": (RNG.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8), {}, 1),
    "grey16": (RNG.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16), {}, 1),
    "rgb": (RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), {"photometric": "rgb"}, 3),
    "rgb_tagged_grey": (  # three samples per pixel under a grey photometric tag
        RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
        {"photometric": "minisblack", "planarconfig": "contig"},
        3,
    ),
    "rgb16": (RNG.integers(0, 65536, (HEIGHT, WIDTH, 3), dtype=np.uint16), {"photometric": "rgb"}, 3),
    "rgba": (
        RNG.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8),
        {"photometric": "rgb", "extrasamples": ["unassalpha"]},
        3,
    ),
    "rgb_planar": (
        RNG.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8),
        {"photometric": "rgb", "planarconfig": "separate"},
        3,
    ),
}


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if spatial_dims(b) == 2])  # 2D images: 2D bundles
@pytest.mark.parametrize("case", list(CASES))
def test_tiff_pixels_through_the_bundle_loader(bundle: str, case: str, tmp_path: Path) -> None:
    """The loaded image is the written array, channel first, on each bundle's own LoadImaged path."""
    written, kwargs, channels = CASES[case]
    image = _tiff(tmp_path / f"{case}.tif", written, **kwargs)
    with tifffile.TiffFile(image) as tif:  # the file holds what the case says
        assert tif.pages[0].samplesperpixel == (1 if written.ndim == 2 else min(written.shape[0], written.shape[-1]))
    mask = _tiff(tmp_path / "mask.tif", _scr_mask())
    out = _load_steps(bundle, in_channels=channels)({"image": image, "label": mask})
    expected = np.moveaxis(written, 0, -1) if case == "rgb_planar" else written
    expected = expected[..., :3] if case == "rgba" else expected  # ImageChannelsd drops alpha
    expected = expected.reshape(HEIGHT, WIDTH, -1).transpose(2, 1, 0)  # (C, x, y), as MONAI's PIL and ITK readers
    assert out["image"].shape == expected.shape
    np.testing.assert_array_equal(out["image"].numpy(), expected.astype(np.float32))
    np.testing.assert_array_equal(out["label"].numpy()[0], _scr_mask().T.astype(np.float32))
    assert out["image"].meta["filename_or_obj"] == image


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_png_reads_as_monai_pil_reader(mode: str, tmp_path: Path) -> None:
    """PNG files read as before (MONAI's PILReader): same array, same spatial axes."""
    if mode == "I;16":
        array = RNG.integers(0, 65536, (HEIGHT, WIDTH), dtype=np.uint16)
    else:
        array = RNG.integers(0, 256, (HEIGHT, WIDTH, len(mode)), dtype=np.uint8).squeeze()
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    ours = LoadImage(reader=ImageFileReader(), ensure_channel_first=True)(str(path))
    theirs = LoadImage(reader=PILReader(), ensure_channel_first=True)(str(path))
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)
    assert list(ours.meta["spatial_shape"]) == [WIDTH, HEIGHT]


def test_other_formats_go_to_monai_readers(tmp_path: Path) -> None:
    volume = RNG.uniform(0, 1, (6, 5, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "v.nii.gz"))
    np.save(tmp_path / "a.npy", volume)
    for name in ("v.nii.gz", "a.npy"):
        loaded = LoadImage(reader=ImageFileReader())(str(tmp_path / name))
        np.testing.assert_allclose(loaded.numpy(), volume)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_file_is_refused_with_its_name(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"cut{suffix}"
    array = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if suffix == ".tif":
        tifffile.imwrite(path, array, photometric="rgb")
    else:
        Image.fromarray(array).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"cut\{suffix}"):
        LoadImage(reader=ImageFileReader())(str(path))


def _lzw_tiff_tagged_grey(path: Path, array: np.ndarray) -> str:
    """An LZW-compressed RGB TIFF whose photometric tag says grey (tifffile decodes LZW only with imagecodecs)."""
    Image.fromarray(array).save(path, compression="tiff_lzw")
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["PhotometricInterpretation"].overwrite(1)  # MINISBLACK
    return str(path)


def test_tiff_that_decodes_against_its_header_is_refused(tmp_path: Path) -> None:
    """ITK reads this file as one grey plane (MONAI's default): refused, naming the file, unless it can be decoded."""
    rgb = RNG.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = _lzw_tiff_tagged_grey(tmp_path / "frame.tif", rgb)
    if HAS_IMAGECODECS:
        loaded = LoadImage(reader=ImageFileReader(), ensure_channel_first=True)(path)
        np.testing.assert_array_equal(loaded.numpy(), rgb.transpose(2, 1, 0).astype(np.float32))
        return
    with pytest.raises(
        ValueError, match=r"frame\.tif.*header declares \(shape \(28, 20, 3\).*ITKReader: shape \(28, 20\)"
    ):
        LoadImage(reader=ImageFileReader())(path)


def test_tiff_fallback_takes_the_decoder_that_matches_the_header(tmp_path: Path) -> None:
    """An LZW RGBA TIFF without imagecodecs: ITK and PIL are tried, the array with the header's shape is kept."""
    rgba = RNG.integers(0, 256, (HEIGHT, WIDTH, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    loaded = LoadImage(reader=ImageFileReader(), ensure_channel_first=True)(str(tmp_path / "lzw.tif"))
    np.testing.assert_array_equal(loaded.numpy(), rgba.transpose(2, 1, 0).astype(np.float32))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="gone.png"):
        LoadImage(reader=ImageFileReader())(str(tmp_path / "gone.png"))
