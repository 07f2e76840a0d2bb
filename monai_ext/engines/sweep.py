"""One engine for a sweep over levels of a perturbation of the inputs: attack budgets (the robustness curve of the
NLCEN paper) or noise levels (the noise study of the ProtoSeg paper), with any MONAI evaluator and its metrics."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.inferers import Inferer
from torch import nn

from monai_ext.attacks import describe_inferer, with_inferer
from monai_ext.engines.utils import AdversarialPrepareBatch, data_digest, network_digest
from monai_ext.utils.checks import check_non_negative
from monai_ext.utils.distributed import get_rank, rank_zero_call
from monai_ext.utils.files import json_safe, write_json
from monai_ext.utils.resume import resume_results

__all__ = ["LevelSweep", "UniformNoise", "describe_callable", "engine_metrics"]

logger = logging.getLogger(__name__)


def engine_metrics(engine: Engine) -> dict[str, Any]:
    """The metrics of an engine's last run as plain Python values (tensors as floats or lists)."""
    return {
        k: torch.as_tensor(v).tolist() if isinstance(v, torch.Tensor) else v for k, v in engine.state.metrics.items()
    }


class UniformNoise:
    """
    Add noise drawn uniformly from ``[-level, level]`` to every pixel/voxel and channel of a batch of images, with
    no clipping (the images' unit is the network's input unit, [0, 1] in the bundles). A perturbation with the
    attack signature ``(network, images, labels) -> images``, so that
    :py:class:`~monai_ext.engines.utils.AdversarialPrepareBatch` applies it in an engine. The noise is drawn on the
    CPU from a generator seeded once, so a run is reproducible on any device.

    Args:
        level: the largest absolute noise value, ``>= 0``.
        seed: the generator's seed.
    """

    def __init__(self, level: float, seed: int = 0) -> None:
        self.level = check_non_negative("level", level)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.rand(images.shape, generator=self.generator, dtype=torch.float32)
        return images + ((2.0 * noise - 1.0) * self.level).to(device=images.device, dtype=images.dtype)


