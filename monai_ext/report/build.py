"""
The bundle report: one HTML page (``index.html``) and its PNGs (``figures/``) gathered from a bundle's results, every
file written atomically. Each section says what it found, or where it looked and found nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_ext.report.gather import (
    Table,
    find_event_dirs,
    find_metrics_groups,
    load_overlay_samples,
    read_csv_table,
    read_scalars,
)
from monai_ext.report.html import figure_html, missing_html, page_html, section_html, table_html
from monai_ext.utils.files import atomic_open, write_text
from monai_ext.visualize import plot_robustness_curves, plot_segmentations, plot_training_curves

__all__ = ["build_report"]

logger = logging.getLogger("monai_ext.report")

FIGURES = "figures"
#: at most this many scalar tags are plotted per TensorBoard run
MAX_TAGS = 12


def _slug(path: Path) -> str:
    """A file name for ``path`` (a relative path) in the flat figures folder."""
    return "__".join(path.with_suffix("").parts).replace(" ", "_") + ".png"


def _copy_png(source: Path, out_dir: Path, name: str) -> str:
    """Copy a PNG into ``out_dir/figures/name`` atomically; returns its path relative to the page."""
    with atomic_open(out_dir / FIGURES / name, "wb") as f:
        f.write(source.read_bytes())
    return f"{FIGURES}/{name}"


def _metadata(bundle: Path) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json``, or ``{}`` for a results folder that is not a bundle."""
    path = bundle / "configs" / "metadata.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _default_labels(bundle: Path) -> tuple[Any, float | None]:
    """The plain ``label_values`` and ``label_threshold`` of the bundle's ``configs/train.json`` (``None`` when absent
    or an expression)."""
    path = bundle / "configs" / "train.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    values, threshold = config.get("label_values"), config.get("label_threshold")
    return (values if isinstance(values, list) else None), (threshold if isinstance(threshold, (int, float)) else None)


def metrics_section(eval_dir: Path) -> list[str]:
    """The evaluation tables of ``eval_dir`` and its run subfolders."""
    groups = find_metrics_groups(eval_dir) if eval_dir.is_dir() else []
    if not groups:
        return [missing_html(f"No evaluation results (metrics.csv, *_summary.csv, class_metrics.json) in {eval_dir}.")]
    parts = []
    for group in groups:
        parts.append(f"<h3>{group.name if group.name != '.' else eval_dir.name + '/'}</h3>")
        parts += [table_html(t) for t in group.tables]
    return parts


def training_section(runs_dir: Path, out_dir: Path) -> list[str]:
    """One figure of the TensorBoard scalars per run folder under ``runs_dir``, and a table of each tag's last and
    best values."""
    event_dirs = find_event_dirs(runs_dir) if runs_dir.is_dir() else []
    if not event_dirs:
        return [missing_html(f"No training runs: no TensorBoard event files in {runs_dir}.")]
    parts = []
    for event_dir in event_dirs:
        name = event_dir.relative_to(runs_dir).as_posix()
        name = runs_dir.name if name == "." else f"{runs_dir.name}/{name}"
        scalars = {tag: points for tag, points in read_scalars(event_dir).items() if points}
        if not scalars:
            parts.append(missing_html(f"{name}: event files hold no scalars."))
            continue
        shown = dict(list(scalars.items())[:MAX_TAGS])
        figure = plot_training_curves(shown, out_dir / FIGURES / _slug(Path("training", name)), title=name)
        rows = [[t, str(int(p[-1][0])), f"{p[-1][1]:.4f}", f"{min(v for _, v in p):.4f}", f"{max(v for _, v in p):.4f}"]
                for t, p in scalars.items()]  # fmt: skip
        parts.append(figure_html(f"{FIGURES}/{figure.name}", f"training curves of {name}"))
        parts.append(table_html(Table(f"{name}: scalars", ["tag", "last step", "last", "min", "max"], rows)))
    return parts


def _summaries(data: Any) -> list[dict[str, Any]] | None:
    """The robustness summaries (``{"label", "results"}``) of a sweep file, or ``None`` for another layout."""
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        return [{"level_name": settings.get("level_name", "epsilon"), **data}]  # a LevelSweep file names its levels
    if isinstance(data, list) and data and all(isinstance(d, dict) and "results" in d for d in data):
        return data
    return None


