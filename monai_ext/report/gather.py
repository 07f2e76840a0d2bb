"""
Read a bundle's results from disk for the report: metrics tables, TensorBoard scalars, robustness sweeps, ProtoSeg
tables and figures, and the (image, ground truth, prediction) triples of the overlays. Nothing here writes a file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data import ImageFileReader, file_stem, list_image_files, load_datalist

__all__ = [
    "MetricsGroup",
    "OverlaySample",
    "Table",
    "find_event_dirs",
    "find_metrics_groups",
    "load_overlay_samples",
    "pair_predictions",
    "read_class_metrics",
    "read_csv_table",
    "read_key_value_csv",
    "read_scalars",
]

#: the evaluation tables of a run folder, by file name pattern
SUMMARY_PATTERN = "*_summary.csv"


@dataclass
class Table:
    """A table to show: a title, a header row and the body rows (text cells), and how many rows were left out."""

    title: str
    header: list[str]
    rows: list[list[str]]
    omitted: int = 0


@dataclass
class MetricsGroup:
    """The evaluation tables found in one folder (``eval/`` or one of its run subfolders)."""

    name: str
    tables: list[Table] = field(default_factory=list)


@dataclass
class OverlaySample:
    """One overlay row: a 2D grey image, its ground-truth and predicted class-index maps, in display orientation."""

    name: str
    image: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    ranked: bool = False  #: the ground-truth classes are the ranks of the raw mask values (no mapping given or fit)


def _cell(value: Any) -> str:
    """A table cell: floats with 4 decimals, everything else as text."""
    if isinstance(value, float):
        return f"{value:.4f}"
    try:
        return f"{float(value):.4f}" if "." in str(value) else str(value)
    except ValueError:
        return str(value)


def read_csv_table(path: Path, title: str | None = None, max_rows: int = 25) -> Table:
    """A CSV file with a header row as a :class:`Table` (its first ``max_rows`` body rows)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    return Table(
        title or path.name,
        header,
        [[_cell(c) for c in row] for row in body[:max_rows]],
        max(0, len(body) - max_rows),
    )


def read_key_value_csv(path: Path, title: str | None = None) -> Table:
    """A headerless ``name,value`` CSV (MONAI ``MetricsSaver``'s ``metrics.csv``) as a two-column :class:`Table`."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    return Table(title or path.name, ["metric", "value"], [[row[0], _cell(row[-1])] for row in rows])


def read_class_metrics(path: Path, title: str | None = None) -> Table:
    """A ``class_metrics.json`` (metric -> class -> value) as a :class:`Table`: one row per class, one column per
    metric."""
    data = json.loads(path.read_text())
    metrics = list(data)
    classes = list(dict.fromkeys(c for m in metrics for c in data[m]))
    rows = [[c, *(_cell(data[m].get(c, "")) for m in metrics)] for c in classes]
    return Table(title or path.name, ["class", *metrics], rows)


def find_metrics_groups(eval_dir: Path) -> list[MetricsGroup]:
    """
    The evaluation tables under ``eval_dir``, grouped by folder (``eval_dir`` itself, then its run subfolders):
    ``metrics.csv``, ``*_summary.csv`` and ``class_metrics.json``. Folders without any are left out.
    """
    groups = []
    folders = [eval_dir, *sorted(p for p in eval_dir.rglob("*") if p.is_dir())]
    for folder in folders:
        tables = []
        if (folder / "metrics.csv").is_file():
            tables.append(read_key_value_csv(folder / "metrics.csv"))
        tables += [read_csv_table(p) for p in sorted(folder.glob(SUMMARY_PATTERN))]
        if (folder / "class_metrics.json").is_file():
            tables.append(read_class_metrics(folder / "class_metrics.json"))
        if tables:
            name = folder.relative_to(eval_dir).as_posix()
            groups.append(MetricsGroup("." if name == "." else name, tables))
    return groups


def find_event_dirs(runs_dir: Path) -> list[Path]:
    """The folders under ``runs_dir`` (itself included) that hold TensorBoard event files, sorted."""
    return sorted({p.parent for p in runs_dir.rglob("events.out.tfevents.*") if p.is_file()})


def read_scalars(event_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """
    Every scalar tag of the TensorBoard event files in ``event_dir``: tag -> ``(step, value)`` pairs by step. A step
    logged more than once (a run restarted into the same folder) keeps its latest value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {}
    for tag in sorted(accumulator.Tags()["scalars"]):
        latest = {float(e.step): float(e.value) for e in sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time)}
        scalars[tag] = sorted(latest.items())
    return scalars


