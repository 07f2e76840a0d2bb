"""
Argument checks shared by the attacks, networks, metrics, handlers, transforms and data helpers of ``monai_ext``.

- Values (call them once, in ``__init__``): :py:func:`check_number` and its shorthands :py:func:`check_positive`,
  :py:func:`check_non_negative`, :py:func:`check_fraction`; :py:func:`check_positive_int`,
  :py:func:`check_non_negative_int`; :py:func:`check_bool`, :py:func:`check_choice`, :py:func:`check_spatial_dims`,
  :py:func:`check_interval`, :py:func:`check_spatial_size`, :py:func:`check_num_classes`,
  :py:func:`check_callable`. Each takes the argument's name and value, returns the value
  in a normal form (a ``float``, an ``int``, a lower case string, a pair of floats) and raises a ``ValueError`` whose
  message names the argument and the value at fault. A bool is refused wherever a number is expected (``True`` is
  not the integer ``1`` here), and so are NaN and inf.
- Tensors at the door of an attack, a metric or a network: :py:func:`check_image_batch`,
  :py:func:`check_label_shape`, :py:func:`check_class_indices`, :py:func:`check_input_shape`, :py:func:`check_spatial_divisible`
  (``ValueError``, or ``TypeError`` when no tensor is given); the last two compile in TorchScript, for ``forward``.
- :py:func:`source_name`: the file an image came from, for error messages.

This module imports no other ``monai_ext`` package, so that every package may import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import ImageMetaKey

__all__ = [
    "check_bool",
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
    "check_num_classes",
    "check_number",
    "check_positive",
    "check_positive_int",
    "check_spatial_dims",
    "check_spatial_divisible",
    "check_spatial_size",
    "source_name",
]


def _as_real(name: str, value: Any) -> float:
    """``value`` as a finite ``float``: a Python, NumPy or 0-d tensor real number, not a bool or a string."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}.")
    return number


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """
    Check a finite real number, optionally within bounds.

    Args:
        name: the argument's name, for the error message.
        value: a Python, NumPy or 0-d tensor real number; a bool or a string is refused.
        low: the smallest value allowed, or ``None`` for no lower bound.
        high: the largest value allowed, or ``None`` for no upper bound.
        low_open: ``low`` itself is not allowed (``value > low``).
        high_open: ``high`` itself is not allowed (``value < high``).

    Returns:
        ``value`` as a ``float``.

    Raises:
        ValueError: when ``value`` is not a real number, is NaN or inf, or lies outside the bounds.
    """
    number = _as_real(name, value)
    if low is not None and (number < low or (low_open and number == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {number}.")
    if high is not None and (number > high or (high_open and number == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {number}.")
    return number


def check_non_negative(name: str, value: Any) -> float:
    """A finite real number ``>= 0``, as a ``float`` (see :py:func:`check_number`)."""
    return check_number(name, value, low=0.0)


def check_positive(name: str, value: Any) -> float:
    """A finite real number ``> 0``, as a ``float`` (see :py:func:`check_number`)."""
    return check_number(name, value, low=0.0, low_open=True)


def check_fraction(name: str, value: Any, allow_zero: bool = True, allow_one: bool = True) -> float:
    """A finite real number in ``[0, 1]`` (``(0, 1]`` without ``allow_zero``, ``[0, 1)`` without ``allow_one``)."""
    number = _as_real(name, value)
    if number < 0 or number > 1 or (number == 0 and not allow_zero) or (number == 1 and not allow_one):
        interval = f"{'[' if allow_zero else '('}0, 1{']' if allow_one else ')'}"
        raise ValueError(f"{name} must be a fraction in {interval}, got {number}.")
    return number


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    ):
        # a whole-number float (``8.0`` from a config) is accepted; a bool, a fraction, NaN or inf is not
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    """
    Check a whole number ``>= 1`` (``8`` or ``8.0``; not ``True``, ``2.5`` or ``0``).

    Returns:
        ``value`` as an ``int``, or ``None`` when ``value`` is ``None`` and ``allow_none``.

    Raises:
        ValueError: when ``value`` is a bool, not a whole number, or smaller than 1.
    """
    if value is None and allow_none:
        return None
    return _as_int(name, value, 1)


def check_non_negative_int(name: str, value: Any) -> int:
    """A whole number ``>= 0`` as an ``int`` (``0``, ``10`` or ``10.0``; not ``False`` or ``-1``)."""
    return _as_int(name, value, 0)


def check_bool(name: str, value: Any) -> bool:
    """
    A switch as a ``bool``: ``True`` or ``False`` (NumPy's too), or the strings ``"true"`` / ``"false"`` in any case, as
    a command line passes them (``--random_start false``). Anything else, ``"no"``, ``0`` or ``None``, is refused
    rather than read by its truth value (``bool("false")`` is ``True``).

    Raises:
        ValueError: ``<name> must be true or false, got <value>``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """
    Check that ``value`` is one of ``choices`` (lower case strings), ignoring case.

    Returns:
        ``value`` in lower case.

    Raises:
        ValueError: ``unknown <name> <value>, must be one of ...``.
    """
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"unknown {name} {value!r}, must be one of {', '.join(map(repr, choices))}.")
    return value.lower()


def check_callable(name: str, value: Any, description: str = "a callable") -> Any:
    """
    Check that ``value`` is callable (a function, a module, an attack).

    Args:
        name: the argument's name.
        value: the value to check.
        description: what it must be, for the message: ``"a callable (network, images, labels) -> images"``.

    Returns:
        ``value``.
    """
    if value is None or not callable(value):
        raise ValueError(f"{name} must be {description}, got {value!r}.")
    return value


def check_spatial_dims(spatial_dims: Any, allowed: Sequence[int] = (1, 2, 3)) -> int:
    """
    Check the number of spatial dimensions of a network or block: one of ``allowed`` (a bool is refused).

    Returns:
        ``spatial_dims`` as an ``int``.
    """
    if isinstance(spatial_dims, bool) or spatial_dims not in allowed:
        options = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}" if len(allowed) > 1 else str(allowed[0])
        raise ValueError(f"spatial_dims must be {options}, got {spatial_dims!r}.")
    return int(spatial_dims)


def check_num_classes(
    num_classes: int, label_groups: Sequence[Sequence[float]] | None = None, threshold: float | None = None
) -> int:
    """
    Check that ``num_classes`` (the network's output channels, background included) is at least 2 and matches the
    classes of a label mapping: ``len(label_groups)`` (class ``i`` <- the raw values ``label_groups[i]``, as
    ``monai_ext.transforms.normalize_label_values`` gives them), or 2 with a threshold.
    The error names the bundle options (``--num_classes``, ``--label_values``, ``--label_threshold``).

    Returns:
        ``num_classes`` as an ``int``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, float)) or num_classes != int(num_classes):
        raise ValueError(f"num_classes must be a whole number >= 2 (background included), got {num_classes!r}.")
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 (background and at least one class, as softmax and argmax need), got "
            f"{num_classes}: a binary task is --num_classes 2."
        )
    if threshold is not None and num_classes != 2:
        raise ValueError(
            f"num_classes={num_classes} does not match label_threshold={threshold:g}, which makes binary masks "
            "(2 classes): set --num_classes 2, or map raw values to classes with --label_values."
        )
    if label_groups is not None and len(label_groups) != num_classes:
        listed = ", ".join("[" + ", ".join(f"{float(v):g}" for v in group) + "]" for group in label_groups)
        raise ValueError(
            f"num_classes={num_classes} does not match label_values, which define {len(label_groups)} classes "
            f"({listed}): set --num_classes {len(label_groups)}, or give one "
            "raw value (or list of raw values) per class in --label_values."
        )
    return num_classes


def check_spatial_size(name: str, value: Any, spatial_dims: int | None = None) -> list[int] | int:
    """
    Check a size to resize to: one whole number ``>= 1`` per spatial axis (``[224, 224]``, with ``spatial_dims``
    axes when given), or one for every axis (``224``). MONAI's ``Resize`` reads a size ``<= 0`` as "keep this axis",
    so ``[0, 0]`` would silently mean no resizing at all: here it is an error naming the option.

    In a config: ``"spatial_size": "$monai_ext.utils.check_spatial_size('spatial_size', @spatial_size)"``.

    Returns:
        ``value`` as a list of ``int`` (an ``int`` for a single number).
    """

    def whole(v: Any) -> bool:
        number = v if isinstance(v, numbers.Real) and not isinstance(v, bool) else float("nan")
        return math.isfinite(number) and number == int(number) and number >= 1

    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = [value]
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0:
        values = list(value)
    else:
        values = []
    if not values or (spatial_dims is not None and len(values) not in (1, spatial_dims)):
        axes = f"{spatial_dims} " if spatial_dims is not None else ""
        raise ValueError(
            f"{name} must be a list of {axes}sizes, one per spatial axis (such as [224, 224]), got {value!r}."
        )
    if not all(whole(v) for v in values):
        raise ValueError(
            f"{name} must hold whole numbers >= 1 (the size to resize to, one per spatial axis), got {value!r}; "
            "a size <= 0 would silently keep the image's own size."
        )
    return int(values[0]) if not isinstance(value, Sequence) else [int(v) for v in values]


def check_interval(name: str, value: Any) -> tuple[float, float]:
    """
    Check a pair ``(low, high)`` of finite real numbers with ``low < high`` (a data range, an intensity range).

    Returns:
        ``(low, high)`` as floats.
    """
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers, got {value!r}.") from None
    try:
        low, high = _as_real(name, low), _as_real(name, high)
    except ValueError:
        raise ValueError(f"{name} must be a finite pair (min, max) of numbers, got {value!r}.") from None
    if high <= low:
        raise ValueError(f"{name} must be a pair (min, max) with min < max, got {value!r}.")
    return low, high


def source_name(img: Any, data: Mapping | None = None, key: str | None = None) -> str:
    """
    Name the file an image was loaded from, for error messages.

    Looks at ``img.meta["filename_or_obj"]`` (a ``MetaTensor`` from ``LoadImage``; for a batch, the list of the
    samples' files), then at the meta dictionary ``data[f"{key}_meta_dict"]`` (``LoadImaged(..., image_only=False)``
    with plain arrays).

    Args:
        img: the image or mask, a MetaTensor, tensor or array.
        data: the dictionary holding ``img``, when called from a dictionary transform.
        key: the key of ``img`` in ``data``.

    Returns:
        ``"'<file>'"``, prefixed by the key when one is given, or a description of the key when no file name is
        known.
    """
    filename = None
    if isinstance(img, MetaTensor):
        filename = img.meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if filename is None and data is not None and key is not None:
        meta = data.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping):
            filename = meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    if filename is None:
        return f"{key!r} (no file name in its meta data)" if key is not None else "(no file name in its meta data)"
    return f"{key} '{filename}'" if key is not None else f"'{filename}'"


