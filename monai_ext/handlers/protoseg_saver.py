"""
The one writer of the ProtoSeg results files (CSV and JSON), as MONAI's ``MetricsSaver`` writes metric reports: the
layer analysis (``layers.json``, ``layers.csv``, ``per_image.csv``, ``units.csv``), the quality estimate
(``quality.csv``, ``quality.json``, ``coverage.csv``) and the noise study (``noise.json``, ``noise.csv``). The
figures are drawn by :py:func:`monai_ext.visualize.plot_protoseg_results` from these files.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_ext.handlers.feature_recorder import item_name, layer_name
from monai_ext.metrics import layer_summary, noise_summary, quality_summary
from monai_ext.utils.files import atomic_open, write_json
from monai_ext.visualize import plot_protoseg_results

__all__ = [
    "ProtoSegSaver",
    "layer_results",
    "write_layer_results",
    "write_noise_study",
    "write_quality_results",
]

logger = logging.getLogger(__name__)


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _per_image(details: dict, name: str) -> list[float] | None:
    """A metric's details (N, [L,] K') averaged over the classes (the last dim), or (N,) as they are, as Python
    floats; ``None`` when there is no such metric."""
    data = details.get(name)
    return None if data is None else (data if data.ndim == 1 else data.mean(-1)).tolist()


def layer_results(
    engine: Engine,
    layers: Sequence[str] | None = None,
    unit_layer: str | int | None = -1,
    features: str = "features",
    sa: str = "sa",
    dice: str = "output_dice",
    units: str = "sa_units",
) -> dict[str, Any]:
    """
    The layer analysis of an evaluator's epoch (:py:func:`~monai_ext.metrics.layer_summary`) from the details of its
    ``SAScoreHandler`` ``sa`` (and ``units``) and ``OutputDiceHandler`` ``dice``; ``layers`` are the SA handler's
    (default: every recorded layer), ``unit_layer`` the units handler's.
    """
    batched = isinstance(engine.state.output, dict)
    recorded = engine.state.output[features] if batched else engine.state.output[0][features]
    shapes = {name: list(f.shape[1:] if batched else f.shape) for name, f in recorded.items()}
    details = engine.state.metric_details
    unit_scores = details[units].mean(-1).cpu().numpy() if units in details and unit_layer is not None else None
    return layer_summary(
        _per_image(details, sa),
        _per_image(details, dice),
        list(recorded) if layers is None else list(layers),
        shapes,
        unit_scores,
        None if unit_scores is None else layer_name(list(recorded), unit_layer),
    )


def write_layer_results(
    output_dir: Path,
    summary: dict[str, Any],
    names: Sequence[str],
    dice: Sequence[float],
    scores: Sequence[Sequence[float]],
) -> None:
    """Write a :py:func:`~monai_ext.metrics.layer_summary` (``layers.json``, ``layers.csv``, ``units.csv``) and the
    per-image output Dice and SA scores (``per_image.csv``); log the table."""
    rows, mean_dice = summary["layers"], summary["output_dice"]
    write_json(output_dir / "layers.json", summary, indent=1)
    table = [
        [r["index"], r["label"], r["name"], "x".join(map(str, r["feature_shape"] or [])), f"{r['mean']:.6f}"]
        + [f"{r['std']:.6f}", r["n"]]
        for r in rows
    ]
    table.append(["", "output", "output", "", f"{mean_dice['mean']:.6f}", f"{mean_dice['std']:.6f}", mean_dice["n"]])
    _csv(
        output_dir / "layers.csv", ["index", "label", "name", "feature_shape", "mean_sa", "std_sa", "num_images"], table
    )
    header = ["filename", "output_dice", *(f"sa_{r['label']}" for r in rows)]
    per_image = [[n, f"{d:.6f}", *(f"{s:.6f}" for s in sc)] for n, d, sc in zip(names, dice, scores)]
    _csv(output_dir / "per_image.csv", header, per_image)
    if "units" in summary:
        units = enumerate(zip(summary["units"]["sorted_units"], summary["units"]["sorted_scores"]), start=1)
        _csv(output_dir / "units.csv", ["rank", "unit", "mean_sa"], [[k, u, f"{s:.6f}"] for k, (u, s) in units])
    table_text = ", ".join(f"{r['label']}: {r['mean']:.3f}" for r in rows)
    logger.info(
        "ProtoSeg over %d images: output Dice %.4f, SA score per layer %s", len(names), mean_dice["mean"], table_text
    )


def write_quality_results(
    output_dir: Path, summary: dict[str, Any], columns: dict[str, Sequence[Any]], filename: str = "quality.csv"
) -> None:
    """Write the per-image quality ``columns`` (file name, ``mu`` and, when known, ``dice`` and ``vog``) to
    ``filename`` and, with the Dice, a :py:func:`~monai_ext.metrics.quality_summary` (``quality.json``,
    ``coverage.csv``)."""
    rows = [[row[0], *(f"{v:.6f}" for v in row[1:])] for row in zip(*columns.values())]
    _csv(output_dir / filename, list(columns), rows)
    if "mu" in summary:
        write_json(output_dir / "quality.json", summary, indent=1)
        table = [
            [key, r["coverage"], r["num_images"], f"{r['mean']:.6f}", f"{r['std']:.6f}", f"{r['threshold']:.6g}"]
            for key in ("mu", "vog")
            for r in summary.get(key, {}).get("coverage", [])
        ]
        header = ["ranked_by", "coverage", "num_images", "mean_dice", "std_dice", "threshold"]
        _csv(output_dir / "coverage.csv", header, table)
    logger.info("mean SA score mu over %d images: %.4f", summary["num_images"], summary["mean_mu"])


class ProtoSegSaver:
    """
    At the end of an evaluator's epoch, write the ProtoSeg results to ``output_dir`` from the images' file names and
    the per-image details of the metric handlers named ``sa`` and ``sa_units`` (:py:class:`SAScoreHandler`),
    ``output_dice`` (:py:class:`OutputDiceHandler`), ``mu`` (:py:class:`MeanSAScoreHandler`) and ``vog``
    (:py:class:`VarianceOfGradientsHandler`), those present: with ``sa``, ``layers.json``, ``layers.csv`` (Fig. 5,
    Tables 1 and 3), ``per_image.csv`` and ``units.csv`` (Fig. 7); with ``mu``, ``quality_filename`` and, with the
    Dice, ``quality.json`` and ``coverage.csv`` (Table 2, Fig. 10). Then the figures, when ``plot``
    (:py:func:`~monai_ext.visualize.plot_protoseg_results`).

    Args:
        output_dir: the folder to write.
        layers: the ``sa`` handler's layers; ``None``: every recorded layer.
        unit_layer: the ``sa_units`` handler's layer (a name or an index).
        quality_layers: the layers of ``mu`` (written to ``quality.json``).
        vog_checkpoints: the VoG checkpoints (their count is written to ``quality.json``).
        coverages: the coverages of the coverage table.
        quality_filename: the per-image quality CSV.
        title: a title for the figures.
        plot: draw the figures.
    """

    def __init__(
        self,
        output_dir: str | PathLike,
        layers: Sequence[str] | None = None,
        unit_layer: str | int | None = -1,
        quality_layers: Sequence[str] | None = None,
        vog_checkpoints: Sequence[Any] | None = None,
        coverages: Sequence[float] = (1.0, 0.9, 0.7, 0.5),
        quality_filename: str = "quality.csv",
        title: str | None = None,
        plot: bool = True,
    ) -> None:
        self.output_dir, self.layers, self.unit_layer = Path(output_dir), layers, unit_layer
        self.quality = {
            "coverages": tuple(coverages),
            "layers": quality_layers,
            "num_checkpoints": len(vog_checkpoints or []),
        }
        self.quality_filename, self.title, self.plot = quality_filename, title, plot
        self.names: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.names.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect_names)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def collect_names(self, engine: Engine) -> None:
        output = engine.state.output if isinstance(engine.state.output, list) else []
        self.names += [item_name(item.get("image"), f"image_{len(self.names) + i}") for i, item in enumerate(output)]

    def __call__(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        details = {name: _per_image(engine.state.metric_details, name) for name in ("sa", "output_dice", "mu", "vog")}
        if details["sa"] is not None:
            summary = layer_results(engine, self.layers, self.unit_layer)
            write_layer_results(self.output_dir, summary, self.names, details["output_dice"], details["sa"])
        if details["mu"] is not None:
            mu, dice, vog = details["mu"], details["output_dice"], details["vog"]
            summary = quality_summary(mu, dice, vog, **self.quality)
            columns = {"filename": self.names, "mu": mu, "dice": dice, "vog": vog}
            columns = {k: v for k, v in columns.items() if v is not None}
            write_quality_results(self.output_dir, summary, columns, self.quality_filename)
        if self.plot:
            plot_protoseg_results(self.output_dir, self.title, quality_filename=self.quality_filename)


def write_noise_study(
    results: Sequence[dict[str, Any]], output_dir: str | PathLike, title: str | None = None, plot: bool = True
) -> dict[str, Any]:
    """
    Write the noise study (Fig. 16) from a :py:class:`~monai_ext.engines.LevelSweep` over noise levels whose summary
    is :func:`layer_results` (the first level 0, the clean run): ``noise.json``, ``noise.csv`` (per level: the
    output's Dice and the SA difference per layer) and, when ``plot``, ``noise.png``.

    Returns:
        the noise study (:py:func:`~monai_ext.metrics.noise_summary`).
    """
    clean, noisy = results[0], results[1:]
    result = noise_summary([r["level"] for r in noisy], clean, noisy)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "noise.json", result, indent=1)
    rows = [[0.0, f"{result['output_dice']['clean']:.6f}", *(["0"] * len(result["layer_labels"]))]]
    rows += [
        [level, f"{dice:.6f}", *(f"{d:.6f}" for d in diff)]
        for level, dice, diff in zip(result["levels"], result["output_dice"]["noisy"], result["difference"])
    ]
    _csv(out / "noise.csv", ["level", "output_dice", *(f"sa_diff_{label}" for label in result["layer_labels"])], rows)
    if plot:
        plot_protoseg_results(out, title)
    logger.info("wrote the noise study to %s", out)
    return result
