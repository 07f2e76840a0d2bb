"""
``ImageFileReader``: a MONAI ``ImageReader`` that reads image files as what they are, or refuses them naming the file.

MONAI's default readers go wrong quietly on some files: a TIFF whose frames hold three samples per pixel under a
"grey" photometric tag is read by ITK as one grey plane of scrambled pixels, a 16-bit RGB TIFF is cut to 8 bits by
PIL, and a truncated PNG or JPEG fails with "image file is truncated" and no file name. This reader decodes

- TIFF with ``tifffile``: the samples per pixel decide the channels, whatever the photometric tag says; a TIFF whose
  compression ``tifffile`` cannot decode (LZW or JPEG without the ``imagecodecs`` package) goes to ITK, then PIL, and
  is taken only when their array has the shape and dtype of the file's header;
- PNG, JPEG, BMP, GIF and WebP with PIL (as MONAI's ``PILReader``), decoded in full and checked against the header
  (CMYK is converted to RGB);
- every other format (NIfTI, NRRD, MHA, NumPy, DICOM) with the MONAI reader ``LoadImage`` picks for its suffix.

Arrays come out as MONAI's PIL and ITK readers give them: spatial axes reversed (x, y[, z]), channels last, with
``spatial_shape`` and ``original_channel_dim`` in the meta data for ``EnsureChannelFirst``. A file that cannot be
decoded, or whose decoded array disagrees with its header, raises a ``ValueError`` that names the file.

In a bundle config::

    {"_target_": "LoadImaged", "keys": ["image", "label"], "image_only": true, "reader": "monai_ext.data.ImageFileReader"}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.data import ITKReader, PILReader
from monai.data.image_reader import ImageReader
from monai.transforms.io.array import SUPPORTED_READERS, get_default_reader_registration_order
from monai.utils import MetaKeys, OptionalImportError, ensure_tuple

__all__ = ["PIL_SUFFIXES", "TIFF_SUFFIXES", "ImageFileReader"]

#: suffixes decoded with tifffile (lower case)
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
#: suffixes decoded with PIL (lower case)
PIL_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: tifffile axes that hold channels: samples of a pixel, ImageJ channels
_CHANNEL_AXES = ("S", "C")
#: PIL modes with more than one band that are not grey / grey + alpha / RGB / RGBA: converted to RGB
_CONVERT_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")


def _suffix(path: str) -> str:
    lower = path.lower()
    return next((s for s in TIFF_SUFFIXES + PIL_SUFFIXES if lower.endswith(s)), "")


def _meta(fmt: str, mode: str, spatial_shape: Sequence[int], has_channels: bool) -> dict[str, Any]:
    """The meta data of a raster image; ``spatial_shape`` in the array's (reversed) axis order."""
    return {
        "format": fmt,
        "mode": mode,
        "width": int(spatial_shape[0]),
        "height": int(spatial_shape[1]) if len(spatial_shape) > 1 else 1,
        MetaKeys.SPATIAL_SHAPE: np.asarray(spatial_shape),
        MetaKeys.ORIGINAL_CHANNEL_DIM: -1 if has_channels else float("nan"),
    }


@dataclass(frozen=True)
class _RasterFile:
    """A PNG / JPEG / TIFF file to decode in ``get_data`` (``read`` stays lazy, see ``ImageFileReader.read``)."""

    path: str


@dataclass(frozen=True)
class _Delegated:
    """A file read by one of MONAI's readers."""

    reader: ImageReader
    image: Any


