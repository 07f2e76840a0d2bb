"""
The deep input transfer study (Taghanaki et al., MICCAI 2019) on one dataset: every stage of
``bundles/gp_input_transfer``, then the paper's Table 1 (mean and standard error of Dice, FPR and FNR per image) and
its Fig. 4 (kernel density estimates). Beside each method's mean, the table gives its paired difference from ORIG:
the mean over the test images of (method - ORIG) on the same image, its paired standard error and how many images
it made better and worse.

Stages, each a ``python -m monai.bundle run`` of the bundle's configs (the command lines are logged), into
``<work_dir>/<name>`` as the bundle root:

1. ``train.json``: the U-Net segmenter, ORIG;
2. ``train.json + perturb.json``: the GP training set, gamma 1 (GP_Ts) and gamma 0.1 (GP_T), K steps;
3. ``train.json + translator.json``: the FC-DenseNet translator on each, SSIM + L1 (GP_Ts) and L1 (GP_T);
4. ``train.json + control.json``: the same translator trained end to end in front of the frozen segmenter;
5. ``evaluate*.json``: ORIG, GP_T, GP_Ts, the control and the oracle (GP of the test images toward their own labels)
   on the test split.

A killed study run again goes on where it stopped: a finished stage is skipped, an unfinished training resumes from
its ``checkpoint.pt``, the GP writer resumes its items. ``--tables_from FILE.json`` runs no stage: it rewrites the
table (``FILE.md``) and the paired differences in ``FILE.json`` from the per-image values a study wrote before.

Example (the sizes of the CPU runs of bundles/gp_input_transfer/docs/README.md)::

    python scripts/gp_study.py --dataset_dir ../shared/datasets/jsrt_scr_224 --name jsrt_scr_224 \
        --overrides "{'spatial_size': [96, 96], 'channels': [16, 32, 64, 128], 'strides': [2, 2, 2], \
'num_res_units': 1, 'translator_layers': 56, 'growth_rate': 8, 'init_features': 16, 'batch_size': 8}" \
        --epochs 40 --translator_epochs 20
    python scripts/gp_study.py --tables_from bundles/gp_input_transfer/docs/results/jsrt_scr_224_gp_study.json
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import run

from monai_ext.metrics import mean_standard_error
from monai_ext.utils import write_json, write_text
from monai_ext.visualize import plot_metric_densities

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "gp_input_transfer" / "configs"
#: the methods of the table, in its row order, with the paper's names
METHODS = {"orig": "ORIG", "gp_t": "GP_T", "gp_ts": "GP_Ts", "control": "control (end to end)", "oracle": "oracle"}
#: GP's step of the perturbed training set of each translator (the paper's GP_T: 0.1, GP_Ts: 1.0)
GAMMAS = {"gp_t": 0.1, "gp_ts": 1.0}
LOSSES = {"gp_t": "l1", "gp_ts": "ssim_l1"}
#: the table's metrics, each with whether a higher value is better
METRICS = {"dice": True, "fpr": False, "fnr": False}
#: how the per-image values of two methods are paired
PAIRING = (
    "by position: every evaluation scores the test split in its datalist order (unshuffled, batch 1), "
    "so the i-th value of every method is the same image"
)

logger = logging.getLogger("gp_study")


def _chain(*names: str) -> list[str]:
    """The bundle's config files ``train.json`` + ``names``, later ones overriding earlier ones."""
    return [str(CONFIGS / f"{name}.json") for name in ("train", *names)]


def _shell_value(value: Any) -> str:
    """One value as a shell word that ``monai.bundle run`` (python-fire) reads back as the same Python value."""
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str) and shlex.quote(text) == text:
        return text
    return f'"{text}"' if not any(c in text for c in '$"`\\!') else shlex.quote(text)


def _command(config: list[str], overrides: Mapping[str, Any]) -> str:
    """The ``python -m monai.bundle run ...`` command line of ``run(config_file=config, **overrides)``."""
    files = config[0] if len(config) == 1 else repr(config)
    args = " ".join(f"--{k} {_shell_value(v)}" for k, v in overrides.items())
    return f"python -m monai.bundle run --config_file {_shell_value(files)} {args}"