def robustness_section(eval_dir: Path, out_dir: Path) -> list[str]:
    """Each ``robustness*.json`` sweep under ``eval_dir`` as a curve and a table (its own PNG when the layout is not a
    sweep summary), and the robustness PNGs that have no JSON next to them."""
    files = sorted(eval_dir.rglob("robustness*.json")) if eval_dir.is_dir() else []
    pngs = [p for p in sorted(eval_dir.rglob("robustness*.png")) if not p.with_suffix(".json").is_file()] if (
        eval_dir.is_dir()
    ) else []  # fmt: skip
    if not files and not pngs:
        return [missing_html(f"No robustness sweep (robustness*.json) in {eval_dir}.")]
    parts = []
    for path in files:
        rel = path.relative_to(eval_dir)
        summaries = _summaries(json.loads(path.read_text()))
        if summaries:
            figure = plot_robustness_curves(
                summaries, out_dir / FIGURES / _slug(Path("robustness", rel)), rel.as_posix()
            )
            parts.append(figure_html(f"{FIGURES}/{figure.name}", f"robustness curves: {rel.as_posix()}"))
            level = summaries[0].get("level_name", "epsilon")  # a sweep over another budget: VAFA's q_max
            rows = [
                [s.get("label", "network"), f"{r[level]:g}", f"{r['mean_dice']:.4f}", f"{r['mean_jaccard']:.4f}"]
                for s in summaries
                for r in sorted(s["results"], key=lambda r: r[level])
            ]
            parts.append(table_html(Table(rel.as_posix(), ["network", level, "mean Dice", "mean Jaccard"], rows)))
        elif path.with_suffix(".png").is_file():
            src = _copy_png(path.with_suffix(".png"), out_dir, _slug(Path("robustness", rel)))
            parts.append(figure_html(src, f"robustness: {rel.with_suffix('.png').as_posix()}"))
        else:
            parts.append(missing_html(f"{rel.as_posix()}: not a sweep summary, and no PNG next to it."))
    for png in pngs:
        rel = png.relative_to(eval_dir)
        parts.append(figure_html(_copy_png(png, out_dir, _slug(Path("robustness", rel))), f"robustness: {rel}"))
    return parts


def protoseg_section(interpret_dir: Path, out_dir: Path) -> list[str]:
    """The ProtoSeg figures (``*.png``) and tables (``*.csv``) of ``interpret_dir``."""
    pngs = sorted(interpret_dir.glob("*.png")) if interpret_dir.is_dir() else []
    csvs = sorted(interpret_dir.glob("*.csv")) if interpret_dir.is_dir() else []
    if not pngs and not csvs:
        return [missing_html(f"No ProtoSeg interpretation results in {interpret_dir} (run configs/interpret.json).")]
    parts = [figure_html(_copy_png(p, out_dir, _slug(Path("interpret", p.name))), p.name) for p in pngs]
    return parts + [table_html(read_csv_table(p)) for p in csvs]


def overlays_section(
    dataset_dir: Path | None,
    predictions_dir: Path,
    out_dir: Path,
    num_overlays: int,
    label_values: Any,
    label_threshold: float | None,
    class_names: Sequence[str] | None,
) -> list[str]:
    """A grid of image / ground truth / prediction for a few predicted images of the dataset."""
    if not predictions_dir.is_dir():
        return [missing_html(f"No predictions in {predictions_dir} (run configs/inference.json).")]
    if dataset_dir is None or not dataset_dir.is_dir():
        return [missing_html(f"No dataset folder to pair the predictions with ({dataset_dir}); give --dataset_dir.")]
    samples = load_overlay_samples(dataset_dir, predictions_dir, num_overlays, label_values, label_threshold)
    if not samples:
        return [
            missing_html(
                f"No prediction in {predictions_dir} has an image and a mask of the same stem in {dataset_dir}."
            )
        ]
    figure = plot_segmentations(
        [s.image for s in samples],
        {"ground truth": [s.label for s in samples], "prediction": [s.pred for s in samples]},
        out_dir / FIGURES / "overlays.png",
        class_names=class_names,
        row_titles=[s.name for s in samples],
    )
    note = (
        '<p class="meta">Ground-truth classes shown as the ranks of the raw mask values (no label mapping given, or one '
        "that does not fit these masks): give --label_values or --label_threshold as for the bundle.</p>"
    )
    return [
        figure_html(f"{FIGURES}/{figure.name}", f"{predictions_dir} against {dataset_dir}"),
        note if any(s.ranked for s in samples) else "",
    ]


