"""
Data of ``monai_ext``: datalists from a dataset folder, an image reader, a cache dataset whose errors name the files,
the check of what the masks hold, the synthetic default dataset, and the writer of derived datasets.
"""

from monai_ext.data.adversarial import load_adversarial_datalist
from monai_ext.data.datalist import (
    DATALIST_FILENAME,
    IMAGE_SUFFIXES,
    SPLITS,
    file_stem,
    list_image_files,
    load_datalist,
    load_image_datalist,
    resolve_dataset_dir,
    split_stems,
)
from monai_ext.data.dataset import CacheDataset, item_files
from monai_ext.data.label_check import check_label_content
from monai_ext.data.readers import ImageFileReader
from monai_ext.data.synthetic import (
    SYNTHETIC_LABELS,
    SYNTHETIC_VOLUME_LABELS,
    SYNTHETIC_VOLUME_SPACING,
    make_synthetic_dataset,
    synthetic_phantom,
    synthetic_volume,
)
from monai_ext.data.writer import IMAGE_EXTENSIONS, DatasetWriter, nifti_bytes, write_image

__all__ = [
    "DATALIST_FILENAME",
    "IMAGE_EXTENSIONS",
    "IMAGE_SUFFIXES",
    "SPLITS",
    "SYNTHETIC_LABELS",
    "SYNTHETIC_VOLUME_LABELS",
    "SYNTHETIC_VOLUME_SPACING",
    "CacheDataset",
    "DatasetWriter",
    "ImageFileReader",
    "check_label_content",
    "file_stem",
    "item_files",
    "list_image_files",
    "load_adversarial_datalist",
    "load_datalist",
    "load_image_datalist",
    "make_synthetic_dataset",
    "nifti_bytes",
    "resolve_dataset_dir",
    "split_stems",
    "synthetic_phantom",
    "synthetic_volume",
    "write_image",
]
