"""Write per-class metric tables (the SAGAN segmentation paper's tables) from an evaluator's metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_ext.utils.files import write_json, write_text

__all__ = ["ClassMetricsSaver", "class_metrics_table"]


def _per_class(value: Any) -> list[float]:
    """A metric value (a per-class tensor, or a float for a single class) as a list of floats."""
    return [float(v) for v in torch.as_tensor(value, dtype=torch.float64).reshape(-1)]


def class_metrics_table(
    metrics: dict[str, Any], metric_names: Sequence[str], class_names: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """
    ``{metric: {class: value, ..., "mean": value}}`` from per-class metric values, such as the
    ``engine.state.metrics`` of MONAI's ``ConfusionMatrix`` / ``MeanIoUHandler`` with ``reduction="mean_batch"``.
    ``"mean"`` is the unweighted mean over the classes (NaN classes left out): the "overall" score of the paper.

    Args:
        metrics: metric name -> per-class values ``(num_classes,)``.
        metric_names: the metrics to take, in order.
        class_names: names of the classes; ``class0``, ``class1``, ... by default.

    Raises:
        KeyError: a metric is missing (the error lists those present).
        ValueError: a metric's number of values differs from the number of class names.
    """
    table: dict[str, dict[str, float]] = {}
    for name in metric_names:
        if name not in metrics:
            raise KeyError(f"metric {name!r} not found; the metrics are {sorted(metrics)}.")
        values = _per_class(metrics[name])
        names = list(class_names) if class_names is not None else [f"class{i}" for i in range(len(values))]
        if len(names) != len(values):
            raise ValueError(
                f"metric {name!r} has {len(values)} per-class values but there are {len(names)} class names."
            )
        finite = [v for v in values if not math.isnan(v)]
        table[name] = {**dict(zip(names, values)), "mean": sum(finite) / len(finite) if finite else math.nan}
    return table


def _markdown(table: dict[str, dict[str, float]]) -> str:
    """Rows: classes and "mean"; columns: metrics."""
    metric_names = list(table)
    rows = list(next(iter(table.values())))
    lines = ["| class | " + " | ".join(metric_names) + " |", "|---" * (len(metric_names) + 1) + "|"]
    for row in rows:
        label = "overall (mean)" if row == "mean" else row
        lines.append(f"| {label} | " + " | ".join(f"{table[m][row]:.4f}" for m in metric_names) + " |")
    return "\n".join(lines) + "\n"


class ClassMetricsSaver:
    """
    When an evaluator completes, write the per-class values of its metrics and their mean over the classes to
    ``<save_dir>/<filename>.json`` and a markdown table to ``<save_dir>/<filename>.md``, and log the table.

    Use with metrics that keep one value per class, for example MONAI's
    ``ConfusionMatrix(metric_name="f1 score", compute_sample=True, reduction="mean_batch", include_background=True)``
    and ``MeanIoUHandler(reduction="mean_batch", include_background=True)``.

    Args:
        save_dir: output folder (created).
        metric_names: names of the evaluator's metrics to write, in order.
        class_names: names of the classes, class 0 first.
        filename: file name stem.
        logger_name: name of the logger the table is written to.
    """

    def __init__(
        self,
        save_dir: str | Path,
        metric_names: Sequence[str],
        class_names: Sequence[str] | None = None,
        filename: str = "class_metrics",
        logger_name: str = "monai_ext.ClassMetricsSaver",
    ) -> None:
        if not metric_names:
            raise ValueError("metric_names must name at least one metric.")
        self.save_dir = Path(save_dir)
        self.metric_names = list(metric_names)
        self.class_names = None if class_names is None else list(class_names)
        self.filename = filename
        self.logger = logging.getLogger(logger_name)

    def attach(self, engine: Engine) -> None:
        """Write the tables when ``engine`` completes."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> dict[str, dict[str, float]]:
        table = class_metrics_table(engine.state.metrics, self.metric_names, self.class_names)
        write_json(self.save_dir / f"{self.filename}.json", table)
        text = _markdown(table)
        write_text(self.save_dir / f"{self.filename}.md", text)
        self.logger.info("per-class metrics (%s):\n%s", self.save_dir / f"{self.filename}.json", text)
        return table
