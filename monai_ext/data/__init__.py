"""Data of ``monai_ext``: datalists from a dataset folder and the synthetic default dataset."""

from monai_ext.data.datalist import (
    DATALIST_FILENAME,
    IMAGE_SUFFIXES,
    SPLITS,
    file_stem,
    list_image_files,
    load_datalist,
    resolve_dataset_dir,
    split_stems,
)
from monai_ext.data.synthetic import SYNTHETIC_LABELS, make_synthetic_dataset, synthetic_phantom

__all__ = [
    "DATALIST_FILENAME",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "SYNTHETIC_LABELS",
    "file_stem",
    "list_image_files",
    "load_datalist",
    "make_synthetic_dataset",
    "resolve_dataset_dir",
    "split_stems",
    "synthetic_phantom",
]
