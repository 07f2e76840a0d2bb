"""
Results of the SAGAN segmentation bundle across runs: the paper's per-class tables and a figure of predictions.

``table`` gathers the ``class_metrics.json`` that ``bundles/sagan_seg/configs/evaluate.json`` (merged over
``train.json``) writes to each run's ``eval_dir`` into one markdown table per metric (rows: classes and their mean,
the paper's "overall"; columns: runs).
``figure`` runs each run's network on the first test images and plots ground truth and predictions side by side.

Example (the JSRT comparison of bundles/sagan_seg/docs/README.md)::

    python scripts/sagan_report.py table \
        --runs "{'SAGAN': 'bundles/sagan_seg/eval/jsrt_sagan', 'generator only': 'bundles/sagan_seg/eval/jsrt_gen'}"
    python scripts/sagan_report.py figure --dataset_dir ../shared/datasets/jsrt_scr_224 \
        --runs "{'SAGAN': {'ckpt': 'bundles/sagan_seg/models/jsrt_sagan/model.pt'}}" \
        --output bundles/sagan_seg/docs/jsrt_predictions.png
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage

from monai_ext.data import load_datalist
from monai_ext.utils import write_text
from monai_ext.visualize import plot_segmentations

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "sagan_seg" / "configs"
METRIC_TITLES = {"f1_score": "F1", "accuracy": "accuracy", "iou": "IoU", "precision": "precision", "recall": "recall"}


def table(runs: Mapping[str, str], output: str | None = None, digits: int = 4) -> str:
    """
    One markdown table per metric: rows are the classes and ``overall`` (their mean), columns the runs.

    Args:
        runs: column label -> a run's ``eval_dir`` (holding ``class_metrics.json``) or that JSON file.
        output: also write the tables to this file.
        digits: decimals shown.

    Returns:
        the markdown text (also printed).
    """
    tables = {}
    for label, where in runs.items():
        path = Path(where)
        path = path / "class_metrics.json" if path.is_dir() else path
        tables[label] = json.loads(path.read_text())
    labels = list(tables)
    first = tables[labels[0]]
    blocks = []
    for metric in first:
        rows = list(first[metric])
        lines = [
            f"**{METRIC_TITLES.get(metric, metric)}**",
            "",
            "| class | " + " | ".join(labels) + " |",
            "|---" * (len(labels) + 1) + "|",
        ]
        for row in rows:
            name = "overall (mean over classes)" if row == "mean" else row
            cells = [f"{tables[label][metric][row]:.{digits}f}" for label in labels]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    text = "\n\n".join(blocks) + "\n"
    if output is not None:
        write_text(output, text)
    print(text)
    return text


def _predict(run: Mapping[str, Any], overrides: Mapping[str, Any], items: Sequence[dict], device: torch.device):
    """Class-index maps of a run's network for ``items``, at each label's own size."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json"), *run.get("configs", [])])
    parser.update({**overrides, **run.get("overrides", {}), "device": f"$torch.device('{device}')"})
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(run["ckpt"], map_location=device, weights_only=True))
    network.eval()
    preprocessing = parser.get_parsed_content("preprocessing")
    maps = []
    with torch.no_grad():
        for item in items:
            data = preprocessing(dict(item))
            logits = network(data["image"].as_tensor()[None].to(device))
            probs = torch.nn.functional.interpolate(logits.softmax(1), size=data["label"].shape[1:], mode="bilinear")
            maps.append(probs.argmax(1)[0].cpu().numpy())
    return maps, parser


def figure(
    dataset_dir: str,
    runs: Mapping[str, Mapping[str, Any]],
    output: str = "bundles/sagan_seg/docs/predictions.png",
    num_images: int = 4,
    split: str = "test",
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """
    Plot the first ``num_images`` images of ``split``, their ground truth and every run's prediction.

    Args:
        dataset_dir: the dataset folder.
        runs: column label -> ``{"ckpt": generator weights (model.pt), "configs": [config files merged over
            train.json + evaluate.json, e.g. unet_baseline.json], "overrides": {config overrides}}``.
        output: the PNG file to write.
        num_images: how many images (rows).
        split: the dataset split.
        overrides: config overrides shared by all runs (``channels``, ``spatial_size``, ``label_values``, ...).

    Returns:
        the path written.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shared = {"dataset_dir": dataset_dir, **(overrides or {})}
    items = load_datalist(dataset_dir, split)[:num_images]
    columns: dict[str, list[np.ndarray]] = {}
    parser = None
    for label, run in runs.items():
        maps, parser = _predict(run, shared, items, device)
        columns[label] = maps
    assert parser is not None, "runs must name at least one run"
    preprocessing = parser.get_parsed_content("preprocessing")
    loader = LoadImage(image_only=True, ensure_channel_first=True)
    images, truths = [], []
    for item in items:
        images.append(np.asarray(loader(item["image"]))[0])
        truths.append(np.asarray(preprocessing(dict(item))["label"])[0].astype(int))
    # MONAI's PIL reader puts the image's columns first; transpose everything back to display orientation
    images = [img.T for img in images]
    columns = {"ground truth": [t.T for t in truths], **{k: [m.T for m in v] for k, v in columns.items()}}
    path = plot_segmentations(
        images,
        columns,
        output,
        class_names=parser["class_names"],
        row_titles=[Path(item["image"]).name for item in items],
    )
    print(path)
    return str(path)


if __name__ == "__main__":
    fire.Fire({"table": table, "figure": figure})
