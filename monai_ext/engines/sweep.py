"""One engine for a sweep over levels of a perturbation of the inputs: attack budgets (the robustness curve of the
NLCEN paper) or noise levels (the noise study of the ProtoSeg paper), with any MONAI evaluator and its metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from torch import nn

from monai_ext.engines.utils import AdversarialPrepareBatch
from monai_ext.utils.checks import check_non_negative

__all__ = ["LevelSweep", "UniformNoise", "engine_metrics"]

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
    ``perturbation(level)`` over its own (level 0: its own, the clean evaluation), then is restored.

    Example (bundle config, the noise study of the ProtoSeg bundle)::

        "noise_sweep": {
            "_target_": "monai_ext.engines.LevelSweep",
            "evaluator": "@noise_evaluator",
            "perturbation": {"_target_": "monai_ext.engines.UniformNoise", "_mode_": "callable"},
            "levels": "$[0.0, *@noise_levels]"
        }

    Args:
        evaluator: a MONAI evaluator (``SupervisedEvaluator``) with its metrics and handlers.
        perturbation: a factory ``level -> callable(network, images, labels) -> images`` (an attack class or a
            ``functools.partial`` of one, :py:class:`UniformNoise`).
        levels: the levels, each ``>= 0``.
        summary: ``evaluator -> dict`` of a level's results; :func:`engine_metrics` by default.
        level_name: the key of the level in the results (``"epsilon"``, ``"level"``).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        perturbation: Callable[[float], Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]],
        levels: Sequence[float],
        summary: Callable[[Engine], dict[str, Any]] = engine_metrics,
        level_name: str = "level",
    ) -> None:
        self.levels = [check_non_negative(level_name, v) for v in levels]
        if not self.levels:
            raise ValueError(f"{level_name}s must list at least one level.")
        self.evaluator, self.perturbation, self.summary, self.level_name = evaluator, perturbation, summary, level_name
        self._index = 0
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self._log_progress)

    def _log_progress(self, engine: Engine) -> None:
        level, num = self.levels[self._index], len(self.levels)
        args = (self.level_name, level, self._index + 1, num, engine.state.iteration, engine.state.epoch_length)
        logger.info("%s %g (%d/%d): batch %d/%d", *args)

    def run(self) -> list[dict[str, Any]]:
        """
        Returns:
            one ``{level_name: level, **summary(evaluator), "seconds": run time}`` per level, in order.
        """
        evaluator, clean = self.evaluator, self.evaluator.prepare_batch
        results = []
        try:
            for index, level in enumerate(self.levels):
                self._index = index
                if level > 0:
                    evaluator.prepare_batch = AdversarialPrepareBatch(
                        self.perturbation(level), evaluator.network, prepare_batch=clean
                    )
                start = time.perf_counter()
                evaluator.run()
                seconds = round(time.perf_counter() - start, 2)
                results.append({self.level_name: level, **self.summary(evaluator), "seconds": seconds})
                evaluator.prepare_batch = clean
                logger.info("%s %g done in %.1f s%s", self.level_name, level, seconds, _brief(results[-1]))
        finally:
            evaluator.prepare_batch = clean
        return results


def _brief(result: dict[str, Any]) -> str:
    """The float metrics of a level's results, as ``": mean_dice 0.9012, ..."`` (or nothing)."""
    values = list(result.items())[1:-1]  # without the level and the seconds
    return "".join(f"{', ' if i else ': '}{k} {v:.4f}" for i, (k, v) in enumerate(values) if isinstance(v, float))