def pair_predictions(predictions_dir: Path, datalist: Sequence[dict[str, str]], postfix: str = "_seg") -> list[tuple]:
    """
    Pair the prediction files of ``predictions_dir`` (``SaveImaged``'s ``<stem><postfix>.png``, or ``<stem>.png``)
    with the datalist entries whose image has that stem and a label: ``(stem, image path, label path, prediction
    path)``, sorted by stem.
    """
    predictions = {}
    for stem, path in list_image_files(predictions_dir).items():
        predictions[stem[: -len(postfix)] if postfix and stem.endswith(postfix) else stem] = path
    pairs = []
    for entry in datalist:
        stem = file_stem(Path(entry["image"]).name)
        if stem in predictions and entry.get("label"):
            pairs.append((stem, entry["image"], entry["label"], predictions[stem]))
    return sorted(pairs)


def _load(path: str) -> np.ndarray:
    """A file as a channel-first array ``(C, *spatial)`` (``monai_ext.data.ImageFileReader`` through ``LoadImage``)."""
    from monai.transforms import LoadImage

    return np.asarray(LoadImage(reader=ImageFileReader, image_only=True, ensure_channel_first=True)(path))


def _class_map(mask: np.ndarray, label_values: Any, label_threshold: float | None) -> tuple[np.ndarray, bool]:
    """
    A raw channel-first mask as a 2D class-index map, and whether it fell back to ranks: through ``LabelToIndex`` when
    a mapping is given and fits the mask, otherwise each raw value becomes its rank among the mask's values.
    """
    if label_threshold is not None or label_values is not None:
        from monai_ext.transforms import LabelToIndex

        mapping = LabelToIndex(
            label_values=None if label_threshold is not None else label_values, threshold=label_threshold
        )
        try:
            return np.asarray(mapping(mask))[0].astype(int), False
        except ValueError:  # a raw value outside the mapping: show the mask anyway
            pass
    grey = mask[: 3 if mask.shape[0] >= 3 else 1].mean(axis=0)
    return np.searchsorted(np.unique(grey), grey), True


def _resize_nearest(seg: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A class-index map resized to ``shape`` by nearest-neighbour sampling."""
    if seg.shape == shape:
        return seg
    index = np.ix_(*[np.arange(n) * s // n for n, s in zip(shape, seg.shape)])
    return seg[index]


def load_overlay_samples(
    dataset_dir: Path,
    predictions_dir: Path,
    num_samples: int = 4,
    label_values: Any = None,
    label_threshold: float | None = None,
) -> list[OverlaySample]:
    """
    Read up to ``num_samples`` (image, ground truth, prediction) triples: the predictions of ``predictions_dir`` paired
    by file stem with the images and masks of the dataset in ``dataset_dir`` (every split,
    :func:`monai_ext.data.load_datalist`). Images become grey, masks class indices (``label_values`` /
    ``label_threshold`` as the bundle's options; the rank of each raw value without them or when a mask holds a value
    they do not map), predictions are resized to their
    image when sizes differ; all are transposed to display orientation (MONAI reads 2D files as ``(W, H)``).
    """
    datalist = load_datalist(dataset_dir, "all", require_labels=False)
    samples = []
    for stem, image_path, label_path, pred_path in pair_predictions(predictions_dir, datalist)[:num_samples]:
        image = _load(image_path)
        image = image[: 3 if image.shape[0] >= 3 else 1].mean(axis=0)
        label, ranked = _class_map(_load(label_path), label_values, label_threshold)
        label = _resize_nearest(label, image.shape)
        pred = _resize_nearest(_load(pred_path)[0].round().astype(int), image.shape)
        samples.append(OverlaySample(stem, image.T, label.T, pred.T, ranked))
    return samples