def build_report(
    bundle: str | Path,
    output_dir: str | Path | None = None,
    eval_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
    interpret_dir: str | Path | None = None,
    predictions_dir: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    num_overlays: int = 4,
    label_values: Any = None,
    label_threshold: float | None = None,
) -> Path:
    """
    Gather a bundle's results into ``output_dir/index.html`` and its PNGs in ``output_dir/figures/``.

    Args:
        bundle: the bundle folder (or any folder laid out as a ``bundle_root``: ``eval/``, ``runs/``, ``predictions/``).
        output_dir: where the page goes; ``bundle/report`` by default.
        eval_dir: evaluation results (``metrics.csv``, ``*_summary.csv``, ``class_metrics.json``,
            ``robustness*.json``), searched with its subfolders; ``bundle/eval`` by default.
        runs_dir: TensorBoard logs (every folder under it with event files is a run); ``bundle/runs`` by default.
        interpret_dir: ProtoSeg tables and figures; ``eval_dir/interpret`` by default.
        predictions_dir: ``inference.json``'s masks (``<stem>_seg.png``); ``bundle/predictions`` by default.
        dataset_dir: the dataset the predictions were made on (as the bundles' ``--dataset_dir``);
            ``bundle/synthetic_data`` (the bundles' default data) when it exists.
        num_overlays: how many predicted images to show over their image and ground truth.
        label_values: the bundle's ``--label_values``, to map raw mask values to classes in the overlays; the
            default of the bundle's ``configs/train.json`` when neither this nor ``label_threshold`` is given.
        label_threshold: the bundle's ``--label_threshold`` (binary masks), instead of ``label_values``.

    Returns:
        the path of ``index.html``.

    Raises:
        FileNotFoundError: ``bundle`` is not a folder.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise FileNotFoundError(
            f"The bundle folder {bundle} does not exist (give a bundle folder, e.g. bundles/nlcen)."
        )
    out_dir = Path(output_dir) if output_dir is not None else bundle / "report"
    eval_dir = Path(eval_dir) if eval_dir is not None else bundle / "eval"
    runs_dir = Path(runs_dir) if runs_dir is not None else bundle / "runs"
    interpret_dir = Path(interpret_dir) if interpret_dir is not None else eval_dir / "interpret"
    predictions_dir = Path(predictions_dir) if predictions_dir is not None else bundle / "predictions"
    if dataset_dir is None and (bundle / "synthetic_data").is_dir():
        dataset_dir = bundle / "synthetic_data"
    if label_values is None and label_threshold is None:  # the bundle's defaults (those of its synthetic data)
        label_values, label_threshold = _default_labels(bundle)
    metadata = _metadata(bundle)
    outputs = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    channel_def = outputs.get("channel_def") or {}
    class_names = [channel_def[k] for k in sorted(channel_def, key=int)] if channel_def else None

    sections = [
        ("metrics", "Evaluation metrics", metrics_section(eval_dir)),
        ("training", "Training curves", training_section(runs_dir, out_dir)),
        ("robustness", "Robustness", robustness_section(eval_dir, out_dir)),
    ]
    if interpret_dir.is_dir() or (bundle / "configs" / "interpret.json").is_file():
        sections.append(("protoseg", "ProtoSeg interpretation", protoseg_section(interpret_dir, out_dir)))
    overlays = overlays_section(
        Path(dataset_dir) if dataset_dir is not None else None,
        predictions_dir,
        out_dir,
        num_overlays,
        label_values,
        label_threshold,
        class_names,
    )
    sections.append(("overlays", "Predictions", overlays))
    title = f"{metadata.get('name', bundle.name)} {metadata.get('version', '')}".strip()
    meta = [
        f"bundle {bundle}; evaluation {eval_dir}; runs {runs_dir}",
        f"predictions {predictions_dir}; dataset {dataset_dir}",
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}",
    ]
    page = page_html(title, meta, [(a, t, section_html(a, t, parts)) for a, t, parts in sections])
    path = write_text(out_dir / "index.html", page)
    logger.info("report written to %s", path)
    return path
