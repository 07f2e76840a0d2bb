"""Utilities of ``monai_ext`` that every other package may import (and that import no other ``monai_ext`` package)."""

from .bundle import load_weights, log_summary, mask_cleanup
from .checks import (
    check_callable,
    check_choice,
    check_class_indices,
    check_fraction,
    check_image_batch,
    check_input_shape,
    check_interval,
    check_label_shape,
    check_non_negative,
    check_non_negative_int,
    check_number,
    check_positive,
    check_positive_int,
    check_spatial_dims,
    source_name,
)

__all__ = [
    "check_callable",
    "check_choice",
    "check_class_indices",
    "check_fraction",
    "check_image_batch",
    "check_input_shape",
    "check_interval",
    "check_label_shape",
    "check_non_negative",
    "check_non_negative_int",
    "check_number",
    "check_positive",
    "check_positive_int",
    "check_spatial_dims",
    "load_weights",
    "log_summary",
    "mask_cleanup",
    "source_name",
]
