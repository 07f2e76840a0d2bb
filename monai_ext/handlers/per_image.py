"""Write per-image scores and their mean and standard error (Table 1 of the deep input transfer paper) when an
evaluator completes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.utils import ImageMetaKey

from monai_ext.metrics.per_image import mean_standard_error, per_image_scores
from monai_ext.utils.files import write_json

__all__ = ["PerImageMetricsSaver"]


class PerImageMetricsSaver:
    """
    When an evaluator completes, take the per-image details of its metrics (``engine.state.metric_details``, kept by
    MONAI's metric handlers with ``save_details=True``, their default), one score per image
    (:py:func:`monai_ext.metrics.per_image_scores`), and write

    - ``<save_dir>/per_image.json``: ``{"label": label, "values": {name: [per-image scores]}, "names": [...]}``;
    - ``<save_dir>/summary.json``: ``{"label": label, "metrics": {name: {"mean", "standard_error", "std", "n"}}}``.

    ``names`` (when the saver is attached and every image of the batches carries its file in its metadata, as
    ``LoadImaged`` leaves it: ``batch[name_key].meta["filename_or_obj"]``, the file MONAI's ``MetricsSaver`` names too)
    are the image files in the order of the values, relative to the folder the files share: two evaluations of the
    same images pair by name, whatever their order. Without them (``name_key=None``, a batch without metadata, or a
    count that differs from the values', e.g. details gathered over several processes), ``names`` is left out.

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
        name_key: the batch key whose metadata names each image (``None``: write no names).
    """

    def __init__(
        self,
        save_dir: str | Path,
        metrics: Mapping[str, str] | None = None,
        label: str = "",
        logger_name: str = "monai_ext.PerImageMetricsSaver",
        name_key: str | None = "image",
    ) -> None:
        self.save_dir = Path(save_dir)
        self.metrics = dict(metrics or {"dice": "mean_dice", "fpr": "fpr", "fnr": "fnr"})
        if not self.metrics:
            raise ValueError("metrics must name at least one metric.")
        self.label = label
        self.logger = logging.getLogger(logger_name)
        self.name_key = name_key
        self._names: list[str] | None = None

    def attach(self, engine: Engine) -> None:
        """Collect the images' names at every iteration and write the results when ``engine`` completes."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect_names)
        engine.add_event_handler(Events.COMPLETED, self)

    def _started(self, _engine: Engine) -> None:
        self._names = [] if self.name_key is not None else None

    def _collect_names(self, engine: Engine) -> None:
        if self._names is None:
            return
        batch = engine.state.batch  # a list of items (MONAI's engines decollate it) or one collated dictionary
        items = batch if isinstance(batch, Sequence) and not isinstance(batch, str) else [batch]
        for item in items:
            meta = getattr(item.get(self.name_key), "meta", None) if isinstance(item, Mapping) else None
            name = meta.get(ImageMetaKey.FILENAME_OR_OBJ) if isinstance(meta, Mapping) else None
            if name is None or not isinstance(name, (str, list, tuple)):
                self._names = None  # an image without a name: write none
                return
            self._names.extend([name] if isinstance(name, str) else [str(n) for n in name])

    def __call__(self, engine: Engine) -> dict[str, Any]:
        details = getattr(engine.state, "metric_details", {})
        missing = [m for m in self.metrics.values() if m not in details]
        if missing:
            raise KeyError(f"no per-image details of {missing}; the evaluator keeps them of {sorted(details)}.")
        values = {name: per_image_scores(details[m], name).tolist() for name, m in self.metrics.items()}
        summary = {"label": self.label, "metrics": {name: mean_standard_error(v) for name, v in values.items()}}
        names = self._names if self._names and all(len(v) == len(self._names) for v in values.values()) else None
        result = {"label": self.label, "values": values, **({"names": _relative_names(names)} if names else {})}
        write_json(self.save_dir / "per_image.json", result)
        write_json(self.save_dir / "summary.json", summary)
        line = ", ".join(f"{n} {s['mean']:.4f} +- {s['standard_error']:.4f}" for n, s in summary["metrics"].items())
        self.logger.info("%s: %s (mean +- standard error over images), in %s", self.label, line, self.save_dir)
        return summary


def _relative_names(paths: Sequence[str]) -> list[str]:
    """File paths relative to the folder they all lie in (one path: its file name), ``/``-separated: names that do not
    depend on where the dataset lies."""
    folder = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [Path(os.path.relpath(os.path.abspath(p), folder)).as_posix() for p in paths]
