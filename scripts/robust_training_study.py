"""
The robust training paper's study (Tables 1 and 2) on a dataset folder, with the bundle ``bundles/robust_training``:

1. train model 1 on the clean training split (``train.json``);
2. build the method-1 (layered PGD) and method-2 (sign-selection FGSM) datasets from model 1
   (``build_layered_pgd.json``, ``build_sign_selection.json``);
3. train model 2 on method-1 data, model 3 on method-2 data, model 4 on clean + both with a third of the epochs, and
   model 5 with online PGD adversarial training (``train_layered_pgd.json``, ``train_sign_selection.json``,
   ``train_combined.json``, ``train_pgd.json``);
4. evaluate every model on the test split, clean, under targeted PGD toward full-area background and under
   untargeted PGD with random start (``evaluate.json`` + ``evaluate_attacks.json``);
5. gather ``<work_dir>/robust_training_study.{md,json,png}``: one table (loss, pixel accuracy, Dice and Jaccard per
   class, per model and condition, with what an all-background prediction scores) and one plot of the five models.

Every step is the bundle's own config chain run through ``monai.bundle.run`` with the same overrides (``bundle_root``
is ``work_dir``, plus every extra ``--key value`` given here, e.g. ``--spatial_size "[96, 96]"``), and is logged as
the ``python -m monai.bundle run ...`` command that reproduces it. A step whose output is complete is skipped; a
killed training run resumes from its checkpoint, a killed dataset build or evaluation continues where it stopped.

Example (the documented run on the nuclei of the 2018 Data Science Bowl, see the bundle's docs)::

    python scripts/robust_training_study.py --dataset_dir ../shared/datasets/dsb2018_stage1_train \
        --work_dir bundles/robust_training/study/dsb2018 --num_classes 2 --label_values "[0, 255]" \
        --class_names "[background, nucleus]" --spatial_size "[96, 96]" --epochs 12
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import run

from monai_ext.engines import evaluation_table
from monai_ext.utils import write_json, write_text
from monai_ext.visualize import plot_condition_bars

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "robust_training" / "configs"

#: the five models: name -> (label, config chain after train.json, checkpoint folder under work_dir)
MODELS: dict[str, tuple[str, list[str], str]] = {
    "clean": ("model 1: clean", [], "models"),
    "layered_pgd": ("model 2: layered PGD", ["train_layered_pgd"], "models/layered_pgd"),
    "sign_selection": ("model 3: sign selection", ["train_sign_selection"], "models/sign_selection"),
    "combined": ("model 4: clean + both", ["train_combined"], "models/combined"),
    "pgd_training": ("model 5: PGD training", ["train_pgd"], "models/pgd_training"),
}
#: the adversarial datasets: name -> build config, folder under work_dir
DATASETS: dict[str, tuple[str, str]] = {
    "layered_pgd": ("build_layered_pgd", "adversarial/layered_pgd"),
    "sign_selection": ("build_sign_selection", "adversarial/sign_selection"),
}
CONDITIONS = ("clean", "pgd_background", "pgd_untargeted")

logger = logging.getLogger("robust_training_study")


def _chain(*names: str) -> list[str]:
    """The bundle's config files ``train.json`` + ``names``, later ones overriding earlier ones."""
    return [str(CONFIGS / f"{name}.json") for name in ("train", *names)]


def _shell_value(value: Any) -> str:
    """One override as a shell word that python-fire reads back as the same value (Python literals for non-strings)."""
    text = value if isinstance(value, str) else repr(value)
    return text if isinstance(value, str) and shlex.quote(text) == text else shlex.quote(text)


def _run(config: list[str], overrides: dict[str, Any]) -> None:
    args = " ".join(f"--{k} {_shell_value(v)}" for k, v in overrides.items())
    logger.info("running: python -m monai.bundle run --config_file %s %s", _shell_value(repr(config)), args)
    run(config_file=config, **overrides)


