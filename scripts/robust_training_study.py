"""
The robust training paper's study (Tables 1 and 2) on a dataset folder, with the bundle ``bundles/robust_training``:

1. train model 1 on the clean training split (``train.json``);
2. build the method-1 (layered PGD) and method-2 (sign-selection FGSM) datasets from model 1
   (``build_layered_pgd.json``, ``build_sign_selection.json``), and the draft's perturbed test set: the test images
   under model 1's PGD-100 toward full-area background, built once (``build_perturbed_test.json``);
3. train model 2 on method-1 data, model 3 on method-2 data, model 4 on clean + both with a third of the epochs, and
   model 5 with online PGD adversarial training (``train_layered_pgd.json``, ``train_sign_selection.json``,
   ``train_combined.json``, ``train_pgd.json``);
4. evaluate every model on the test split, clean, under targeted PGD toward full-area background and under
   untargeted PGD with random start through its own gradients (white-box: ``evaluate.json`` +
   ``evaluate_attacks.json``), and on the one perturbed test set of step 2, as the draft evaluates
   (``evaluate_attacks_perturbed_test.json``);
5. gather into ``work_dir``: ``robust_training_study.json`` (each model's white-box evaluation),
   ``robust_training_study_perturbed_test.json`` (each model on the perturbed test set), ``robust_training_study.md``
   (both tables with what an all-background prediction scores, the paired differences of every model from model 1
   per condition with their paired standard errors, the ranking of the models under each evaluation),
   ``robust_training_study_paired.json`` (those differences and rankings), ``robust_training_study_runs.json`` (what
   the results came from: the dataset, the overrides, the SHA-256 of each model's weights file, the perturbed test
   set's build settings, and each stage's command and wall time) and ``robust_training_study.png`` (the five models).

Every step is the bundle's own config chain run through ``monai.bundle.run`` with the same overrides (``bundle_root``
is ``work_dir``, plus every extra ``--key value`` given here, e.g. ``--spatial_size "[96, 96]"``), and is logged as
the ``python -m monai.bundle run ...`` command that reproduces it. A step whose output is complete is skipped; a
killed training run resumes from its checkpoint, a killed dataset build or evaluation continues where it stopped.

``--reuse DIR`` takes model 1, the method-2 dataset and the perturbed test set of the finished study ``DIR`` (model
1's weights copied, the datasets linked) and the evaluations of the models not named in ``--models``, so that one
choice can be rerun against the same model 1: the bundle's second reading of method 1, for instance, with models 2
and 4 retrained on it (``--models "[layered_pgd, combined]" --build_per_pass_ball False --tag "one ball"``); the
paired table then also compares each retrained model with its namesake in ``DIR``.

Example (the documented run on the nuclei of the 2018 Data Science Bowl, see the bundle's docs)::

    python scripts/robust_training_study.py --dataset_dir ../shared/datasets/dsb2018_stage1_train \
        --work_dir bundles/robust_training/study/dsb2018 --num_classes 2 --label_values "[0, 255]" \
        --class_names "[background, nucleus]" --spatial_size "[96, 96]" --epochs 12
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import run

from monai_ext.engines import evaluation_table
from monai_ext.metrics import paired_difference
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
#: the datasets built from model 1: name -> build config, folder under work_dir
DATASETS: dict[str, tuple[str, str]] = {
    "layered_pgd": ("build_layered_pgd", "adversarial/layered_pgd"),
    "sign_selection": ("build_sign_selection", "adversarial/sign_selection"),
    "perturbed_test": ("build_perturbed_test", "adversarial/pgd_background_test"),
}
#: the datasets each model's training needs
NEEDS: dict[str, list[str]] = {
    "layered_pgd": ["layered_pgd"],
    "sign_selection": ["sign_selection"],
    "combined": ["layered_pgd", "sign_selection"],
}
#: the white-box conditions (each model attacked through its own gradients) and the one perturbed test set
CONDITIONS = ("clean", "pgd_background", "pgd_untargeted")
PERTURBED = "perturbed_test"
#: the per-image metrics of the evaluations (``evaluate.json``) the paired differences are taken over
PER_IMAGE = {"mean_dice": "mean_dice_per_image", "pixel_accuracy": "pixel_accuracy_per_image"}
#: how the per-image values are paired
PAIRING = (
    "by position: every evaluation scores the first max_images test images in the datalist order (unshuffled), and "
    "the perturbed test set holds them in the same order, so the i-th value of every model and condition is one image"
)

logger = logging.getLogger("robust_training_study")


def _chain(*names: str) -> list[str]:
    """The bundle's config files ``train.json`` + ``names``, later ones overriding earlier ones."""
    return [str(CONFIGS / f"{name}.json") for name in ("train", *names)]