def _sample_names(images: torch.Tensor, indices: list[int]) -> str:
    """The file names of some samples of a batch, as ``" 'a.png', 'b.png'"``, or ``""`` when none is known."""
    names = images.meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(images, MetaTensor) else None
    if isinstance(names, (list, tuple)) and len(names) == images.shape[0]:
        return " " + ", ".join(f"'{names[i]}'" for i in indices)
    return f" {source_name(images)}" if names is not None else ""


def check_image_batch(images: Any, data_range: tuple[float, float]) -> None:
    """
    Check a batch of images ``(B, C, *spatial)``: a floating point tensor, finite, inside ``data_range``.

    The error names the samples at fault by batch index and, for a ``MetaTensor``, by file name.

    Raises:
        ValueError: when ``images`` is not a floating point tensor with a channel and a spatial axis, holds NaN or
            inf, or has values outside ``data_range`` (with a tolerance of ``1e-6`` of the range).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, *spatial), got {type(images).__name__}.")
    if images.ndim < 3:
        raise ValueError(f"images must have shape (B, C, *spatial), got shape {tuple(images.shape)}.")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, got dtype {images.dtype}.")
    if images.numel() == 0:
        return
    low, high = data_range
    flat = images.detach().flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images{_sample_names(images, bad)} contain NaN or inf values (batch index {bad}).")
    tol = 1e-6 * (high - low)
    outside = (flat.amin(dim=1) < low - tol) | (flat.amax(dim=1) > high + tol)
    if outside.any():
        bad = torch.nonzero(outside).flatten().tolist()
        raise ValueError(
            f"images{_sample_names(images, bad)} (batch index {bad}) have values in "
            f"[{flat.min().item():g}, {flat.max().item():g}], outside data_range ({low:g}, {high:g}): scale or clip "
            "the images, or give their data_range."
        )


def check_label_shape(labels: Any, images: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """
    Check that ``labels`` are class indices of the batch and spatial shape of ``images`` ``(B, C, *spatial)``.

    Returns:
        ``labels`` as ``(B, 1, *spatial)``, from ``(B, 1, *spatial)`` or ``(B, *spatial)``.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}.")
    batch, spatial = images.shape[0], tuple(images.shape[2:])
    if labels.ndim == images.ndim - 1 and labels.shape[0] == batch and tuple(labels.shape[1:]) == spatial:
        return labels.unsqueeze(1)
    if labels.ndim == images.ndim and labels.shape[0] == batch and labels.shape[1] == 1 and labels.shape[2:] == spatial:
        return labels
    raise ValueError(
        f"{name} of shape {tuple(labels.shape)} do not match images of shape {tuple(images.shape)}: expected class "
        f"indices of shape {(batch, 1, *spatial)} or {(batch, *spatial)}."
    )


