"""
The NLCEN paper's robustness study (Fig. 4, 7, 8) on a dataset folder: train each network variant with
``bundles/nlcen/configs/train.json``, sweep it with targeted I-FGSM (``train.json`` + ``robustness.json``) and
untargeted PGD (``train.json`` + ``robustness.json`` + ``robustness_pgd.json``), score it on the clean test split
(``train.json`` + ``evaluate.json``), and gather the results into tables and one plot.

Every step is the bundle's own config run through ``monai.bundle.run`` with overrides, so each result can be
reproduced with the ``python -m monai.bundle run ...`` command the script logs. A variant whose training finished
is not retrained and a step whose output is complete is not rerun (delete it to redo it); a killed training run or
sweep continues where it stopped. So variants can be run by separate processes and gathered by a last call that
names them all.

Example (one part of the JSRT study of bundles/nlcen/docs/README.md, which lists every command)::

    python scripts/nlcen_robustness_study.py --dataset_dir ../shared/datasets/jsrt_scr_224 --max_images 24 \
        --epsilons "[0,1,2,4,8,16,32]" --pgd_epsilons "[0,2,8,32]" --variants "[nlcen,nlcen_wo_nl]" --epochs 30
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import run

from monai_ext.engines import bundle_robustness
from monai_ext.utils import write_json, write_text
from monai_ext.visualize import plot_robustness_panels

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "nlcen"
CONFIGS = BUNDLE / "configs"

_UNET = {
    "spatial_dims": 2,
    "in_channels": "@in_channels",
    "out_channels": "@num_classes",
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 2,
}

#: the networks of the study: name -> (legend label, overrides of the bundle configs)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "nlcen": ("NLCEN", {}),
    "nlcen_wo_nlce": ("NLCEN w/o NLCE", {"network_def#use_nlce": False}),
    "nlcen_wo_nl": ("NLCEN w/o NL", {"network_def#use_nonlocal": False}),
    "nlcen_wo_ce": ("NLCEN w/o CE", {"network_def#use_context": False}),
    "unet": ("U-Net", {"network_def": {"_target_": "monai.networks.nets.UNet", **_UNET}}),
    "unet_nlce": ("U-Net + NLCE", {"network_def": {"_target_": "monai_ext.networks.nets.NLCEUNet", **_UNET}}),
}


def _chain(*names: str) -> list[str]:
    """The bundle's config files ``train.json`` + ``names``, later ones overriding earlier ones."""
    return [str(CONFIGS / f"{name}.json") for name in ("train", *names)]


def _shell_value(value: Any) -> str:
    """
    One override value as a shell word that ``monai.bundle run`` (python-fire) reads back as the same Python value:
    non-strings are Python literals (``False``, ``None``, dicts), since fire reads JSON's ``false`` as a string.
    """
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str) and shlex.quote(text) == text:
        return text
    return f'"{text}"' if not any(c in text for c in '$"`\\!') else shlex.quote(text)


def _command(config: str | list[str], overrides: dict[str, Any]) -> str:
    """The ``python -m monai.bundle run ...`` command line that reproduces ``run(config_file=config, **overrides)``."""
    files = config if isinstance(config, str) else config[0] if len(config) == 1 else repr(list(config))
    args = " ".join(f"--{k} {_shell_value(v)}" for k, v in overrides.items())
    return f"python -m monai.bundle run --config_file {_shell_value(files)} {args}"


def _run(config: str | list[str], overrides: dict[str, Any]) -> None:
    logging.getLogger("nlcen_study").info("running: %s", _command(config, overrides))
    run(config_file=config, **overrides)