def _unfinished(checkpoint: Path) -> bool:
    """Whether a training run's ``checkpoint.pt`` exists and holds fewer iterations than the run's ``max_epochs``."""
    if not checkpoint.is_file():
        return False
    trainer = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["trainer"]
    return trainer["iteration"] < trainer["max_epochs"] * trainer["epoch_length"]


def _train(name: str, work: Path, common: dict[str, Any]) -> None:
    _, configs, folder = MODELS[name]
    ckpt = work / folder / "model.pt"
    resume = _unfinished(ckpt.parent / "checkpoint.pt")
    if not ckpt.is_file() or resume:
        _run(_chain(*configs), {**common, "resume": resume})


def _complete(path: Path) -> bool:
    return path.is_file() and json.loads(path.read_text()).get("complete", False)


def study(
    dataset_dir: str | None = None,
    work_dir: str = "bundles/robust_training/study",
    models: list[str] | tuple[str, ...] = tuple(MODELS),
    **overrides: Any,
) -> str:
    """
    Run every stage for ``dataset_dir`` (``None``: the bundle's synthetic default data) into ``work_dir``, then write
    the table and the plot.

    Args:
        dataset_dir: the dataset folder (``dataset.json`` or ``images/`` + ``masks/``).
        work_dir: the bundle root of the study: ``models/``, ``adversarial/``, ``eval/<model>/``, the summary files.
        models: names from ``MODELS`` to train and evaluate (model 1 and the datasets are built when any needs them).
        overrides: more bundle overrides for every stage (sizes, epochs, label mapping, attack budgets ...).

    Returns:
        the markdown table.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)}.")
    work = Path(work_dir)
    common = {"bundle_root": str(work), **({"dataset_dir": dataset_dir} if dataset_dir else {}), **overrides}

    _train("clean", work, common)
    needs = {"layered_pgd": ["layered_pgd"], "sign_selection": ["sign_selection"]}
    needs["combined"] = ["layered_pgd", "sign_selection"]
    for dataset in dict.fromkeys(d for m in models for d in needs.get(m, [])):
        config, folder = DATASETS[dataset]
        if not (work / folder / "dataset.json").is_file():
            _run(_chain(config), common)
    for name in models:
        _train(name, work, common)

    results: dict[str, dict[str, Any]] = {}
    for name in models:
        label, _, folder = MODELS[name]
        eval_dir = work / "eval" / name
        if not _complete(eval_dir / "attack_evaluation.json"):
            paths = {"ckpt_path": str(work / folder / "model.pt"), "eval_dir": str(eval_dir), "model_label": label}
            _run(_chain("evaluate", "evaluate_attacks"), {**common, **paths})
        results[label] = json.loads((eval_dir / "attack_evaluation.json").read_text())
    return report(results, work)


def report(results: dict[str, dict[str, Any]], work: Path) -> str:
    """
    Write ``robust_training_study.{json,md,png}`` into ``work`` from each model's ``attack_evaluation.json``.

    Args:
        results: model label -> the content of its ``attack_evaluation.json``.
        work: the output folder.

    Returns:
        the markdown table.
    """
    class_names = next(iter(results.values()))["class_names"]
    rows = {f"{label}, {c}": r["results"][c] for label, r in results.items() for c in r["results"]}
    table = evaluation_table(
        rows, class_names, scalars=("loss", "pixel_accuracy", "mean_dice"), title="model, condition"
    )
    background = {c: r["background_pixel_accuracy"] for c, r in next(iter(results.values()))["results"].items()}
    note = (
        f"\nAn all-background prediction scores pixel accuracy {background['clean']:.4f} on these images "
        "(mean_dice: foreground classes only; loss: cross-entropy).\n"
    )
    write_text(work / "robust_training_study.md", table + note)
    write_json(work / "robust_training_study.json", results)
    by_model = {label: r["results"] for label, r in results.items()}
    plot_condition_bars(
        by_model,
        work / "robust_training_study.png",
        metrics={"pixel_accuracy": "pixel accuracy", "mean_dice": "mean foreground Dice"},
        baselines={"pixel_accuracy": background["clean"]},
    )
    return table + note  # fire prints it


if __name__ == "__main__":
    fire.Fire(study)