def _shell_value(value: Any) -> str:
    """One override as a shell word that python-fire reads back as the same value (Python literals for non-strings)."""
    text = value if isinstance(value, str) else repr(value)
    return text if isinstance(value, str) and shlex.quote(text) == text else shlex.quote(text)


def _run(stage: str, config: list[str], overrides: dict[str, Any], stages: dict[str, dict[str, Any]]) -> None:
    """Run one stage and record its command and wall time (seconds) in ``stages[stage]``."""
    args = " ".join(f"--{k} {_shell_value(v)}" for k, v in overrides.items())
    files = [os.path.relpath(c) for c in config]  # the command as run from the repository root, not this machine's
    command = f"python -m monai.bundle run --config_file {_shell_value(repr(files))} {args}"
    logger.info("%s: running %s", stage, command)
    start = time.perf_counter()
    run(config_file=config, **overrides)
    stages[stage] = {"command": command, "seconds": round(time.perf_counter() - start, 1)}
    logger.info("%s: done in %.1f s", stage, stages[stage]["seconds"])


def _unfinished(checkpoint: Path) -> bool:
    """Whether a training run's ``checkpoint.pt`` exists and holds fewer iterations than the run's ``max_epochs``."""
    if not checkpoint.is_file():
        return False
    trainer = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["trainer"]
    return trainer["iteration"] < trainer["max_epochs"] * trainer["epoch_length"]


def _train(name: str, work: Path, common: dict[str, Any], stages: dict[str, dict[str, Any]]) -> None:
    label, configs, folder = MODELS[name]
    ckpt = work / folder / "model.pt"
    resume = _unfinished(ckpt.parent / "checkpoint.pt")
    if not ckpt.is_file() or resume:
        _run(f"train {label}", _chain(*configs), {**common, "resume": resume}, stages)