class ImageFileReader(ImageReader):
    """
    Read image files as what they are (see the module docstring): TIFF with ``tifffile`` (samples per pixel decide the
    channels), PNG / JPEG / BMP / GIF / WebP with PIL decoded in full, other formats with MONAI's reader for their
    suffix. A file that cannot be decoded, or whose decoded array disagrees with its header (size, channels, bit
    depth), raises a ``ValueError`` naming the file.

    Pass it to ``LoadImage`` / ``LoadImaged`` as ``reader=ImageFileReader()`` or, in a config,
    ``"reader": "monai_ext.data.ImageFileReader"``.

    Args:
        reverse_indexing: give arrays as (x, y[, z][, channels]), as MONAI's PIL and ITK readers do (default); with
            ``False``, (y, x[, channels]) as the files store them.

    Example::

        >>> from monai.transforms import LoadImage
        >>> image = LoadImage(reader=ImageFileReader(), ensure_channel_first=True)("frame.tif")  # (3, W, H) for RGB
    """

    def __init__(self, reverse_indexing: bool = True) -> None:
        super().__init__()
        self.reverse_indexing = reverse_indexing
        self._defaults: list[ImageReader] | None = None

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Any file: raster formats are decoded here, the others by MONAI's reader for their suffix."""
        return True

    def _default_reader(self, filenames: Sequence[str]) -> ImageReader:
        """The reader MONAI's ``LoadImage`` picks for ``filenames`` when given no reader."""
        if self._defaults is None:
            self._defaults = []
            for name in get_default_reader_registration_order():
                try:
                    self._defaults.append(SUPPORTED_READERS[name]())
                except OptionalImportError:
                    continue
        for reader in reversed(self._defaults):
            if reader.verify_suffix(filenames):
                return reader
        raise ValueError(f"No reader for {', '.join(map(repr, filenames))}: unknown image format.")

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """
        Find the files; decoding waits for :py:meth:`get_data`, so that a file that fails to decode raises its own
        error instead of being handed to another reader by ``LoadImage`` (which tries the next reader when ``read``
        fails, and one of them may decode the file wrongly).
        """
        filenames = [os.fspath(f) for f in ensure_tuple(data)]
        if not all(_suffix(f) for f in filenames):
            reader = self._default_reader(filenames)
            return _Delegated(reader, reader.read(filenames if len(filenames) > 1 else filenames[0], **kwargs))
        missing = [f for f in filenames if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"Image file {missing[0]!r} does not exist.")
        files = [_RasterFile(f) for f in filenames]
        return files if len(files) > 1 else files[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Decode what :py:meth:`read` found: ``(array, meta)``, several files stacked as MONAI's readers do."""
        if isinstance(img, _Delegated):
            return img.reader.get_data(img.image)
        decoded = [self._decode(f.path) for f in ensure_tuple(img)]
        array, meta = decoded[0]
        if len(decoded) > 1:
            shapes = {a.shape for a, _ in decoded}
            if len(shapes) > 1:
                names = ", ".join(f"'{f.path}' {a.shape}" for f, (a, _) in zip(ensure_tuple(img), decoded))
                raise ValueError(f"Image files loaded together must have one shape, got {names}.")
            if np.isnan(meta[MetaKeys.ORIGINAL_CHANNEL_DIM]):
                array, meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = np.stack([a for a, _ in decoded]), 0
            else:
                array = np.concatenate([a for a, _ in decoded], axis=-1)
        return array, meta

    def _decode(self, path: str) -> tuple[np.ndarray, dict]:
        try:
            if _suffix(path) in TIFF_SUFFIXES:
                return self._decode_tiff(path)
            return self._decode_pil(path)
        except ValueError as e:
            if path in str(e):
                raise
            raise ValueError(f"Cannot read image file '{path}': {e}") from e
        except Exception as e:  # PIL and tifffile raise OSError, SyntaxError, struct.error, zlib.error, KeyError, ...
            raise ValueError(f"Cannot read image file '{path}': {type(e).__name__}: {e}") from e

    def _orient(self, array: np.ndarray, has_channels: bool) -> np.ndarray:
        """(y, x[, c]) or (z, y, x[, c]) as stored -> (x, y[, c]) or (x, y, z[, c]) with ``reverse_indexing``."""
        if not self.reverse_indexing:
            return array
        spatial = array.ndim - int(has_channels)
        order = list(reversed(range(spatial))) + ([spatial] if has_channels else [])
        return np.ascontiguousarray(array.transpose(order))

    def _decode_pil(self, path: str) -> tuple[np.ndarray, dict]:
        from PIL import Image

        with Image.open(path) as opened:
            fmt, width, height = opened.format, opened.width, opened.height
            opened.load()  # decodes every byte: a truncated file raises here
            image = opened.convert("RGB") if opened.mode in _CONVERT_TO_RGB else opened
            mode, bands = image.mode, len(image.getbands())
            array = np.asarray(image)
        expected = (height, width) + ((bands,) if bands > 1 else ())
        if array.shape != expected:
            raise ValueError(
                f"Image file '{path}' decodes to shape {array.shape} but its {fmt} header declares {expected} "
                f"(height, width[, channels], mode {mode})."
            )
        return self._orient(array, bands > 1), _meta(fmt or "", mode, (width, height), bands > 1)

    def _decode_tiff(self, path: str) -> tuple[np.ndarray, dict]:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            page = series.pages[0] if series.pages else tif.pages[0]
            axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            photometric = getattr(page.photometric, "name", str(page.photometric))
            channel_axes = [i for i, a in enumerate(axes) if a in _CHANNEL_AXES and shape[i] > 1]
            if len(channel_axes) > 1:
                raise ValueError(f"TIFF file '{path}' has two channel axes ({axes}, shape {shape}).")
            if photometric in ("SEPARATED", "CIELAB", "ICCLAB", "ITULAB") and channel_axes:
                raise ValueError(
                    f"TIFF file '{path}' stores colour as {photometric}; convert it to RGB (or grey) first."
                )
            try:
                array, source = series.asarray(), "tifffile"
            except (KeyError, ValueError, ImportError) as e:
                if "imagecodecs" not in str(e):
                    raise
                array, source = None, f"tifffile ({e})"
        # header order (..., y, x) with the channel axis moved last
        has_channels = bool(channel_axes)
        expected = [n for i, n in enumerate(shape) if i not in channel_axes and n > 1 or axes[i] in "YX"]
        expected += [shape[channel_axes[0]]] if has_channels else []
        if array is not None:
            if array.shape != shape:
                raise ValueError(f"TIFF file '{path}' decodes to shape {array.shape} but its header declares {shape}.")
            if has_channels:
                array = np.moveaxis(array, channel_axes[0], -1)
            array = array.reshape(expected)
            array = self._orient(array, has_channels)
        else:
            array = self._fallback_tiff(path, tuple(expected), dtype, has_channels, source)
        spatial = expected[:-1] if has_channels else expected
        spatial = spatial[::-1] if self.reverse_indexing else spatial
        mode = f"{photometric} {shape[channel_axes[0]] if has_channels else 1} samples"
        return array, _meta("TIFF", mode, spatial, has_channels)

    def _fallback_tiff(
        self, path: str, expected: tuple[int, ...], dtype: np.dtype, has_channels: bool, why: str
    ) -> np.ndarray:
        """Decode a TIFF tifffile cannot with ITK, then PIL; take the first array with the header's shape and dtype."""
        oriented = list(expected)
        if self.reverse_indexing:
            spatial = oriented[:-1] if has_channels else oriented
            oriented = spatial[::-1] + oriented[len(spatial) :]
        found = []
        for reader in (ITKReader(), PILReader(reverse_indexing=self.reverse_indexing)):
            try:
                array = np.asarray(reader.get_data(reader.read(path))[0])
            except Exception as e:  # noqa: BLE001 (a reader that cannot decode it: try the next)
                found.append(f"{type(reader).__name__}: {type(e).__name__}")
                continue
            if tuple(array.shape) == tuple(oriented) and array.dtype == dtype:
                return array
            found.append(f"{type(reader).__name__}: shape {tuple(array.shape)} {array.dtype}")
        raise ValueError(
            f"TIFF file '{path}' could not be read as its header declares (shape {tuple(oriented)}, {dtype}): "
            f"{why}; {'; '.join(found)}. Install imagecodecs (pip install imagecodecs) or re-save the file."
        )