class LevelSweep:
    """
    Run an evaluator once per level of a perturbation of its input batches and collect its results per level: the
    evaluator's ``prepare_batch`` becomes an :py:class:`~monai_ext.engines.utils.AdversarialPrepareBatch` of
    ``perturbation(level)`` over its own (level 0: its own, the clean evaluation), then is restored. The perturbation
    sees the evaluator's network through the evaluator's inferer (:py:func:`~monai_ext.attacks.with_inferer`, one
    :py:class:`~monai_ext.attacks.InfererNetwork` per run): an attack differentiates through the bundle's sliding
    window as the evaluator predicts through it.

    With a ``results_file``, the finished levels are written there (atomically) after each level, with the sweep's
    settings: the perturbation factory and its arguments, the summary, the inferer (when it is not plain), and digests
    of the weights the network is evaluated with (after the evaluator's ``CheckpointLoader`` handlers loaded them:
    :py:func:`~monai_ext.engines.utils.network_digest`) and of the evaluator's data. A rerun with the same settings
    takes the levels it finds there and computes only the missing ones (so a killed sweep resumes where it stopped, and
    a longer list of levels extends a finished one); a file of a sweep with other settings (other weights, say) is
    refused in one line naming the file and the settings that differ (both digests), unless ``overwrite``
    (:py:func:`~monai_ext.utils.resume.resume_results`). Under a process group of several ranks (``torchrun``), rank 0
    reads the file and hands what it found to every rank, and rank 0 alone writes it: the summary must then gather the
    ranks' results (:py:func:`~monai_ext.engines.robustness.robustness_summary` does).

    Example (bundle config, the noise study of the ProtoSeg bundle)::

        "noise_sweep": {
            "_target_": "monai_ext.engines.LevelSweep",
            "evaluator": "@noise_evaluator",
            "perturbation": {"_target_": "monai_ext.engines.UniformNoise", "_mode_": "callable"},
            "levels": "$[0.0, *@noise_levels]",
            "results_file": "$@interpret_dir + '/noise_levels.json'"
        }

    Args:
        evaluator: a MONAI evaluator (``SupervisedEvaluator``) with its metrics and handlers.
        perturbation: a factory ``level -> callable(network, images, labels) -> images`` (an attack class or a
            ``functools.partial`` of one, :py:class:`UniformNoise`). Its results at a level must not depend on the
            levels run before (seed random perturbations per level, as :py:class:`UniformNoise` does).
        levels: the levels, each ``>= 0``.
        summary: ``evaluator -> dict`` of a level's results; :func:`engine_metrics` by default.
        level_name: the key of the level in the results (``"epsilon"``, ``"level"``).
        results_file: a JSON file that keeps the finished levels (``None``: nothing is written).
        header: more fields written at the top of ``results_file`` (a label, the number of images).
        overwrite: start afresh when ``results_file`` holds a sweep with other settings, instead of refusing.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        perturbation: Callable[[float], Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]],
        levels: Sequence[float],
        summary: Callable[[Engine], dict[str, Any]] = engine_metrics,
        level_name: str = "level",
        results_file: str | PathLike | None = None,
        header: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.levels = self.check_levels(levels, level_name)
        self.evaluator, self.perturbation, self.summary, self.level_name = evaluator, perturbation, summary, level_name
        self.results_file = None if results_file is None else Path(results_file)
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
        self.header, self.overwrite = dict(header or {}), overwrite
        self._index = 0
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._log_progress)

    @staticmethod
    def check_levels(levels: Sequence[float], level_name: str = "level") -> list[float]:
        """The levels as floats, each ``>= 0``, at least one."""
        checked = [check_non_negative(level_name, v) for v in levels]
        if not checked:
            raise ValueError(f"{level_name}s must list at least one level.")
        return checked

    def _log_progress(self, engine: Engine) -> None:
        level, num = self.levels[self._index], len(self.levels)
        args = (self.level_name, level, self._index + 1, num, engine.state.iteration, engine.state.epoch_length)
        logger.info("%s %g (%d/%d): batch %d/%d", *args)

    def settings(self) -> dict[str, Any]:
        """What the results at a level depend on besides the level: the perturbation factory with its arguments, the
        summary, the evaluator's inferer (:py:func:`~monai_ext.attacks.describe_inferer`, when it is not plain: a
        file of the plain network call stays valid) and digests of the network's weights, after the evaluator's
        checkpoints are loaded (:py:func:`~monai_ext.engines.utils.network_digest`: this loads them), and of the
        evaluator's data (its datalist and first item)."""
        settings = {
            "level_name": self.level_name,
            "perturbation": describe_callable(self.perturbation),
            "summary": describe_callable(self.summary),
            "network": network_digest(self.evaluator),
            "data": data_digest(self.evaluator.data_loader.dataset),
        }
        inferer = describe_inferer(getattr(self.evaluator, "inferer", None))
        return settings if inferer is None else {**settings, "inferer": inferer}

    def _finished(self, settings: dict[str, Any]) -> dict[float, dict[str, Any]]:
        """The results per level that ``results_file`` holds for ``settings`` (none without a file): read on rank 0
        and handed to every rank of a process group, so that all of them take the same levels (or all refuse)."""
        document = rank_zero_call(
            resume_results, self.results_file, settings, self.overwrite, what="the results of a sweep"
        )
        return {float(r[self.level_name]): r for r in (document or {}).get("results", [])}

    def _write(self, settings: dict[str, Any], results: list[dict[str, Any]]) -> None:
        """Write the results so far to ``results_file`` (rank 0 alone, under a process group)."""
        if self.results_file is not None and get_rank() == 0:
            complete = len(results) == len(self.levels)
            document = {**self.header, "settings": settings, "complete": complete, "results": results}
            write_json(self.results_file, document)

    def run(self) -> list[dict[str, Any]]:
        """
        Returns:
            one ``{level_name: level, **summary(evaluator), "seconds": run time}`` per level, in order (with a
            ``results_file``, as strict JSON values: ``None`` for non-finite floats); for a worst-case ensemble
            (a perturbation with ``win_counts()``), also ``"wins"``: the images each of its attacks won.
        """
        evaluator, clean = self.evaluator, self.evaluator.prepare_batch
        settings = self.settings() if self.results_file is not None else {}
        finished = self._finished(settings)
        network = with_inferer(evaluator.network, getattr(evaluator, "inferer", None))
        results = []
        try:
            for index, level in enumerate(self.levels):
                self._index = index
                if level in finished:
                    results.append(finished[level])
                    logger.info("%s %g: taken from %s", self.level_name, level, self.results_file)
                    continue
                perturbation = self.perturbation(level) if level > 0 else None
                if perturbation is not None:
                    evaluator.prepare_batch = AdversarialPrepareBatch(perturbation, network, prepare_batch=clean)
                wins_before = _win_counts(perturbation)
                start = time.perf_counter()
                evaluator.run()
                seconds = round(time.perf_counter() - start, 2)
                result = {self.level_name: level, **self.summary(evaluator), "seconds": seconds}
                if wins_before is not None:  # a worst-case ensemble: how many images each of its attacks won
                    result["wins"] = {k: n - wins_before[k] for k, n in _win_counts(perturbation).items()}
                results.append(json_safe(result) if self.results_file is not None else result)
                evaluator.prepare_batch = clean
                logger.info("%s %g done in %.1f s%s", self.level_name, level, seconds, _brief(result))
                self._write(settings, results + [finished[v] for v in self.levels[index + 1 :] if v in finished])
        finally:
            evaluator.prepare_batch = clean
        self._write(settings, results)
        return results


def _win_counts(perturbation: Any) -> dict[str, int] | None:
    """The images won so far by each attack of a worst-case ensemble (its ``win_counts()``), else ``None``."""
    counts = getattr(perturbation, "win_counts", None)
    return dict(counts()) if callable(counts) else None


def describe_callable(function: Any) -> Any:
    """A JSON-able description of a callable: its qualified name, and a ``functools.partial``'s arguments; a wrapper
    that gives the results of the callable it wraps (``__wrapped__``, as ``functools.wraps`` sets it) is described as
    that callable."""
    function = inspect.unwrap(function)
    if isinstance(function, functools.partial):
        args = [_plain(a) for a in function.args]
        kwargs = {k: _plain(v) for k, v in function.keywords.items()}
        return {"callable": describe_callable(function.func), "args": args, "kwargs": kwargs}
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{getattr(function, '__module__', None) or type(function).__module__}.{name}"


def _plain(value: Any) -> Any:
    """``value`` as a JSON value, else an inferer's or a callable's description, else its ``repr`` (without a memory
    address)."""
    try:
        return json_safe(value)
    except TypeError:
        if isinstance(value, Inferer):
            return describe_inferer(value)
        if callable(value):
            return describe_callable(value)
        text = repr(value)
        return f"{type(value).__module__}.{type(value).__qualname__}" if " at 0x" in text else text


def _brief(result: dict[str, Any]) -> str:
    """The float metrics of a level's results, as ``": mean_dice 0.9012, ..."`` (or nothing)."""
    values = list(result.items())[1:-1]  # without the level and the seconds
    return "".join(f"{', ' if i else ': '}{k} {v:.4f}" for i, (k, v) in enumerate(values) if isinstance(v, float))