def _run(config: list[str], overrides: Mapping[str, Any], seconds: dict[str, float], stage: str) -> None:
    logger.info("%s: %s", stage, _command(config, overrides))
    start = time.perf_counter()
    run(config_file=config[0] if len(config) == 1 else config, **overrides)
    seconds[stage] = round(time.perf_counter() - start, 1)


def _training_state(ckpt_dir: Path, epochs: int) -> str:
    """``"done"`` (a model and a checkpoint at ``epochs``), ``"resume"`` (a checkpoint before it) or ``"new"``."""
    checkpoint = ckpt_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        return "new"
    trainer = torch.load(checkpoint, map_location="cpu", weights_only=True)["trainer"]  # ignite's state dict
    epoch = trainer["iteration"] // trainer["epoch_length"]
    return "done" if epoch >= epochs and (ckpt_dir / "model.pt").is_file() else "resume"


def _train(config: list[str], common: dict, ckpt_dir: Path, epochs: int, seconds: dict, stage: str, **extra) -> None:
    state = _training_state(ckpt_dir, epochs)
    if state != "done":
        _run(config, {**common, **extra, "epochs": epochs, "resume": state == "resume"}, seconds, stage)


def study(
    dataset_dir: str | None = None,
    name: str = "synthetic",
    work_dir: str = "bundles/gp_input_transfer/study",
    overrides: Mapping[str, Any] | None = None,
    epochs: int = 60,
    translator_epochs: int | None = None,
    control_epochs: int | None = None,
    methods: tuple[str, ...] | list[str] = tuple(METHODS),
    tables_from: str | None = None,
) -> str:
    """
    Run every stage of the study on one dataset and write ``<work_dir>/<name>/gp_study.{md,json}`` (Table 1) and
    ``gp_study_kde.png`` (Fig. 4).

    Args:
        dataset_dir: the dataset folder; ``None``: the bundle's synthetic default data.
        name: the study's name, its folder under ``work_dir``.
        work_dir: where the studies go.
        overrides: config overrides of every stage (``spatial_size``, ``channels``, ``label_values``, ...).
        epochs: training epochs of the segmenter.
        translator_epochs: of each translator (``None``: ``epochs``).
        control_epochs: of the end-to-end control (``None``: ``translator_epochs``).
        methods: the rows to produce, names of ``METHODS``.
        tables_from: a study's JSON written before (``gp_study.json``, or a copy of it under another name): run no
            stage, and rewrite its table (the ``.md`` beside it, same stem) and the paired differences it holds from
            its per-image values. Every other argument is then ignored.

    Returns:
        the markdown table (fire prints it).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    if tables_from is not None:
        return _rewrite_tables(Path(tables_from))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}.")
    translator_epochs = epochs if translator_epochs is None else translator_epochs
    control_epochs = translator_epochs if control_epochs is None else control_epochs
    root = Path(work_dir) / name
    common = {
        "bundle_root": str(root),
        **({"dataset_dir": dataset_dir} if dataset_dir else {}),
        **dict(overrides or {}),
    }
    results_path = root / "gp_study.json"
    seconds: dict[str, float] = (
        json.loads(results_path.read_text()).get("seconds", {}) if results_path.is_file() else {}
    )

    _train(_chain(), common, root / "models", epochs, seconds, "train ORIG")
    for method in ("gp_ts", "gp_t"):
        if method in methods:
            gp = {"gp_gamma": GAMMAS[method]}
            _run(_chain("perturb"), {**common, **gp}, seconds, f"perturb gamma {GAMMAS[method]}")  # resumes
            _train(_chain("translator"), common, root / "models" / method, translator_epochs, seconds,
                   f"train {METHODS[method]}", translator_loss=LOSSES[method], **gp)  # fmt: skip
    if "control" in methods:
        _train(_chain("control"), common, root / "models" / "control", control_epochs, seconds, "train control")
    results: dict[str, dict] = {}
    for method in methods:
        eval_dir = root / "eval" / method
        if not (eval_dir / "summary.json").is_file():
            config = _chain("evaluate") if method == "orig" else _chain("evaluate", f"evaluate_{method}")
            gp = {"gp_gamma": GAMMAS["gp_ts"]} if method == "oracle" else {}
            _run(config, {**common, **gp}, seconds, f"evaluate {METHODS[method]}")
        summary = json.loads((eval_dir / "summary.json").read_text())
        values = json.loads((eval_dir / "per_image.json").read_text())["values"]
        results[method] = {"label": METHODS[method], "summary": summary["metrics"], "values": values}
        if method == "oracle":
            results[method]["gp"] = json.loads((eval_dir / "gp.json").read_text())

    _add_paired(results)
    table = _table(results, name)
    write_text(root / "gp_study.md", table)
    plot_metric_densities(
        {r["label"]: r["values"] for m, r in results.items() if m != "oracle"},
        root / "gp_study_kde.png",
        title=f"{name}: kernel density estimates over the test images",
    )
    study_results = {"name": name, "dataset_dir": dataset_dir, "overrides": common, "seconds": seconds}
    write_json(results_path, {**study_results, "pairing": PAIRING, "results": results})
    return table


def paired_difference(values: list[float], baseline: list[float], higher_is_better: bool = True) -> dict[str, Any]:
    """
    The paired difference of one method from a baseline over the same images, ``values[i]`` and ``baseline[i]``
    being one image: ``{"mean", "standard_error", "std", "n"}`` of ``values - baseline``
    (:func:`monai_ext.metrics.mean_standard_error`; images where either is undefined are left out) and the number of
    images the method made ``better``, ``worse`` and left ``equal``.

    Raises:
        ValueError: the two hold different numbers of images.
    """
    if len(values) != len(baseline):
        raise ValueError(f"cannot pair {len(values)} per-image values with {len(baseline)} of the baseline.")
    diffs = [a - b for a, b in zip(values, baseline) if math.isfinite(a) and math.isfinite(b)]
    sign = 1 if higher_is_better else -1
    better = sum(sign * d > 0 for d in diffs)
    worse = sum(sign * d < 0 for d in diffs)
    return {**mean_standard_error(diffs), "better": better, "worse": worse, "equal": len(diffs) - better - worse}


def _add_paired(results: dict[str, dict], baseline: str = "orig") -> None:
    """Each method's ``paired`` differences from ``baseline`` per metric, in place (``None`` for the baseline)."""
    if baseline not in results:
        return
    reference = results[baseline]["values"]
    for method, result in results.items():
        result["paired"] = None if method == baseline else {
            metric: paired_difference(result["values"][metric], reference[metric], higher)
            for metric, higher in METRICS.items()
        }  # fmt: skip


