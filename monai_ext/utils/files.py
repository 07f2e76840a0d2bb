"""
Result files that are whole or absent: every result a run writes (metrics, sweeps, tables, figures, checkpoints) goes
through :func:`atomic_open`, which writes a temporary file in the target's folder and renames it over the target
(``os.replace``), so a run killed while writing leaves the previous file or none, never a truncated one. JSON is
strict (:func:`write_json`): non-finite floats become ``null``, never ``NaN`` or ``Infinity``.

This module imports no other ``monai_ext`` package.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "file_sha256", "json_safe", "write_json", "write_text"]


@contextmanager
def atomic_open(path: str | PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """
    Open a temporary file next to ``path`` for writing; when the block ends without an error, flush it to disk and
    rename it to ``path`` (``os.replace``, atomic on one file system); on an error, remove it and leave ``path`` as it
    was. The folder is created.

    Example::

        with atomic_open(out / "rows.csv", newline="") as f:
            csv.writer(f).writerows(rows)
        with atomic_open(out / "curve.png", "wb") as f:
            figure.savefig(f, format="png")

    Args:
        path: the file to write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        kwargs: more arguments of ``open`` (``newline``, ``encoding``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # same folder: same file system
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as f:  # "x": a new file with the usual permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(value: Any) -> Any:
    """
    ``value`` with what strict JSON cannot hold mapped to what it can: non-finite floats to ``None``, tuples to lists,
    NumPy and torch scalars and arrays (anything with ``tolist``) to Python values, mapping keys to strings.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch values
        return json_safe(value.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} to JSON: {value!r}")


def write_json(path: str | PathLike, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` to ``path`` as strict JSON (:func:`json_safe`, ``allow_nan=False``), atomically. Returns ``path``."""
    text = json.dumps(json_safe(data), indent=indent, allow_nan=False)
    return write_text(path, text + "\n")


def write_text(path: str | PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically. Returns ``path``."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def file_sha256(path: str | PathLike) -> str:
    """The SHA-256 digest of a file's bytes, as hex: names the exact model a derived dataset was made with."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