def _complete(path: Path) -> bool:
    return path.is_file() and json.loads(path.read_text()).get("complete", False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reuse(base: Path, work: Path) -> None:
    """Take model 1 (its weights, copied) and the datasets built from it but method 1 (linked) from the study ``base``."""
    source = base / MODELS["clean"][2] / "model.pt"
    if not source.is_file():
        raise FileNotFoundError(f"{base} holds no model 1 ({source}): run that study first.")
    target = work / MODELS["clean"][2] / "model.pt"
    if target.is_file() and _sha256(target) != _sha256(source):
        raise ValueError(f"{target} is another model 1 than {source}: use another work_dir.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    for name in ("sign_selection", PERTURBED):
        folder = DATASETS[name][1]
        if not (work / folder).exists():
            (work / folder).parent.mkdir(parents=True, exist_ok=True)
            os.symlink((base / folder).resolve(), work / folder, target_is_directory=True)


def study(
    dataset_dir: str | None = None,
    work_dir: str = "bundles/robust_training/study",
    models: list[str] | tuple[str, ...] = tuple(MODELS),
    reuse: str | None = None,
    tag: str | None = None,
    **overrides: Any,
) -> str:
    """
    Run every stage for ``dataset_dir`` (``None``: the bundle's synthetic default data) into ``work_dir``, then write
    the tables, the paired differences, the record of the runs and the plot.

    Args:
        dataset_dir: the dataset folder (``dataset.json`` or ``images/`` + ``masks/``).
        work_dir: the bundle root of the study: ``models/``, ``adversarial/``, ``eval/<model>/``, the summary files.
        models: names from ``MODELS`` to train and evaluate (model 1 and the datasets are built when any needs them).
        reuse: a finished study's ``work_dir`` to take model 1, the method-2 dataset, the perturbed test set and the
            evaluations of the models not in ``models`` from (see the module's docstring).
        tag: with ``reuse``, added to the labels of the models trained here (``"model 2: layered PGD (one ball)"``).
        overrides: more bundle overrides for every stage (sizes, epochs, label mapping, attack budgets ...).

    Returns:
        the markdown table of the white-box evaluation.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)}.")
    if tag is not None and reuse is None:
        raise ValueError("tag names the models retrained against a reused study: give reuse too.")
    work, base = Path(work_dir), None if reuse is None else Path(reuse)
    common = {"bundle_root": str(work), **({"dataset_dir": dataset_dir} if dataset_dir else {}), **overrides}
    runs_file = work / "robust_training_study_runs.json"
    stages = json.loads(runs_file.read_text())["stages"] if runs_file.is_file() else {}
    if base is not None:
        _reuse(base, work)

    _train("clean", work, common, stages)
    for dataset in dict.fromkeys([*(d for m in models for d in NEEDS.get(m, [])), PERTURBED]):
        config, folder = DATASETS[dataset]
        if not (work / folder / "dataset.json").is_file():
            _run(f"build {dataset}", _chain(config), common, stages)
    for name in models:
        _train(name, work, common, stages)

    white_box: dict[str, dict[str, Any]] = {}
    perturbed: dict[str, dict[str, Any]] = {}
    weights: dict[str, dict[str, str]] = {}
    reused: dict[str, str] = {}
    for name, (label, _, folder) in MODELS.items():
        if name not in models:
            if base is None or not _complete(base / "eval" / name / "attack_evaluation.json"):
                continue
            eval_dir, source, ckpt = base / "eval" / name, base, base / folder / "model.pt"
        else:
            eval_dir, source, ckpt = work / "eval" / name, work, work / folder / "model.pt"
            label = label if tag is None else f"{label} ({tag})"
            paths = {"ckpt_path": str(ckpt), "eval_dir": str(eval_dir), "model_label": label}
            if not _complete(eval_dir / "attack_evaluation.json"):
                _run(f"evaluate {label}", _chain("evaluate", "evaluate_attacks"), {**common, **paths}, stages)
            if not _complete(eval_dir / "perturbed_test_evaluation.json"):
                chain = _chain("evaluate", "evaluate_attacks", "evaluate_attacks_perturbed_test")
                _run(f"evaluate {label} on the perturbed test set", chain, {**common, **paths}, stages)
        white_box[label] = json.loads((eval_dir / "attack_evaluation.json").read_text())
        perturbed[label] = json.loads((eval_dir / "perturbed_test_evaluation.json").read_text())
        weights[label] = {"file": str(ckpt), "sha256": _sha256(ckpt)}
        if source is base:
            reused[label] = str(base / "eval" / name)
    settings = json.loads((work / DATASETS[PERTURBED][1] / "settings.json").read_text())
    runs = {
        "dataset_dir": dataset_dir,
        "overrides": overrides,
        "reuse": reuse,
        "weights": weights,
        "evaluations_taken_from_reuse": reused,
        "perturbed_test_set": {"folder": str(work / DATASETS[PERTURBED][1]), "settings": settings},
        "stages": stages,
    }
    write_json(runs_file, runs)
    baseline = None if base is None else _read_results(base)
    return report(white_box, perturbed, work, baseline)


def _read_results(work: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The white-box and perturbed-test results of a finished study, by model label (for the paired comparison)."""
    white_box = json.loads((work / "robust_training_study.json").read_text())
    perturbed = json.loads((work / "robust_training_study_perturbed_test.json").read_text())
    return {label: {**white_box[label]["results"], **perturbed[label]["results"]} for label in white_box}


def _per_image(metrics: dict[str, Any], metric: str) -> list[float]:
    values = metrics[PER_IMAGE[metric]]
    return [float(v) for v in (values if isinstance(values, list) else [values])]


def paired_rows(
    results: dict[str, dict[str, dict[str, Any]]],
    reference: str,
    baseline: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """
    Per condition, each model's mean Dice and pixel accuracy and their paired differences from ``reference`` (model 1)
    on the same images; with ``baseline`` (the reused study's results), also each model's difference from the model
    of ``baseline`` whose label it extends (``"model 2: layered PGD (one ball)"`` from ``"model 2: layered PGD"``).

    Args:
        results: model label -> condition -> the evaluation's metrics (with the per-image lists of ``PER_IMAGE``).
        reference: the label of the model every other one is compared with.
        baseline: model label -> condition -> metrics of another study on the same images, or ``None``.

    Returns:
        one row per (condition, model, compared model): ``condition``, ``model``, ``versus``, and per metric
        ``<metric>`` (the model's mean) and ``<metric>_difference`` (:func:`monai_ext.metrics.paired_difference`).
    """
    rows = []
    for condition in (*CONDITIONS, PERTURBED):
        for label, by_condition in results.items():
            versus = [reference] if label != reference else []
            versus += [b for b in (baseline or {}) if label != b and label.startswith(f"{b} (")]
            for other in versus:
                compared = results.get(other) or baseline[other]
                row: dict[str, Any] = {"condition": condition, "model": label, "versus": other}
                for metric in PER_IMAGE:
                    row[metric] = by_condition[condition][metric]
                    row[f"{metric}_difference"] = paired_difference(
                        _per_image(by_condition[condition], metric), _per_image(compared[condition], metric)
                    )
                rows.append(row)
    return rows


def ranking(results: dict[str, dict[str, dict[str, Any]]], condition: str, metric: str) -> list[dict[str, Any]]:
    """
    The models from best to worst by the mean ``metric`` under ``condition``: per model its ``label``, ``mean`` and
    ``gap``, the paired difference (:func:`monai_ext.metrics.paired_difference`) of its per-image values from the next model's (``None``
    for the last), which says whether the two are told apart on these images.
    """
    order = sorted(results, key=lambda label: -results[label][condition][metric])
    values = [_per_image(results[label][condition], metric) for label in order]
    return [
        {
            "label": label,
            "mean": results[label][condition][metric],
            "gap": paired_difference(values[i], values[i + 1]) if i + 1 < len(order) else None,
        }
        for i, label in enumerate(order)
    ]


def _ranking_line(ranked: list[dict[str, Any]]) -> str:
    """``a (0.9382) > [+0.0099, SE 0.0034] b (0.9283) > ...``: each model's mean and the paired gap to the next."""
    parts = []
    for item in ranked:
        gap = item["gap"]
        after = "" if gap is None else f" > [{gap['mean']:+.4f}, SE {gap['standard_error']:.4f}]"
        parts.append(f"{item['label']} ({item['mean']:.4f}){after}")
    return " ".join(parts)


def _paired_table(rows: list[dict[str, Any]]) -> str:
    per_metric = ["difference (paired SE)", "images worse / better"]
    columns = ["condition", "model", "versus", "mean Dice", *per_metric, "pixel accuracy", *per_metric]
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        cells = [row["condition"], row["model"], row["versus"]]
        for metric in PER_IMAGE:
            diff = row[f"{metric}_difference"]
            cells += [f"{row[metric]:.4f}", f"{diff['mean']:+.4f} ({diff['standard_error']:.4f})",
                      f"{diff['worse']} / {diff['better']}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(
    white_box: dict[str, dict[str, Any]],
    perturbed: dict[str, dict[str, Any]],
    work: Path,
    baseline: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> str:
    """
    Write ``robust_training_study{.json,_perturbed_test.json,.md,_paired.json,.png}`` into ``work``.

    Args:
        white_box: model label -> the content of its ``attack_evaluation.json``.
        perturbed: model label -> the content of its ``perturbed_test_evaluation.json``.
        work: the output folder.
        baseline: the results of a reused study (:func:`paired_rows`), or ``None``.

    Returns:
        the markdown table of the white-box evaluation with what an all-background prediction scores.
    """
    class_names = next(iter(white_box.values()))["class_names"]
    rows = {f"{label}, {c}": r["results"][c] for label, r in white_box.items() for c in r["results"]}
    table = evaluation_table(
        rows, class_names, scalars=("loss", "pixel_accuracy", "mean_dice"), title="model, condition"
    )
    background = {c: r["background_pixel_accuracy"] for c, r in next(iter(white_box.values()))["results"].items()}
    note = (
        f"\nAn all-background prediction scores pixel accuracy {background['clean']:.4f} on these images "
        "(mean_dice: foreground classes only; loss: cross-entropy).\n"
    )
    fixed = evaluation_table(
        {f"{label}, {PERTURBED}": r["results"][PERTURBED] for label, r in perturbed.items()},
        class_names,
        scalars=("loss", "pixel_accuracy", "mean_dice"),
        title="model, condition",
    )
    results = {label: {**white_box[label]["results"], **perturbed[label]["results"]} for label in white_box}
    reference = next(label for label in results if label.startswith(MODELS["clean"][0]))
    paired = paired_rows(results, reference, baseline)
    rankings = {
        f"{condition} by {metric}": ranking(results, condition, metric)
        for condition in ("pgd_background", PERTURBED)
        for metric in PER_IMAGE
    }
    ranked = "\n".join(f"- {key}: {_ranking_line(items)}" for key, items in rankings.items())
    write_text(
        work / "robust_training_study.md",
        f"White-box: each model attacked through its own gradients.\n\n{table}{note}\n"
        f"The perturbed test set: the test images under model 1's PGD-100 toward background, built once.\n\n{fixed}\n"
        f"Paired differences over the same images ({PAIRING}):\n\n{_paired_table(paired)}\n"
        f"Rankings (mean; in brackets the paired difference from the next model, with its paired SE):\n\n{ranked}\n",
    )
    write_json(work / "robust_training_study.json", white_box)
    write_json(work / "robust_training_study_perturbed_test.json", perturbed)
    write_json(work / "robust_training_study_paired.json", {"pairing": PAIRING, "rows": paired, "rankings": rankings})
    by_model = {label: r["results"] for label, r in white_box.items()}
    plot_condition_bars(
        by_model,
        work / "robust_training_study.png",
        metrics={"pixel_accuracy": "pixel accuracy", "mean_dice": "mean foreground Dice"},
        baselines={"pixel_accuracy": background["clean"]},
    )
    return table + note  # fire prints it


if __name__ == "__main__":
    fire.Fire(study)
