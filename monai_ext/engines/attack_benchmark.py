"""
One robustness benchmark across bundles: the trained network of any bundle in the model zoo's form (this project's,
or the zoo's own, JSON or YAML, 2D or 3D, through its own inferer and preprocessing:
:py:mod:`monai_ext.engines.bundle_loader`) on labelled data under the targeted I-FGSM of the NLCEN paper, PGD-40,
SegPGD-100, CosPGD-100 and the worst-case ensemble (and, on request, FGSM, APGD-CE and VAFA) at several budgets;
mean Dice, mean Jaccard and the mean 95th-percentile Hausdorff distance in mm; one table (Markdown and JSON), the
robustness curves, the per-image scores and a figure of one image clean and attacked per bundle. Run as
``python -m monai_ext robustness --bundle DIR``, in one process or under ``torchrun`` (each process on its part of the
images, one table).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.metrics import compute_dice
from monai.networks import one_hot
from monai.utils import convert_to_tensor

from monai_ext.attacks import (
    APGD,
    FGSM,
    PGD,
    VAFA,
    CosPGD,
    IterativeFGSM,
    SegPGD,
    attack_mode,
    dice_score,
    ensemble_attack,
    network_logits,
    two_class_logits,
    with_inferer,
)
from monai_ext.engines.bundle_loader import LoadedBundle, load_bundle
from monai_ext.engines.robustness import RobustnessSweep, hausdorff_key
from monai_ext.utils.checks import (
    check_choice,
    check_non_negative,
    check_non_negative_int,
    check_positive,
    check_positive_int,
)
from monai_ext.utils.distributed import destroy_distributed, get_rank, get_world_size, init_distributed, local_device
from monai_ext.utils.files import write_json, write_text
from monai_ext.visualize import plot_attacked_slices, plot_robustness_curves

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "FIGURE_NAME",
    "HD_PERCENTILE",
    "VAFA_Q_MAX",
    "BenchmarkAttack",
    "benchmark_attack",
    "bundle_robustness",
    "markdown_table",
]

logger = logging.getLogger(__name__)


class BenchmarkAttack(NamedTuple):
    """An attack of the benchmark (:py:data:`ATTACKS`)."""

    #: its name in the table (with ``-<steps>`` appended where it takes steps)
    label: str
    #: its default number of steps (``None``: I-FGSM's schedule of Kurakin et al.)
    num_steps: int | None
    #: whether it takes a number of steps (FGSM is one step of ``eps``)
    steps: bool = True
    #: its budget, the key of its levels: ``"epsilon"``, the L-inf ball of the table's columns, or ``"q_max"``: VAFA's
    #: own budget (the largest quantisation step of its blockwise DCT, with an SSIM bound), which no ``eps`` measures
    level: str = "epsilon"


#: the attacks of the benchmark, by the name ``--attacks`` takes
ATTACKS: dict[str, BenchmarkAttack] = {
    "fgsm": BenchmarkAttack("FGSM", None, steps=False),
    "ifgsm": BenchmarkAttack("targeted I-FGSM", None),
    "pgd": BenchmarkAttack("PGD", 40),
    "segpgd": BenchmarkAttack("SegPGD", 100),
    "cospgd": BenchmarkAttack("CosPGD", 100),
    "apgd": BenchmarkAttack("APGD-CE", 100),
    "vafa": BenchmarkAttack("VAFA", 20, level="q_max"),
    "ensemble": BenchmarkAttack("ensemble", 100),
    "sea": BenchmarkAttack("SEA", 300),
    "sea_dice": BenchmarkAttack("SEA (worst by Dice)", 300),
}
#: the attacks run when ``attacks`` is not given (FGSM, APGD-CE and VAFA are opt-in)
DEFAULT_ATTACKS = ("ifgsm", "pgd", "segpgd", "cospgd", "ensemble")
#: VAFA's budget unless ``attack_settings`` gives its ``q_max``: the paper's 20 levels
VAFA_Q_MAX = 20.0
#: the percentile of the Hausdorff distance in the table
HD_PERCENTILE = 95
#: the file name of the figure of one image clean and attacked
FIGURE_NAME = "attacked_slices.png"

_PGD_FAMILY = {"pgd": PGD, "segpgd": SegPGD, "cospgd": CosPGD}


def benchmark_attack(level: float, attack: str, num_steps: int | None = None, seed: int = 0, **settings: Any) -> Any:
    """
    The attack ``attack`` of :py:data:`ATTACKS` at budget ``level``: ``eps`` in levels of an 8-bit scale (images in
    ``[0, 1]``), or VAFA's ``q_max``.

    - ``"fgsm"``: :py:class:`~monai_ext.attacks.FGSM`, one untargeted step of ``eps`` (``num_steps`` is ignored);
    - ``"ifgsm"``: :py:class:`~monai_ext.attacks.IterativeFGSM` toward the inverse of the ground truth, step one level,
      Kurakin's schedule (or ``num_steps``); its budgets share their trajectory in a sweep;
    - ``"pgd"``, ``"segpgd"``, ``"cospgd"``: untargeted, a random start (seeded) and the step
      ``alpha = 2.5 eps / num_steps`` (Madry et al.'s rule);
    - ``"apgd"``: :py:class:`~monai_ext.attacks.APGD` with the cross-entropy, untargeted;
    - ``"vafa"``: :py:class:`~monai_ext.attacks.VAFA` with ``q_max = level`` and its own defaults otherwise (blocks of
      8, the Dice loss, ``SSIM >= 0.95``; 3D unless ``spatial_dims=2``); it is no L-inf attack, see
      :py:func:`bundle_robustness`;
    - ``"ensemble"``: :py:func:`~monai_ext.attacks.ensemble_attack`, its ``"broad"`` preset: the worst case per image
      of APGD (CE, JSD, masked CE), SegPGD and CosPGD;
    - ``"sea"``: the ``"sea"`` preset, SEA as its paper reports it (APGD with its three losses, 300 steps each, radius
      reduction), the worst per image by pixel accuracy (SEA's rule); ``"sea_dice"``: the same attacks, the worst by
      Dice.

    Args:
        level: the budget, ``>= 0`` (VAFA: ``>= 1``).
        attack: a name of :py:data:`ATTACKS`.
        num_steps: the steps, instead of the attack's default (:py:data:`ATTACKS`).
        seed: the seed of the random start of PGD, SegPGD and CosPGD.
        settings: more keyword arguments of the attack's class (``loss="jsd"`` for APGD, ``ssim_threshold=0.99``
            for VAFA), which take precedence over the benchmark's.

    Raises:
        ValueError: an unknown attack, or a setting its class does not take.
    """
    attack = check_choice("attack", attack, tuple(ATTACKS))
    steps = ATTACKS[attack].num_steps if num_steps is None else check_positive_int("num_steps", num_steps)
    if attack == "fgsm":
        build, defaults = FGSM, {"eps": level}
    elif attack == "ifgsm":
        build, defaults = IterativeFGSM, {"eps": level, "num_steps": steps, "target": "inverse"}
    elif attack == "apgd":
        build, defaults = APGD, {"eps": level, "num_steps": steps, "loss": "ce"}
    elif attack == "vafa":
        build, defaults = VAFA, {"q_max": level, "num_steps": steps}
    elif attack == "ensemble":
        build, defaults = ensemble_attack, {"eps": level, "num_steps": steps}
    elif attack in ("sea", "sea_dice"):
        build, defaults = ensemble_attack, {"eps": level, "num_steps": steps, "preset": "sea"}
        if attack == "sea_dice":
            defaults["score"] = dice_score
    else:
        build = _PGD_FAMILY[attack]
        defaults = {"eps": level, "alpha": 2.5 * level / steps, "num_steps": steps, "random_start": True, "seed": seed}
    arguments = {**defaults, **settings}
    try:
        inspect.signature(build).bind(**arguments)
    except TypeError as error:  # a setting the attack does not take
        raise ValueError(f"the settings of attack {attack!r}: {error}.") from None
    return build(**arguments)


def bundle_robustness(
    bundle: str | Path,
    ckpt_path: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    split: str = "test",
    epsilons: Sequence[float] = (0, 1, 2, 4, 8),
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    num_steps: int | None = None,
    max_images: int | None = None,
    overwrite: bool = False,
    config_file: str | Sequence[str] | None = None,
    attack_settings: Mapping[str, Mapping[str, Any]] | None = None,
    figure_image: int | None = 0,
    figure_attack: str | None = None,
    figure_epsilon: float | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """
    Evaluate a bundle's trained network on labelled data under each attack of ``attacks`` at each budget, through the
    bundle's own network, inferer (a 3D bundle's ``SlidingWindowInferer``: the attacks' gradients go through it,
    window chunk by window chunk) and preprocessing (a bundle in the model zoo's form, JSON or YAML, or one of this
    project's: :py:func:`~monai_ext.engines.bundle_loader.load_bundle`).

    Each attack is a :py:class:`~monai_ext.engines.RobustnessSweep` that writes ``output_dir/sweeps/robustness_<attack>.json``
    after every budget, with every image's scores, so a killed run resumes where it stopped (the budgets of I-FGSM
    share their trajectory); progress is logged per batch. At the end, ``output_dir/`` holds:

    - ``attack_benchmark.md`` and ``.json``: the table, per attack and budget the mean Dice and mean Jaccard
      (background excluded), the mean HD95 in the units of the images' affine (mm for NIfTI: each image's ``pixdim``
      after the bundle's preprocessing) with the number of images whose prediction is empty (an infinite HD95,
      counted and left out of the mean, never dropped silently), and each attack's run time (``seconds``: the sum of
      its budgets' run times, the clean evaluation included; each budget's in the JSON) and the device;
    - ``per_image.csv``: each image's Dice, Jaccard and HD95 per attack and budget (HD95 ``inf`` for an empty
      prediction, empty where the label has no foreground class);
    - ``attack_benchmark.png``: the curves of the L-inf attacks;
    - ``attacked_slices.png`` (:py:data:`FIGURE_NAME`): image ``figure_image`` clean and under ``figure_attack`` at
      ``figure_epsilon`` (:py:func:`~monai_ext.visualize.plot_attacked_slices`: three slices of a volume, rows clean,
      attacked and the perturbation in levels of 255, the predictions' contours against the ground truth).

    VAFA is not an attack in an L-inf ball: its budget is its own ``q_max`` (the largest quantisation step of its
    blockwise DCT, in levels) with an SSIM bound, which no ``eps`` of the table's columns measures. So its row is run
    once at its own budget (``attack_settings={"vafa": {"q_max": 20}}``, :py:data:`VAFA_Q_MAX` by default) and shown
    in a column of its own, ``own budget``, beside its clean score at ``eps 0`` (a sweep over the levels ``0`` and
    ``q_max``, keyed ``"q_max"`` in its results); its cells under ``eps > 0`` are empty, and its per-image rows have
    an empty ``epsilon``; its label names its ``q_max``. Its settings are under the table. It is left out of the curves.

    Under ``torchrun`` (``torchrun --nproc_per_node N -m monai_ext robustness ...``) every process joins torchrun's
    process group (``nccl`` on CUDA, each rank on its own GPU; ``gloo`` on the CPU) and attacks its part of the images
    (rank ``r`` of ``N``: the images ``r, r + N, ...``, each image on one rank, none dropped); each budget's per-image
    scores are gathered from every rank, so that every sweep file, the table, ``per_image.csv`` and the figure are those
    of one process on all the images, wherever an image's attack does not depend on the images evaluated before it
    (the seeded random starts of PGD, SegPGD, CosPGD and APGD are drawn per batch in the order of the rank's images:
    other draws than in one process). Rank 0 alone writes; every rank resumes from rank 0's sweep files, which a run
    with another number of processes, or one process, resumes as well.

    Args:
        bundle: the bundle folder, with ``configs/`` (see :py:mod:`~monai_ext.engines.bundle_loader` for the configs
            and ids it reads).
        ckpt_path: the trained weights; ``<bundle_root>/models/model.pt`` by default (``bundle_root``: ``bundle``
            unless overridden).
        dataset_dir: the dataset: a folder with a decathlon ``dataset.json`` (or, for this project's bundles, the
            ``images/`` and ``masks/`` layout); the bundle's default data if ``None``.
        output_dir: where the results go; ``<bundle_root>/eval/attack_benchmark`` by default.
        split: the split of ``dataset_dir`` to evaluate, ``"test"`` by default (``"validation"`` where it has no
            labelled test split).
        epsilons: the L-inf budgets in intensity levels of an 8-bit scale (images in ``[0, 1]``), or one budget; 0 is
            the clean score.
        attacks: names from :py:data:`ATTACKS`, or one name; :py:data:`DEFAULT_ATTACKS` by default.
        num_steps: the steps of every attack instead of its own (for a quick run; FGSM keeps its one step);
            ``None``: I-FGSM Kurakin's schedule, PGD 40, VAFA 20, SegPGD, CosPGD, APGD and the ensemble's attacks 100.
        max_images: evaluate only the first images of the split, ``>= 1``.
        overwrite: replace sweep files of other settings instead of refusing (``True`` or ``False``).
        config_file: the config file or chain that describes the evaluation, instead of the one found in
            ``configs/``.
        attack_settings: per attack name, more keyword arguments of its class (:py:func:`benchmark_attack`), as
            ``--attack_settings "{vafa: {q_max: 10, ssim_threshold: 0.99}, apgd: {loss: jsd}}"``; VAFA's ``q_max``
            is its budget. They are part of each sweep's settings.
        figure_image: the index of the image of the figure in the evaluated split (0: the first); ``None``: no figure.
        figure_attack: the attack of the figure, a name of :py:data:`ATTACKS`; ``None``: the strongest of ``attacks``
            (the lowest mean Dice) at the figure's budget among the L-inf ones, VAFA where it is the only one. The
            attack is run again on that image for the figure (a random start draws anew: the figure's Dice, in its
            title and in the table's JSON, is that of this run).
        figure_epsilon: the L-inf budget of the figure; ``None``: the largest of ``epsilons``. VAFA's figure is at
            its ``q_max``.
        overrides: config ids to values, as on ``monai.bundle run``'s command line (``--validate#inferer#sw_batch_size
            2``, ``--bundle_root DIR``, this project's ``--spatial_size "[128,128]"``); the network's must match the
            weights.

    Returns:
        the table: ``{"bundle", "split", "data" (where the images come from, in words), "weights", "configs",
        "classes", "num_images", "epsilons", "device", "attacks": [{"attack", "label", "settings", "results",
        "seconds", ...}], "figure"}`` (on every rank of ``torchrun``; ``"figure"`` on rank 0).

    Raises:
        FileNotFoundError: no bundle folder, config or weights.
        ValueError: a wrong option: an unknown attack, a negative budget, ``num_steps`` or ``max_images`` below 1, a
            setting an attack does not take, an override of an id the bundle's config does not define, weights that do
            not fit the network, a split without labels, more processes than images, sweep files of other settings.
    """
    attacks = [attacks] if isinstance(attacks, str) else attacks  # one name, or several
    epsilons = [epsilons] if isinstance(epsilons, (str, int, float)) else epsilons  # one budget, or several
    names = [check_choice("attacks", name, tuple(ATTACKS)) for name in attacks]
    epsilons = [check_non_negative("epsilons", e) for e in epsilons]
    if not epsilons:
        raise ValueError("epsilons must list at least one budget.")
    if num_steps is not None:
        num_steps = check_positive_int("num_steps", num_steps)
    if max_images is not None:
        max_images = check_positive_int("max_images", max_images)
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}.")  # noqa: TRY004
    settings_of = _attack_settings(attack_settings)
    if figure_attack is not None:
        figure_attack = check_choice("figure_attack", figure_attack, tuple(ATTACKS))
    if figure_image is not None:
        figure_image = check_non_negative_int("figure_image", figure_image)
    if figure_epsilon is not None:
        figure_epsilon = check_non_negative("figure_epsilon", figure_epsilon)
    if dataset_dir is not None:
        overrides["dataset_dir"] = str(dataset_dir)
    with _torchrun_group():
        if get_world_size() > 1:  # each rank on its own GPU
            overrides.setdefault("device", local_device())
        loaded = load_bundle(bundle, ckpt_path, split, max_images, config_file, **overrides)
        if figure_image is not None and figure_image >= len(loaded.image_names):
            raise ValueError(
                f"figure_image must be below the number of images, {len(loaded.image_names)}: got {figure_image}."
            )
        # every attack built before the first sweep runs: a wrong setting fails now, not hours later
        plans = {name: _attack_plan(name, settings_of, num_steps, epsilons, loaded)
                 for name in dict.fromkeys([*names, *([figure_attack] if figure_attack else [])])}  # fmt: skip
        output_dir = Path(output_dir) if output_dir is not None else loaded.root / "eval" / "attack_benchmark"
        table = {"bundle": loaded.name, "split": loaded.split, "data": loaded.data, "weights": str(loaded.weights),
                 "configs": loaded.config_files, "classes": loaded.class_names, "num_images": len(loaded.image_names),
                 "epsilons": epsilons, "device": str(loaded.device), "attacks": []}  # fmt: skip
        hd = hausdorff_key(HD_PERCENTILE)
        rows = []
        for index, name in enumerate(names):
            factory, levels, label = plans[name]
            logger.info("attack %d/%d: %s on %d images of %s", index + 1, len(names), label, len(loaded.image_names),
                        bundle)  # fmt: skip
            sweep = RobustnessSweep(loaded.network, loaded.dataloader, factory, levels, loaded.num_classes,
                                    device=loaded.device, inferer=loaded.inferer, output_dir=output_dir / "sweeps",
                                    name=f"robustness_{name}", label=label, overwrite=overwrite,
                                    level_name=ATTACKS[name].level, hausdorff_percentile=HD_PERCENTILE,
                                    per_image=True)  # fmt: skip
            summary = sweep.run()
            for result in summary["results"]:
                scores = result.pop("per_image")
                level = result.get("epsilon", 0.0 if result.get(ATTACKS[name].level) == 0 else None)
                per_image = zip(loaded.image_names, scores["mean_dice"], scores["mean_jaccard"], scores[hd],
                                scores[f"{hd}_empty"], strict=True)  # fmt: skip
                rows += [[label, "" if level is None else f"{level:g}", image, _number(d), _number(j),
                          "inf" if empty else _number(h)] for image, d, j, h, empty in per_image]  # fmt: skip
            table["attacks"].append({"attack": name, "label": label, "settings": summary["attacks"], **summary})
        if get_rank() > 0:  # rank 0 writes the table, its files and the figure
            return table
        if figure_image is not None:
            table["figure"] = _figure(loaded, table, plans, figure_image, figure_attack, figure_epsilon,
                                      output_dir / FIGURE_NAME)  # fmt: skip
        write_json(output_dir / "attack_benchmark.json", table)
        write_text(output_dir / "attack_benchmark.md", markdown_table(table))
        write_text(output_dir / "per_image.csv", _csv(["attack", "epsilon", "image", "dice", "jaccard", hd], rows))
        curves = [a for a in table["attacks"] if a.get("level_name", "epsilon") == "epsilon"]
        if curves:
            plot_robustness_curves(curves, output_dir / "attack_benchmark.png",
                                   title=f"{loaded.name}: {loaded.split} ({table['num_images']} images)",
                                   xlabel="epsilon (levels of 255)")  # fmt: skip
        logger.info("wrote %s (.md, .json, .png), per_image.csv and %s", output_dir / "attack_benchmark", FIGURE_NAME)
    return table


@contextlib.contextmanager
def _torchrun_group() -> Iterator[None]:
    """
    Under ``torchrun`` (``WORLD_SIZE`` in the environment) and without a process group, join torchrun's for the block
    (:py:func:`~monai_ext.utils.init_distributed` on this rank's device: ``nccl`` on CUDA, ``gloo`` on the CPU) and
    leave it at the end; otherwise nothing. A block that raises leaves the group as it is: the process ends, and
    torchrun stops the other ranks.
    """
    joined = "WORLD_SIZE" in os.environ and init_distributed(local_device())
    yield
    if joined:
        destroy_distributed()


def _attack_settings(attack_settings: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``attack_settings`` checked: names of :py:data:`ATTACKS` to mappings of keyword arguments, without the L-inf
    attacks' ``eps`` (their budgets are ``epsilons``)."""
    if attack_settings is None:
        return {}
    if not isinstance(attack_settings, Mapping):
        raise ValueError(f"attack_settings must map attack names to settings, got {attack_settings!r}.")  # noqa: TRY004
    checked = {}
    for name, settings in attack_settings.items():
        name = check_choice("attack_settings", name, tuple(ATTACKS))
        if not isinstance(settings, Mapping):
            raise ValueError(f"attack_settings[{name!r}] must map names to values, got {settings!r}.")  # noqa: TRY004
        if ATTACKS[name].level == "epsilon" and "eps" in settings:
            raise ValueError(f"attack_settings[{name!r}] sets eps: the budgets of the L-inf attacks are epsilons.")
        checked[name] = {str(k): v for k, v in settings.items()}
    return checked


def _attack_plan(
    name: str,
    settings_of: Mapping[str, Mapping[str, Any]],
    num_steps: int | None,
    epsilons: Sequence[float],
    loaded: LoadedBundle,
) -> tuple[Callable[[float], Any], list[float], str]:
    """
    The attack factory of ``name``, the levels of its sweep and its label (see :py:func:`bundle_robustness`); the
    attack is built at each level above 0 once, so that a setting it does not take, or a wrong value, fails here.
    """
    spec, settings = ATTACKS[name], dict(settings_of.get(name, {}))
    steps = spec.num_steps if num_steps is None else num_steps
    label = spec.label if not spec.steps or steps is None else f"{spec.label}-{steps}"
    levels = list(epsilons)
    if spec.level == "q_max":
        q_max = check_positive("q_max", settings.pop("q_max", VAFA_Q_MAX))
        if "spatial_dims" not in settings:  # VAFA's blocks: 3D for volumes, 2D for images
            settings["spatial_dims"] = loaded.dataloader.dataset[0]["image"].ndim - 1
        levels = [0.0, q_max] if 0 in levels else [q_max]
        label = f"{label} (q_max {q_max:g})"
    # FGSM takes no steps: its sweep's settings record num_steps None, so that a resume with another --num_steps keeps it
    factory = functools.partial(benchmark_attack, attack=name, num_steps=num_steps if spec.steps else None, **settings)
    for level in levels:
        if level > 0:
            factory(level)
    return factory, levels, label


def _figure(
    loaded: LoadedBundle,
    table: dict[str, Any],
    plans: Mapping[str, tuple[Callable[[float], Any], list[float], str]],
    index: int,
    attack: str | None,
    epsilon: float | None,
    path: Path,
) -> dict[str, Any] | None:
    """Draw image ``index`` clean and attacked (see :py:func:`bundle_robustness`; ``plans``: each attack's
    :py:func:`_attack_plan`, ``attack``'s among them); its description, ``None`` when there is nothing to attack (the
    budget is 0, or no attack)."""
    epsilon = max(table["epsilons"], default=0.0) if epsilon is None else epsilon
    if attack is None:
        attack = _strongest(table["attacks"], epsilon)
    if attack is None:
        logger.info("no figure: no attack was run")
        return None
    factory, levels, label = plans[attack]
    level = epsilon if ATTACKS[attack].level == "epsilon" else levels[-1]
    if level == 0:
        logger.info("no figure: the figure's budget is 0")
        return None
    item = loaded.dataloader.dataset[index]
    images, labels = (convert_to_tensor(item[k][None], track_meta=False).to(loaded.device) for k in ("image", "label"))
    network, perturbation = with_inferer(loaded.network, loaded.inferer), factory(level)
    logger.info("figure: %s at %s %g on %s", label, ATTACKS[attack].level, level, loaded.image_names[index])
    start = time.perf_counter()
    adversarial = perturbation(network, images, labels)
    seconds = round(time.perf_counter() - start, 2)
    with torch.no_grad(), attack_mode(network):
        preds = [two_class_logits(network_logits(network, x)).argmax(1, keepdim=True) for x in (images, adversarial)]
    classes = max(loaded.num_classes, 2)
    truth = one_hot(labels.long(), classes)
    dice = [float(compute_dice(one_hot(p, classes), truth, include_background=False).nanmean()) for p in preds]
    spacing = getattr(item["label"], "pixdim", None)
    spacing = None if spacing is None else [float(s) for s in spacing]
    at = f"{ATTACKS[attack].level} {level:g}"
    title = (f"{loaded.name}: {loaded.image_names[index]}, {label} at {at}: Dice {dice[0]:.3f} clean, "
             f"{dice[1]:.3f} attacked")  # fmt: skip
    arrays = [a[0, 0].detach().cpu().float().numpy() for a in (images, adversarial, labels, *preds)]
    low, high = getattr(perturbation, "data_range", (0.0, 1.0))
    plot_attacked_slices(*arrays, path, spacing=spacing, scale=255.0 / (high - low), title=title)
    logger.info("wrote %s (the attack took %.1f s)", path, seconds)
    return {"file": path.name, "image": loaded.image_names[index], "index": index, "attack": attack, "label": label,
            ATTACKS[attack].level: level, "dice_clean": dice[0], "dice_attacked": dice[1], "seconds": seconds,
            "spacing": spacing}  # fmt: skip


def _strongest(attacks: Sequence[Mapping[str, Any]], epsilon: float) -> str | None:
    """The L-inf attack of lowest mean Dice at ``epsilon``; where none was run there, the first L-inf attack, else the
    first other one (VAFA); ``None`` without attacks."""
    linf = [a for a in attacks if a.get("level_name", "epsilon") == "epsilon"]
    scored = [
        (r["mean_dice"], a["attack"])
        for a in linf
        for r in a["results"]
        if r["epsilon"] == epsilon and r.get("mean_dice") is not None
    ]
    if scored:
        return min(scored)[1]
    first = [*linf, *attacks]
    return first[0]["attack"] if first else None


def _number(value: float | None) -> str:
    """A score for the CSV: six decimals, empty where undefined."""
    return "" if value is None or math.isnan(value) else f"{value:.6f}"


def _csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``header`` and ``rows`` as CSV text."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def markdown_table(table: dict[str, Any]) -> str:
    """
    The benchmark's table in Markdown: one row per attack, the mean Dice (mean Jaccard) per budget and the attack's
    run time; then, where measured, the mean HD95 per budget with the number of empty predictions; an attack with a
    budget of its own (VAFA) has its result in the column ``own budget``.
    """
    epsilons = table["epsilons"]
    own = any(a.get("level_name", "epsilon") != "epsilon" for a in table["attacks"])
    header = "| attack | " + " | ".join(f"eps {e:g}" for e in epsilons) + (" | own budget" if own else "")
    rule = "|---|" + "---|" * (len(epsilons) + own)
    device = f" on {table['device']}" if table.get("device") else ""
    lines = [
        f"# {table['bundle']}: robustness on {table['data']} ({table['num_images']} images)",
        "",
        f"Mean Dice (mean Jaccard), background excluded; weights {table['weights']}; budgets in levels of 255 (L-inf).",
        f"Configs: {', '.join(table['configs'])}; classes: {', '.join(table['classes'] or ['not named'])}.",
        f"Seconds: the run time of each attack's sweep, its clean evaluation included (per budget in the JSON){device}.",
        "",
        header + " | seconds |",
        rule + "---|",
    ]
    for attack in table["attacks"]:
        cells = [_cell(r, _dice_cell) for r in _by_column(attack, epsilons, own)]
        seconds = attack.get("seconds")
        lines.append(
            f"| {attack['label']} | " + " | ".join(cells) + f" | {'-' if seconds is None else f'{seconds:.1f}'} |"
        )
    results = [r for a in table["attacks"] for r in a["results"]]
    hd = hausdorff_key(HD_PERCENTILE)
    if any(f"mean_{hd}" in r for r in results):
        lines += [
            "",
            (
                f"Mean HD{HD_PERCENTILE:g} in the units of the images' affine (mm for NIfTI), over the images whose "
                f'prediction is not empty; "(k empty)": k images whose prediction misses a class of their label (an '
                f"infinite HD{HD_PERCENTILE:g}, counted and left out of the mean); images without a foreground "
                "class are left out, as for Dice."
            ),
            "",
            header + " |",
            rule,
        ]
        for attack in table["attacks"]:
            cells = [_cell(r, functools.partial(_hd_cell, key=hd)) for r in _by_column(attack, epsilons, own)]
            lines.append(f"| {attack['label']} | " + " | ".join(cells) + " |")
    if own:
        note = ("own budget: VAFA is no L-inf attack; its row is run once at its own budget (q_max, the largest "
                "quantisation step of its blockwise DCT in levels of 255, and its SSIM bound: settings below), its "
                "clean score under eps 0.")  # fmt: skip
        lines += ["", note]
    figure = table.get("figure")
    if figure:
        level = next(f"{k} {figure[k]:g}" for k in ("epsilon", "q_max") if k in figure)
        note = (f"Figure {figure['file']}: {figure['image']} under {figure['label']} at {level} (Dice "
                f"{figure['dice_clean']:.4f} clean, {figure['dice_attacked']:.4f} attacked; the attack took "
                f"{figure['seconds']:.1f} s).")  # fmt: skip
        lines += ["", note]
    settings = {a["label"]: a["settings"][-1] if a["settings"] else {} for a in table["attacks"]}
    lines += ["", "Settings at the largest budget:", "", "```json", json.dumps(settings, indent=1), "```", ""]
    return "\n".join(lines)


def _by_column(attack: Mapping[str, Any], epsilons: Sequence[float], own: bool) -> list[dict[str, Any] | None]:
    """An attack's results in the table's columns: one per epsilon, then its own budget's where the table has one."""
    key = attack.get("level_name", "epsilon")
    by_level = {r[key]: r for r in attack["results"]}
    if key == "epsilon":
        return [by_level.get(e) for e in epsilons] + ([None] if own else [])
    attacked = [r for level, r in by_level.items() if level > 0]
    return [by_level.get(0.0) if e == 0 else None for e in epsilons] + [attacked[-1] if attacked else None]


def _cell(result: dict[str, Any] | None, show: Callable[[dict[str, Any]], str]) -> str:
    return "-" if result is None else show(result)


def _dice_cell(result: dict[str, Any]) -> str:
    if result.get("mean_dice") is None:
        return "-"
    jaccard = result.get("mean_jaccard")
    return f"{result['mean_dice']:.4f}" + ("" if jaccard is None else f" ({jaccard:.4f})")


def _hd_cell(result: dict[str, Any], key: str) -> str:
    mean, empty = result.get(f"mean_{key}"), result.get(f"{key}_empty") or 0
    text = "-" if mean is None or (isinstance(mean, float) and math.isnan(mean)) else f"{mean:.2f}"
    return text + (f" ({empty} empty)" if empty else "")