def check_class_indices(labels: torch.Tensor, num_classes: int, name: str = "labels") -> None:
    """
    Check that ``labels`` hold class indices in ``[0, num_classes - 1]``: whole numbers (any dtype), no NaN or inf.
    """
    if labels.is_floating_point():
        if not torch.isfinite(labels).all():
            raise ValueError(f"{name} contain NaN or inf values.")
        if not torch.equal(labels, labels.round()):
            raise ValueError(f"{name} must hold class indices (whole numbers), got fractional values.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got values in [{labels.min().item()}, {labels.max().item()}]."
        )


def _shape_str(x: torch.Tensor) -> str:
    """``x``'s shape written as a tuple, ``(2, 1, 64, 64)`` (TorchScript compiles it, unlike ``tuple(x.shape)``)."""
    sizes = [str(s) for s in x.shape]
    return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"


def check_input_shape(x: torch.Tensor, spatial_dims: int, in_channels: int, name: str = "input") -> None:
    """
    Check the input of a network or block: ``(B, in_channels, *spatial)`` with ``spatial_dims`` spatial axes.
    TorchScript compiles it, so a network's ``forward`` may call it and still be scripted.

    Raises:
        ValueError: naming the expected and the given shape.
    """
    if x.dim() != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{name} must have shape (B, in_channels={in_channels}, *spatial) with spatial_dims={spatial_dims} "
            f"spatial axes, got shape {_shape_str(x)}."
        )


def check_spatial_divisible(x: torch.Tensor, divisor: int, reason: str, name: str = "input") -> None:
    """
    Check that every spatial size of ``x`` (``(B, C, *spatial)``) is a multiple of ``divisor``, the input constraint
    of a network that halves its maps ``log2(divisor)`` times; ``reason`` says why, in the error. TorchScript compiles
    it, so a network's ``forward`` may call it and still be scripted.

    Raises:
        ValueError: naming the divisor, the reason and the given shape.
    """
    for size in x.shape[2:]:
        if size % divisor != 0:
            raise ValueError(
                f"every spatial size of {name} must be divisible by {divisor} ({reason}), got {name} shape "
                f"{_shape_str(x)}; resize or pad it."
            )
