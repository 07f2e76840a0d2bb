"""
Resuming from a results file: one check, for every engine that writes its results as it goes (``LevelSweep``,
``AttackEvaluation``, ``DatasetWriter``), that a file was written with the settings of the run that would resume from
it, refused in one line otherwise.

This module imports no other ``monai_ext`` package but :py:mod:`monai_ext.utils.files`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

from .files import json_safe

__all__ = ["resume_results"]

logger = logging.getLogger(__name__)

#: a value that differs is shown (in the file and now) when its ``repr`` is at most this long: a digest, a number
_SHOWN = 48


def resume_results(
    path: str | PathLike | None,
    settings: Mapping[str, Any],
    overwrite: bool = False,
    key: str | None = "settings",
    what: str = "results",
) -> dict[str, Any] | None:
    """
    The document of the results file ``path`` when it was written with ``settings``: what a run resumes from.

    Example (how :py:class:`~monai_ext.engines.LevelSweep` resumes)::

        document = resume_results(results_file, settings, overwrite, what="the results of a sweep")
        finished = {r["level"]: r for r in (document or {}).get("results", [])}

    Args:
        path: the results file (JSON); ``None``: no file, nothing to resume.
        settings: what the results depend on (digests of the weights and the data, the attack's settings, ...), as
            JSON values.
        overwrite: with a file of other settings, start afresh (returns ``None``, logged as a warning) instead of
            refusing.
        key: the entry of the document that holds its settings; ``None``: the whole document is the settings.
        what: what the file holds, for the error (``"the results of a sweep"``).

    Returns:
        the document, when its settings equal ``settings`` (as JSON reads them back); ``None`` when there is no file,
        or with ``overwrite`` when it holds other settings.

    Raises:
        ValueError: the file is not a JSON object with ``key``; or it holds other settings and not ``overwrite``: one
            line that names the file, the settings that differ and, for each single value among them (a digest of
            the weights, a number), its value in the file and now.
    """
    if path is None or not Path(path).is_file():
        return None
    try:
        document = json.loads(Path(path).read_text())
        stored = document if key is None else document[key]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a file of {what} ({type(e).__name__}: {e}): move it away.") from e
    current = json_safe(settings)  # tuples as lists, non-finite floats as None: as the file reads back
    if stored == current:
        return document
    differ = _differences(stored, current)
    names = ", ".join(name for name, *_ in differ)
    shown = [f"{n}: {a!r} in the file, {b!r} now" for n, a, b in differ if max(len(repr(a)), len(repr(b))) <= _SHOWN]
    if not overwrite:
        raise ValueError(
            f"{path} holds {what} with other settings ({names} differ{'; ' if shown else ''}{'; '.join(shown)}): "
            "pass overwrite=True (on a bundle's command line: --overwrite True) to start afresh, or write elsewhere."
        )
    logger.warning("%s holds %s with other settings (%s differ): starting afresh.", path, what, names)
    return None


def _differences(before: Any, now: Any, prefix: str = "", depth: int = 2) -> list[tuple[str, Any, Any]]:
    """``(dotted name, value in the file, value now)`` of each entry that differs, at most ``depth`` mappings deep."""
    if depth and isinstance(before, Mapping) and isinstance(now, Mapping):
        keys = sorted({*before, *now}, key=str)
        return [
            d for k in keys if before.get(k) != now.get(k)
            for d in _differences(before.get(k), now.get(k), f"{prefix}{k}.", depth - 1)
        ]  # fmt: skip
    return [(prefix.rstrip("."), before, now)]