def _rewrite_tables(path: Path) -> str:
    """Rewrite the table (``path`` with suffix ``.md``) and the paired differences of a study's JSON ``path``."""
    data = json.loads(path.read_text())
    name = data.get("name") or Path(data["overrides"]["bundle_root"]).name
    _add_paired(data["results"])
    table = _table(data["results"], name)
    write_text(path.with_suffix(".md"), table)
    write_json(
        path, {**{k: v for k, v in data.items() if k != "results"}, "pairing": PAIRING, "results": data["results"]}
    )
    return table


def _table(results: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """
    Table 1's rows: mean +- standard error of Dice, FPR and FNR per method, the number of images, and beside each
    metric the method's paired difference from ORIG (mean +- paired standard error, images better / worse).
    """
    caption = (
        f'**{name}**: mean +- standard error over the test images; "- ORIG": the mean over the same images of '
        "(method - ORIG) +- its paired standard error (standard deviation of the differences / sqrt(n)), "
        "and how many images the method made better / worse than ORIG (lower is better for FPR and FNR)"
    )
    lines = [
        caption,
        "",
        "| method | images | Dice | Dice - ORIG | FPR | FPR - ORIG | FNR | FNR - ORIG |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results.values():
        cells = []
        for metric in METRICS:
            summary, paired = result["summary"][metric], (result.get("paired") or {}).get(metric)
            cells.append(f"{summary['mean']:.4f} +- {summary['standard_error']:.4f}")
            cells.append(
                f"{paired['mean']:+.4f} +- {paired['standard_error']:.4f} ({paired['better']} / {paired['worse']})"
                if paired
                else ""
            )
        lines.append(f"| {result['label']} | {result['summary']['dice']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    fire.Fire(study)
