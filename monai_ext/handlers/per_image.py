"""Write per-image scores and their mean and standard error (Table 1 of the deep input transfer paper) when an
evaluator completes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_ext.metrics.per_image import mean_standard_error, per_image_scores
from monai_ext.utils.files import write_json

__all__ = ["PerImageMetricsSaver"]


class PerImageMetricsSaver:
    """
    When an evaluator completes, take the per-image details of its metrics (``engine.state.metric_details``, kept by
    MONAI's metric handlers with ``save_details=True``, their default), one score per image
    (:py:func:`monai_ext.metrics.per_image_scores`), and write

    - ``<save_dir>/per_image.json``: ``{"label": label, "values": {name: [per-image scores]}}``;
    - ``<save_dir>/summary.json``: ``{"label": label, "metrics": {name: {"mean", "standard_error", "std", "n"}}}``.

    Example (Dice, FPR and FNR per image)::

        "additional_metrics": {"fpr": {"_target_": "ConfusionMatrix", "metric_name": "fpr", ...}, ...},
        "val_handlers": [{"_target_": "monai_ext.handlers.PerImageMetricsSaver", "save_dir": "@eval_dir",
                          "metrics": {"dice": "mean_dice", "fpr": "fpr", "fnr": "fnr"}, "label": "ORIG"}]

    Args:
        save_dir: output folder (created).
        metrics: output name -> the evaluator's metric name. A metric whose details are confusion matrices (MONAI's
            ``ConfusionMatrix``) gives the confusion metric of the output name (``"fpr"``, ``"fnr"``, ...).
        label: the name of what was evaluated (a method, a model), written with the results.
        logger_name: name of the logger the summary goes to.
    """

    def __init__(
        self,
        save_dir: str | Path,
        metrics: Mapping[str, str] | None = None,
        label: str = "",
        logger_name: str = "monai_ext.PerImageMetricsSaver",
    ) -> None:
        self.save_dir = Path(save_dir)
        self.metrics = dict(metrics or {"dice": "mean_dice", "fpr": "fpr", "fnr": "fnr"})
        if not self.metrics:
            raise ValueError("metrics must name at least one metric.")
        self.label = label
        self.logger = logging.getLogger(logger_name)

    def attach(self, engine: Engine) -> None:
        """Write the results when ``engine`` completes."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> dict[str, Any]:
        details = getattr(engine.state, "metric_details", {})
        missing = [m for m in self.metrics.values() if m not in details]
        if missing:
            raise KeyError(f"no per-image details of {missing}; the evaluator keeps them of {sorted(details)}.")
        values = {name: per_image_scores(details[m], name).tolist() for name, m in self.metrics.items()}
        summary = {"label": self.label, "metrics": {name: mean_standard_error(v) for name, v in values.items()}}
        write_json(self.save_dir / "per_image.json", {"label": self.label, "values": values})
        write_json(self.save_dir / "summary.json", summary)
        line = ", ".join(f"{n} {s['mean']:.4f} +- {s['standard_error']:.4f}" for n, s in summary["metrics"].items())
        self.logger.info("%s: %s (mean +- standard error over images), in %s", self.label, line, self.save_dir)
        return summary
