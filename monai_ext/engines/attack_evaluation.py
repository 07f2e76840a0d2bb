"""
Evaluation of a network clean and under a set of named attacks (the robust training paper's Tables 1 and 2): one run
of a MONAI evaluator per condition, its metrics kept per condition, written as JSON and a markdown table.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from monai.engines import Evaluator
from torch import nn

from monai_ext.attacks import describe_inferer, with_inferer
from monai_ext.engines.sweep import engine_metrics
from monai_ext.engines.utils import AdversarialPrepareBatch, data_digest, network_digest
from monai_ext.transforms.attacks import attack_record
from monai_ext.utils.files import json_safe, write_json, write_text
from monai_ext.utils.resume import resume_results

__all__ = ["AttackEvaluation", "background_prediction", "evaluation_table", "logits_and_labels"]

logger = logging.getLogger(__name__)

AttackLike = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def logits_and_labels(output: Sequence[Mapping[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """
    ``(logits (B, C, *spatial), one-hot labels (B, C, *spatial))`` stacked from an evaluator's decollated output
    whose post-processing copied the raw prediction to ``"logits"`` (``CopyItemsd(keys="pred", names="logits")``)
    before it became one-hot: the ``output_transform`` of an ignite ``Loss`` over the logits, such as
    ``torch.nn.CrossEntropyLoss`` (which takes one-hot labels as class probabilities).
    """
    return torch.stack([item["logits"] for item in output]), torch.stack([item["label"] for item in output])


def background_prediction(output: Sequence[Mapping[str, torch.Tensor]]) -> tuple[list, list]:
    """
    ``(one-hot all-background predictions, one-hot labels)`` of an evaluator's decollated output: the
    ``output_transform`` that makes a metric score the prediction "class 0 everywhere" (what a collapsed network
    scores; pixel accuracy of it is the fraction of background pixels).
    """
    labels = [item["label"] for item in output]
    background = []
    for label in labels:
        pred = torch.zeros_like(label)
        pred[0] = 1
        background.append(pred)
    return background, labels


def _cell(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def evaluation_table(
    results: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str],
    scalars: Sequence[str] = ("loss", "pixel_accuracy"),
    per_class: Sequence[str] = ("dice", "jaccard"),
    title: str = "condition",
) -> str:
    """
    A markdown table: one row per condition (or model), the ``scalars`` then each ``per_class`` metric for each
    class (``"dice background"``, ``"dice lung"``, ...). Missing or NaN values are empty cells.

    Args:
        results: row name -> metrics (a scalar per ``scalars`` name, a list per class per ``per_class`` name).
        class_names: names of the classes, class 0 first.
        scalars: scalar metrics, in order.
        per_class: per-class metrics, in order.
        title: the header of the first column.
    """
    columns = [*scalars, *[f"{m} {c}" for m in per_class for c in class_names]]
    lines = [f"| {title} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in results.items():
        cells = [_cell(metrics.get(m)) for m in scalars]
        for m in per_class:
            values = list(metrics.get(m) or [])
            cells += [_cell(values[i]) if i < len(values) else "" for i in range(len(class_names))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class AttackEvaluation:
    """
    Run a MONAI evaluator on its data clean and under each of several named attacks: for a condition with an attack,
    the evaluator's ``prepare_batch`` becomes an :py:class:`~monai_ext.engines.utils.AdversarialPrepareBatch` of it
    over the evaluator's own (its network is attacked, through the evaluator's inferer:
    :py:func:`~monai_ext.attacks.with_inferer`), then is restored; its metrics are kept per condition.

    With ``output_dir``, ``<name>.json`` is written after each condition with the settings the results depend on (the
    attacks and their settings, digests of the data and of the weights the network is evaluated with, after the
    evaluator's ``CheckpointLoader`` handlers loaded them): a rerun with the same settings takes the finished conditions
    from it and computes only the others (a killed evaluation resumes); a file of other settings (another model's
    results, say) is refused in one line naming the file and the settings that differ (both digests), unless
    ``overwrite`` (:py:func:`~monai_ext.utils.resume.resume_results`). At the end ``<name>.md`` holds
    :func:`evaluation_table`.

    Example (the robust training bundle's ``evaluate.json``)::

        "attack_evaluation": {
            "_target_": "monai_ext.engines.AttackEvaluation",
            "evaluator": "@validate#evaluator",
            "attacks": {"clean": null, "pgd100_background": "@pgd_background", "pgd40": "@pgd_untargeted"},
            "class_names": "@class_names",
            "output_dir": "@eval_dir"
        }

    Args:
        evaluator: a MONAI ``SupervisedEvaluator`` with its metrics (per-class metrics as lists of per-class values,
            ``reduction="mean_batch"``).
        attacks: condition name -> attack ``(network, images, labels) -> images``, or ``None`` for the clean images.
        class_names: names of the classes, for the table.
        output_dir: where to write ``<name>.json`` and ``<name>.md``; ``None`` writes nothing.
        name: file name stem.
        label: the evaluated model's label, written with the results.
        overwrite: replace a results file of other settings instead of refusing.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        attacks: Mapping[str, AttackLike | None],
        class_names: Sequence[str],
        output_dir: str | PathLike | None = None,
        name: str = "attack_evaluation",
        label: str = "network",
        overwrite: bool = False,
    ) -> None:
        if not attacks:
            raise ValueError("attacks must name at least one condition (None for the clean images).")
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
        self.evaluator, self.attacks = evaluator, dict(attacks)
        self.class_names = list(class_names)
        self.results_file = None if output_dir is None else Path(output_dir) / f"{name}.json"
        self.table_file = None if output_dir is None else Path(output_dir) / f"{name}.md"
        self.label, self.overwrite = label, overwrite

    def settings(self) -> dict[str, Any]:
        """The conditions with their attacks' settings, the evaluator's inferer (when it is not plain), and digests of
        the network's weights, after the evaluator's checkpoints are loaded
        (:py:func:`~monai_ext.engines.utils.network_digest`: this loads them), and of the data."""
        attacks = {k: None if a is None else attack_record(a, {})["settings"] | {"attack": type(a).__name__}
                   for k, a in self.attacks.items()}  # fmt: skip
        settings = {
            "attacks": attacks,
            "network": network_digest(self.evaluator),
            "data": data_digest(self.evaluator.data_loader.dataset),
        }
        inferer = describe_inferer(getattr(self.evaluator, "inferer", None))
        return json_safe(settings if inferer is None else {**settings, "inferer": inferer})

    def _finished(self, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The results per condition that ``results_file`` holds for ``settings`` (none without a file)."""
        document = resume_results(self.results_file, settings, self.overwrite, what="the results of an evaluation")
        return {k: v for k, v in (document or {}).get("results", {}).items() if k in settings["attacks"]}

    def _write(self, settings: dict[str, Any], results: dict[str, Any]) -> None:
        if self.results_file is not None:
            document = {"label": self.label, "class_names": self.class_names, "settings": settings,
                        "complete": len(results) == len(self.attacks), "results": results}  # fmt: skip
            write_json(self.results_file, document)

    def run(self) -> dict[str, dict[str, Any]]:
        """
        Returns:
            condition -> the evaluator's metrics (plain values) and the run time in ``"seconds"``, in the order of
            ``attacks``.
        """
        evaluator, clean = self.evaluator, self.evaluator.prepare_batch
        settings = self.settings() if self.results_file is not None else {}
        finished = self._finished(settings)
        network = with_inferer(evaluator.network, getattr(evaluator, "inferer", None))
        results: dict[str, dict[str, Any]] = {}
        try:
            for condition, attack in self.attacks.items():
                if condition in finished:
                    results[condition] = finished[condition]
                    logger.info("%s: taken from %s", condition, self.results_file)
                    continue
                if attack is not None:
                    evaluator.prepare_batch = AdversarialPrepareBatch(attack, network, prepare_batch=clean)
                start = time.perf_counter()
                evaluator.run()
                evaluator.prepare_batch = clean
                results[condition] = json_safe({**engine_metrics(evaluator), "seconds": time.perf_counter() - start})
                logger.info("%s done in %.1f s: %s", condition, results[condition]["seconds"], results[condition])
                self._write(settings, {**results, **{k: v for k, v in finished.items() if k not in results}})
        finally:
            evaluator.prepare_batch = clean
        results = {k: results[k] for k in self.attacks}
        self._write(settings, results)
        if self.table_file is not None:
            write_text(self.table_file, evaluation_table(results, self.class_names, title=self.label))
        return results