def study(
    dataset_dir: str,
    variants: list[str] | tuple[str, ...] = tuple(VARIANTS),
    work_dir: str = "bundles/nlcen/study",
    epochs: int = 60,
    max_images: int | None = None,
    epsilons: list[float] | tuple[float, ...] = (0, 0.5, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32),
    pgd_epsilons: list[float] | tuple[float, ...] = (0, 1, 2, 4, 8, 16, 32),
    pgd_steps: int = 40,
    pgd_variants: list[str] | tuple[str, ...] = ("nlcen", "unet"),
    seeds: list[int] | tuple[int, ...] = (0,),
    spatial_size: list[int] | tuple[int, ...] | None = None,
    ensemble_epsilons: list[float] | tuple[float, ...] = (),
    ensemble_steps: int = 100,
    ensemble_images: int | None = None,
) -> str:
    """
    Train, evaluate (clean test split, every image) and sweep the variants, then write
    ``<work_dir>/robustness_study.{md,json,png}`` (the plot: mean Dice against epsilon, one panel per attack).

    Args:
        dataset_dir: the dataset folder (``dataset.json`` or ``images/`` + ``masks/``).
        variants: names from ``VARIANTS``, each trained with every seed of ``seeds``; ``<name>_seed<k>`` names one
            seed of a variant.
        work_dir: where checkpoints (``<name>/models``) and sweeps (``<name>/eval``) go.
        epochs: training epochs of every variant.
        max_images: attack only the first ``max_images`` test images (``None``: all).
        epsilons: budgets of the targeted I-FGSM sweep, in 8-bit intensity levels.
        pgd_epsilons: budgets of the untargeted PGD sweep (random start), in 8-bit intensity levels.
        pgd_steps: PGD iterations.
        pgd_variants: the variants also swept with PGD (the paper's gradient-masking check needs NLCEN and the
            U-Net; the others only add time).
        seeds: training seeds (``train.json``'s ``seed``) of every variant; seed 0 goes to ``<work_dir>/<name>``,
            seed ``k`` to ``<work_dir>/<name>_seed<k>``, labelled ``"<label>, seed k"``.
        spatial_size: the networks' input size (``train.json``'s ``spatial_size``); the bundle's default if ``None``.
        ensemble_epsilons: budgets of the worst-case ensemble (``python -m monai_ext robustness --attacks
            "[ensemble]"``: APGD with three losses, SegPGD, CosPGD, the worst per image).
        ensemble_steps: steps of each attack of the ensemble.
        ensemble_images: attack only the first ``ensemble_images`` test images with the ensemble (``None``: all).

    An empty ``epsilons``, ``pgd_epsilons`` or ``ensemble_epsilons`` skips that sweep. With several seeds of a
    variant, the tables add the mean and standard deviation over its seeds at the budgets they share.

    Returns:
        the markdown table.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    runs = [pair for name in variants for pair in _variant_seed(name, seeds)]
    unknown = [v for v in (*[base for base, _ in runs], *pgd_variants) if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}.")
    work = Path(work_dir)
    summaries: dict[str, dict[str, dict]] = {"ifgsm": {}, "pgd": {}, "ensemble": {}}
    clean: dict[str, dict[str, Any]] = {}
    size = {} if spatial_size is None else {"spatial_size": [int(n) for n in spatial_size]}
    for base, seed in runs:
        label, net = VARIANTS[base]
        name, label = (f"{base}_seed{seed}", f"{label}, seed {seed}") if seed else (base, label)
        root = work / name
        common = {"dataset_dir": dataset_dir, **size, **net}
        ckpt = root / "models" / "model.pt"
        resume = _unfinished(ckpt.parent / "checkpoint.pt", epochs)  # a killed training run continues
        if not ckpt.exists() or resume:
            train = {"ckpt_dir": str(ckpt.parent), "output_dir": str(root / "runs"), "epochs": epochs, "resume": resume}
            _run(_chain(), {**common, **train, "seed": seed})
        clean_dir = root / "eval" / "clean"
        if not (clean_dir / "metrics.csv").exists():
            _run(_chain("evaluate"), {**common, "ckpt_path": str(ckpt), "eval_dir": str(clean_dir)})
        clean[name] = {"label": label, **_clean_scores(clean_dir)}
        sweep = {
            **common,
            "ckpt_path": str(ckpt),
            "eval_dir": str(root / "eval"),
            "label": label,
            "max_images": max_images,
        }
        sweeps = [("ifgsm", _chain("robustness"), epsilons)] if epsilons else []
        if base in pgd_variants and pgd_epsilons:
            sweeps.append(("pgd", _chain("robustness", "robustness_pgd"), pgd_epsilons))
        for kind, configs, eps in sweeps:
            out = root / "eval" / ("robustness.json" if kind == "ifgsm" else "robustness_pgd.json")
            if not out.exists() or not json.loads(out.read_text()).get("complete", True):  # a killed sweep resumes
                extra = {"epsilons": list(eps)}
                if kind == "pgd":
                    extra["attack#num_steps"] = pgd_steps
                _run(configs, {**sweep, **extra})
            summaries[kind][name] = json.loads(out.read_text())
        if ensemble_epsilons:
            out_dir = root / "eval" / "ensemble"
            if not (out_dir / "attack_benchmark.json").exists():  # a killed run resumes from its sweep file
                ensemble = {"dataset_dir": dataset_dir, "ckpt_path": str(ckpt), "output_dir": str(out_dir)}
                ensemble |= {"attacks": ["ensemble"], "epsilons": list(ensemble_epsilons), "num_steps": ensemble_steps}
                _run_benchmark({**ensemble, "max_images": ensemble_images, **size, **net})
            attack = json.loads((out_dir / "attack_benchmark.json").read_text())["attacks"][0]
            summaries["ensemble"][name] = {**attack, "label": label}

    titles = {
        "ifgsm": "targeted I-FGSM",
        "pgd": f"untargeted PGD-{pgd_steps}, random start",
        "ensemble": f"worst-case ensemble, {ensemble_steps} steps per attack",
    }
    panels = {titles[kind]: list(found.values()) for kind, found in summaries.items() if found}
    if panels:
        plot_robustness_panels(panels, work / "robustness_study.png", xlabel="epsilon (8-bit intensity levels)")
    write_json(work / "robustness_study.json", {"clean": clean, **summaries})
    table = _clean_table(clean)
    for kind, found in summaries.items():
        if found:
            table += "\n" + _table(found, f"{titles[kind]} (Dice / Jaccard)")
            table += _seed_table(found, f"{titles[kind]}, mean Dice over seeds")
    if summaries["ensemble"]:
        table += "\n" + _wins_table(summaries["ensemble"])
    write_text(work / "robustness_study.md", table)
    print(table)
    return table


def _variant_seed(name: str, seeds: list[int] | tuple[int, ...]) -> list[tuple[str, int]]:
    """``(variant, seed)`` runs of a ``variants`` entry: ``"nlcen"`` with every seed, ``"nlcen_seed2"`` with seed 2."""
    base, _, seed = name.partition("_seed")
    return [(base, int(seed))] if seed else [(base, int(s)) for s in seeds]


def _run_benchmark(options: dict[str, Any]) -> None:
    """``python -m monai_ext robustness --bundle bundles/nlcen`` with ``options``, logged as that command."""
    args = " ".join(f"--{k} {_shell_value(v)}" for k, v in options.items())
    logging.getLogger("nlcen_study").info("running: python -m monai_ext robustness --bundle %s %s", BUNDLE, args)
    bundle_robustness(BUNDLE, **options)


def _unfinished(checkpoint: Path, epochs: int) -> bool:
    """Whether ``checkpoint`` (a training run's ``checkpoint.pt``) exists and holds fewer than ``epochs`` epochs."""
    if not checkpoint.is_file():
        return False
    trainer = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["trainer"]
    return trainer["iteration"] < epochs * trainer["epoch_length"]


def _clean_scores(eval_dir: Path) -> dict[str, Any]:
    """Mean Dice and Jaccard of ``evaluate.json``'s ``metrics.csv`` and the number of images it scored."""
    with open(eval_dir / "metrics.csv") as f:
        scores: dict[str, Any] = {name: float(value) for name, value in csv.reader(f)}
    with open(eval_dir / "mean_dice_raw.csv") as f:
        scores["num_images"] = sum(1 for _ in f) - 1  # one header row
    return scores


def _clean_table(clean: dict[str, dict[str, Any]]) -> str:
    lines = ["**clean test split, every image (Dice / Jaccard)**", "", "| network | clean |", "|---|---|"]
    for scores in clean.values():
        cell = f"{scores['mean_dice']:.4f} / {scores['mean_jaccard']:.4f}"
        lines.append(f"| {scores['label']} ({scores['num_images']} images) | {cell} |")
    return "\n".join(lines) + "\n"


def _table(summaries: dict[str, dict], title: str) -> str:
    eps = sorted({r["epsilon"] for s in summaries.values() for r in s["results"]})
    header = "| network | " + " | ".join(f"eps {e:g}" for e in eps) + " |"
    lines = [f"**{title}**", "", header, "|---" * (len(eps) + 1) + "|"]
    for summary in summaries.values():
        by_eps = {r["epsilon"]: r for r in summary["results"]}
        cells = [f"{by_eps[e]['mean_dice']:.3f} / {by_eps[e]['mean_jaccard']:.3f}" if e in by_eps else "" for e in eps]
        lines.append(f"| {summary['label']} ({summary['num_images']} images) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _seed_table(summaries: dict[str, dict], title: str) -> str:
    """Mean and sample standard deviation of mean Dice over the seeds of each variant swept with several seeds, at
    the budgets every seed has; empty if no variant has several seeds."""
    groups: dict[str, list[dict]] = {}
    for name, summary in summaries.items():
        groups.setdefault(name.partition("_seed")[0], []).append(summary)
    groups = {base: found for base, found in groups.items() if len(found) > 1}
    if not groups:
        return ""
    eps = sorted(set.intersection(*({r["epsilon"] for r in s["results"]} for g in groups.values() for s in g)))
    header = "| network | seeds | " + " | ".join(f"eps {e:g}" for e in eps) + " |"
    lines = [f"**{title} (mean +- sd)**", "", header, "|---" * (len(eps) + 2) + "|"]
    for base, found in groups.items():
        cells = []
        for e in eps:
            dice = torch.tensor([next(r["mean_dice"] for r in s["results"] if r["epsilon"] == e) for s in found])
            cells.append(f"{dice.mean():.3f} +- {dice.std():.3f}")
        lines.append(f"| {VARIANTS[base][0]} | {len(found)} | " + " | ".join(cells) + " |")
    return "\n" + "\n".join(lines) + "\n"


def _wins_table(summaries: dict[str, dict]) -> str:
    """Per network and budget, how many images each attack of the worst-case ensemble won."""
    lines = ["**images won by each attack of the ensemble**", "", "| network | eps | wins |", "|---|---|---|"]
    for summary in summaries.values():
        for result in summary["results"]:
            if result.get("wins"):
                wins = ", ".join(f"{name} {count}" for name, count in result["wins"].items())
                lines.append(f"| {summary['label']} | {result['epsilon']:g} | {wins} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    fire.Fire(study)
