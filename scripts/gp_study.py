"""
The deep input transfer study (Taghanaki et al., MICCAI 2019) on one dataset: every stage of
``bundles/gp_input_transfer``, then the paper's Table 1 (mean and standard error of Dice, FPR and FNR per image) and
its Fig. 4 (kernel density estimates).

Stages, each a ``python -m monai.bundle run`` of the bundle's configs (the command lines are logged), into
``<work_dir>/<name>`` as the bundle root:

1. ``train.json``: the U-Net segmenter, ORIG;
2. ``train.json + perturb.json``: the GP training set, gamma 1 (GP_Ts) and gamma 0.1 (GP_T), K steps;
3. ``train.json + translator.json``: the FC-DenseNet translator on each, SSIM + L1 (GP_Ts) and L1 (GP_T);
4. ``train.json + control.json``: the same translator trained end to end in front of the frozen segmenter;
5. ``evaluate*.json``: ORIG, GP_T, GP_Ts, the control and the oracle (GP of the test images toward their own labels)
   on the test split.

A killed study run again goes on where it stopped: a finished stage is skipped, an unfinished training resumes from
its ``checkpoint.pt``, the GP writer resumes its items.

Example (the sizes of the CPU runs of bundles/gp_input_transfer/docs/README.md)::

    python scripts/gp_study.py --dataset_dir ../shared/datasets/jsrt_scr_224 --name jsrt_scr_224 \
        --overrides "{'spatial_size': [96, 96], 'channels': [16, 32, 64, 128], 'strides': [2, 2, 2], \
'num_res_units': 1, 'translator_layers': 56, 'growth_rate': 8, 'init_features': 16, 'batch_size': 8}" \
        --epochs 40 --translator_epochs 20
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import run

from monai_ext.utils import write_json, write_text
from monai_ext.visualize import plot_metric_densities

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "gp_input_transfer" / "configs"
#: the methods of the table, in its row order, with the paper's names
METHODS = {"orig": "ORIG", "gp_t": "GP_T", "gp_ts": "GP_Ts", "control": "control (end to end)", "oracle": "oracle"}
#: GP's step of the perturbed training set of each translator (the paper's GP_T: 0.1, GP_Ts: 1.0)
GAMMAS = {"gp_t": 0.1, "gp_ts": 1.0}
LOSSES = {"gp_t": "l1", "gp_ts": "ssim_l1"}

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

    Returns:
        the markdown table (fire prints it).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
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

    table = _table(results, name)
    write_text(root / "gp_study.md", table)
    plot_metric_densities(
        {r["label"]: r["values"] for m, r in results.items() if m != "oracle"},
        root / "gp_study_kde.png",
        title=f"{name}: kernel density estimates over the test images",
    )
    write_json(results_path, {"dataset_dir": dataset_dir, "overrides": common, "seconds": seconds, "results": results})
    return table


def _table(results: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """Table 1's rows: mean +- standard error of Dice, FPR and FNR per method, with the number of images."""
    lines = [
        f"**{name}**: mean +- standard error over the test images",
        "",
        "| method | Dice | FPR | FNR | images |",
        "|---|---|---|---|---|",
    ]
    for result in results.values():
        cells = [
            f"{s['mean']:.4f} +- {s['standard_error']:.4f}"
            for s in (result["summary"][m] for m in ("dice", "fpr", "fnr"))
        ]
        lines.append(f"| {result['label']} | " + " | ".join(cells) + f" | {result['summary']['dice']['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    fire.Fire(study)
